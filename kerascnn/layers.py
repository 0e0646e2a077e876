"""Building blocks shared by every network of the zoo.

Only ``keras`` layers and ``keras.ops`` are used, so each network runs on the TensorFlow, JAX and
PyTorch backends. Every helper takes a ``name`` and derives stable sub-layer names from it
(``conv1`` -> ``conv1_pad``, ``conv1``, ``conv1_bn``, ``conv1_relu``), so ``model.get_layer()``,
weight files and error messages speak the paper's language.

Each spatial helper validates its output size with :func:`kerascnn.arithmetic.output_size` while
the graph is built, so an input too small for a network fails with a :class:`SizeError` naming the
layer, never with a backend traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, ops

from .arithmetic import output_size

__all__ = ["PREPROCESSING", "image_input", "conv", "max_pool", "avg_pool", "classifier",
           "LocalResponseNormalization", "GroupedConv2D", "CeilModePadding2D", "check_spatial"]

#: Named input pipelines. ``scale``/``offset`` map uint8 pixels to floats (``x*scale + offset``);
#: ``mean``/``std`` (per channel, in that float range) then standardise. Training stores the dict it
#: used in the run's config, so any dict of these keys works too.
PREPROCESSING = {
    "unit": {"scale": 1 / 255},                               # [0, 1]
    "symmetric": {"scale": 1 / 127.5, "offset": -1.0},        # [-1, 1]
    "imagenet": {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
}


def _preprocessing_spec(preprocessing):
    if isinstance(preprocessing, str):
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"unknown preprocessing {preprocessing!r}; use one of "
                             f"{sorted(PREPROCESSING)} or a dict with keys scale, offset, mean, std")
        return PREPROCESSING[preprocessing]
    if not isinstance(preprocessing, dict) or set(preprocessing) - {"scale", "offset", "mean", "std"}:
        raise ValueError(f"preprocessing must be a name from {sorted(PREPROCESSING)} or a dict with "
                         f"keys scale, offset, mean, std; got {preprocessing!r}")
    return preprocessing


def image_input(input_shape: Sequence[int], preprocessing=None, name: str = "image"):
    """The network's input and the tensor its first layer consumes.

    Without ``preprocessing`` the model takes float images as they are. With it, the model takes raw
    ``uint8`` pixels and scales and normalises them in its first layers (``preprocess_rescale``,
    ``preprocess_normalize``), so a trained or exported model needs no outside preprocessing.
    """
    if preprocessing is None:
        inputs = keras.Input(shape=tuple(input_shape), name=name)
        return inputs, inputs
    spec = _preprocessing_spec(preprocessing)
    inputs = keras.Input(shape=tuple(input_shape), dtype="uint8", name=name)
    x = layers.Rescaling(spec.get("scale", 1.0), spec.get("offset", 0.0),
                         name="preprocess_rescale")(inputs)
    if "mean" in spec or "std" in spec:
        channels = input_shape[-1]
        mean = _per_channel(spec.get("mean", 0.0), channels, "mean")
        std = _per_channel(spec.get("std", 1.0), channels, "std")
        x = layers.Normalization(mean=mean, variance=[s * s for s in std],
                                 name="preprocess_normalize")(x)
    return inputs, x


def _per_channel(value, channels, what):
    values = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"preprocessing {what} has {len(values)} values but the input has "
                         f"{channels} channels")
    return values


def check_spatial(x, f, s, p, *, layer: str, rounding: str = "floor") -> None:
    """Validate ``(W1 - F + 2P)/S + 1`` for both spatial axes of ``x`` (unknown sizes pass)."""
    fh, fw = _pair(f)
    sh, sw = _pair(s)
    ph, pw = _pair(p)
    h, w = x.shape[1], x.shape[2]
    if h is not None:
        output_size(int(h), fh, sh, ph, layer=layer, rounding=rounding)
    if w is not None:
        output_size(int(w), fw, sw, pw, layer=layer, rounding=rounding)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _pad(x, padding, f, s, name, rounding):
    """Resolve ``padding`` (an int P, a pair, or "same"/"valid") into a Keras padding mode."""
    if padding == "same":
        return x, "same"
    p = 0 if padding == "valid" else padding
    check_spatial(x, f, s, p, layer=name, rounding=rounding)
    if p != 0 and p != (0, 0):
        x = layers.ZeroPadding2D(p, name=f"{name}_pad")(x)
    return x, "valid"


def conv(x, filters: int, kernel, *, name: str, stride=1, padding=0, groups: int = 1,
         use_bias: bool = True, batch_norm: bool = False, activation: str | None = "relu",
         kernel_initializer="glorot_uniform", bias_initializer="zeros", bn_epsilon: float = 1e-5,
         bn_momentum: float = 0.9, rounding: str = "floor"):
    """Convolution with explicit padding ``P``, then optional batch norm and activation.

    Layer names: ``{name}_pad`` (if P > 0), ``{name}``, ``{name}_bn``, ``{name}_{activation}``.
    """
    x, mode = _pad(x, padding, kernel, stride, name, rounding)
    conv_layer = GroupedConv2D if groups > 1 else layers.Conv2D
    x = conv_layer(filters, kernel, strides=stride, padding=mode, groups=groups,
                      use_bias=use_bias, kernel_initializer=kernel_initializer,
                      bias_initializer=bias_initializer, name=name)(x)
    if batch_norm:
        x = layers.BatchNormalization(epsilon=bn_epsilon, momentum=bn_momentum, name=f"{name}_bn")(x)
    if activation:
        x = layers.Activation(activation, name=f"{name}_{_act_name(activation)}")(x)
    return x


def _act_name(activation):
    return activation if isinstance(activation, str) else getattr(activation, "__name__", "act")


def max_pool(x, pool, stride=None, *, name: str, padding=0, rounding: str = "floor"):
    """Max pooling ``F x F / S`` with explicit padding.

    ``rounding="ceil"`` is Caffe's ceil mode (AlexNet, ZFNet, GoogLeNet): the output is
    ``ceil((W - F + 2P)/S) + 1``, the last window overhanging the bottom/right edge where the
    floor would drop it. That edge is padded with -inf (:class:`CeilModePadding2D`, named
    ``{name}_pad``), so the overhanging window sees only the input, exactly as in Caffe.
    """
    stride = pool if stride is None else stride
    if padding not in (0, "valid", "same"):
        raise ValueError("max_pool takes padding 0 or 'same'")
    if rounding == "ceil" and padding != "same":
        check_spatial(x, pool, stride, 0, layer=name, rounding="ceil")
        extra = [0 if d is None else
                 (output_size(int(d), pool, stride, 0, rounding="ceil") - 1) * stride + pool - d
                 for d in x.shape[1:3]]
        if any(extra):
            x = CeilModePadding2D(((0, extra[0]), (0, extra[1])), name=f"{name}_pad")(x)
        return layers.MaxPooling2D(pool, strides=stride, padding="valid", name=name)(x)
    x, mode = _pad(x, padding, pool, stride, name, rounding)
    return layers.MaxPooling2D(pool, strides=stride, padding=mode, name=name)(x)


@keras.saving.register_keras_serializable(package="kerascnn")
class CeilModePadding2D(layers.ZeroPadding2D):
    """Padding with -inf instead of zeros: before a max pool, a padded row or column never wins
    a maximum, so ceil mode's overhanging last window sees only the input (Caffe's rule). A
    ``ZeroPadding2D`` in every other respect, so ``inspect`` folds it into the pool's P."""

    def call(self, inputs):
        (top, bottom), (left, right) = self.padding
        return ops.pad(inputs, [[0, 0], [top, bottom], [left, right], [0, 0]],
                       constant_values=float("-inf"))


def avg_pool(x, pool, stride=None, *, name: str, padding=0, rounding: str = "floor"):
    """Average pooling ``F x F / S``."""
    stride = pool if stride is None else stride
    if padding not in (0, "valid", "same"):
        raise ValueError("avg_pool takes padding 0 or 'same'")
    x, mode = _pad(x, padding, pool, stride, name, rounding)
    return layers.AveragePooling2D(pool, strides=stride, padding=mode, name=name)(x)


def classifier(x, num_classes: int, *, name: str, activation: str | None = "softmax",
               kernel_initializer="glorot_uniform", output_name: str = "predictions"):
    """The last fully connected layer, then its activation in float32.

    The activation is a separate float32 layer named ``predictions`` so that mixed-precision
    training keeps a stable softmax, and exported models always end in the same layer.
    """
    x = layers.Dense(num_classes, kernel_initializer=kernel_initializer, name=name)(x)
    return layers.Activation(activation or "linear", dtype="float32", name=output_name)(x)


@keras.saving.register_keras_serializable(package="kerascnn")
class LocalResponseNormalization(layers.Layer):
    """Local response normalisation across channels (Krizhevsky et al. 2012, section 3.3).

    ``b = a / (k + alpha/n * sum_{j in window of n channels} a_j^2) ** beta`` with the AlexNet paper's
    ``n=5, k=2, alpha=1e-4, beta=0.75``. ``alpha`` is divided by ``n`` as in Caffe, whose models
    (bvlc_alexnet, bvlc_googlenet) are the reference implementations. No trainable parameters.
    """

    def __init__(self, depth_radius: int = 2, bias: float = 2.0, alpha: float = 1e-4,
                 beta: float = 0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta

    def call(self, x):
        size, r = 2 * self.depth_radius + 1, self.depth_radius
        # the window sum over channels as one 1D average pool over the zero-padded channel axis
        # (x size): a single op, 1.2x faster GoogLeNet training than adding 5 shifted slices
        squared = ops.reshape(ops.square(x), (-1, x.shape[-1], 1))
        padded = ops.pad(squared, [[0, 0], [r, r], [0, 0]])
        window = ops.average_pool(padded, size, strides=1, padding="valid") * size
        window = ops.reshape(window, ops.shape(x))
        return x / ops.power(self.bias + (self.alpha / size) * window, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "depth_radius": self.depth_radius, "bias": self.bias,
                "alpha": self.alpha, "beta": self.beta}


@keras.saving.register_keras_serializable(package="kerascnn")
class GroupedConv2D(layers.Conv2D):
    """``Conv2D(groups=g)`` computed as ``g`` convolutions on the channel groups, concatenated.

    The weights are exactly those of Keras' grouped ``Conv2D`` (kernel ``F x F x D1/g x K``). Keras'
    TensorFlow backend compiles a grouped convolution with XLA (``jit_compile``); tf2onnx cannot
    convert that and TF Serving runs it only with ``--xla_cpu_compilation_enabled``. Split
    convolutions are plain ops everywhere, as the paper's two GPUs were.
    """

    def convolution_op(self, inputs, kernel):
        if self.groups == 1:
            return super().convolution_op(inputs, kernel)
        axis = -1 if self.data_format == "channels_last" else 1
        towers = zip(ops.split(inputs, self.groups, axis=axis), ops.split(kernel, self.groups, -1))
        return ops.concatenate([ops.conv(x, k, strides=list(self.strides), padding=self.padding,
                                         dilation_rate=self.dilation_rate,
                                         data_format=self.data_format) for x, k in towers],
                               axis=axis)
