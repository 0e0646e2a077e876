"""ResNets (He et al. 2015, "Deep Residual Learning for Image Recognition").

Two builders, both driven by data:

* :func:`resnet`, the ImageNet networks of Table 1: a 7x7/2 stem, a 3x3/2 max pool, four stages
  (:data:`STAGES`) of basic or bottleneck blocks whose counts per depth are :data:`LAYOUTS`, global
  average pooling and one FC layer. As torchvision: no conv biases, BN (eps 1e-5) after every conv,
  projection shortcuts (option B) only where the shape changes, the stride on the 3x3 conv of a
  bottleneck ("v1.5"; ``stride_on="1x1"`` is the paper's v1). ResNet-50: 25,557,032 parameters.
* :func:`resnet_cifar`, the CIFAR-10 networks of section 4.2 / Table 6: depth 6n+2, a 3x3 stem of
  16 filters, three stages of n basic blocks with {16, 32, 64} filters at {32, 16, 8} pixels, option
  A shortcuts (identity, subsampled and zero-padded where the shape changes). ResNet-20: 269,722.

Layer names follow keras.applications (``conv3_block1_2_conv``, ``conv3_block1_0_bn`` for the
shortcut, ``conv3_block1_add``, ``conv3_block1_out``). Weights use He initialisation as torchvision
does (normal, std sqrt(2 / fan_out)); the paper's fan_in form (He et al. 2015b) gives the same std
wherever a conv keeps its width and differs on the bottleneck 1x1 convs.
"""

from __future__ import annotations

import sys

import keras
from keras import layers, ops

from ..layers import classifier, conv, image_input, max_pool
from ..catalog import register

__all__ = ["LAYOUTS", "STAGES", "CIFAR_STAGES", "resnet", "resnet_cifar", "basic_block",
           "bottleneck_block", "ZeroPadShortcut"]

PAPER = ("He et al. 2015, Deep Residual Learning for Image Recognition (arXiv:1512.03385), "
         "Table 1")
PAPER_CIFAR = ("He et al. 2015, Deep Residual Learning for Image Recognition (arXiv:1512.03385), "
               "section 4.2, Table 6")

#: Table 1: block type and the number of blocks in conv2_x .. conv5_x for each depth.
LAYOUTS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
#: Table 1's stages: (name, width C, stride of the first block). A bottleneck stage outputs 4C.
STAGES = (("conv2", 64, 1), ("conv3", 128, 2), ("conv4", 256, 2), ("conv5", 512, 2))
#: Section 4.2: three stages at 32, 16 and 8 pixels with 16, 32 and 64 filters.
CIFAR_STAGES = (("conv2", 16, 1), ("conv3", 32, 2), ("conv4", 64, 2))

BN_EPSILON = 1e-5
STRIDE_ON = ("3x3", "1x1")
SHORTCUTS = ("zero_pad", "projection")


def he_normal():
    """torchvision's kaiming_normal_(mode="fan_out", nonlinearity="relu"). A new instance per layer:
    Keras 3 initializers without a seed repeat their values when an instance is reused."""
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def resnet(num_classes: int = 1000, input_shape=(224, 224, 3), preprocessing=None,
           name: str = "resnet", *, block: str = "bottleneck", blocks=(3, 4, 6, 3),
           stride_on: str = "3x3", zero_init_residual: bool = False,
           classifier_activation: str | None = "softmax") -> keras.Model:
    """An ImageNet ResNet of Table 1 given its layout (``block``, blocks per stage).

    ``stride_on="3x3"`` (default, torchvision's v1.5) or ``"1x1"`` (the paper's v1) says which conv
    of a bottleneck's first block halves the map: same parameters, different MACs (ResNet-50 4.089
    vs 3.858 G). ``zero_init_residual`` starts the last BN of every block at gamma 0 so each block
    begins as the identity (Goyal et al. 2017).
    """
    _check_choice("block", block, tuple(BLOCKS))
    _check_choice("stride_on", stride_on, STRIDE_ON)
    blocks = tuple(blocks)
    if len(blocks) != len(STAGES) or not all(isinstance(n, int) and n >= 1 for n in blocks):
        raise ValueError(f"blocks must give {len(STAGES)} positive block counts, one per stage "
                         f"conv2..conv5 (e.g. (3, 4, 6, 3) for ResNet-50); got {blocks!r}")
    inputs, x = image_input(input_shape, preprocessing)
    x = conv_bn(x, 64, 7, stride=2, name="conv1")
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)  # zeros are safe: the inputs are ReLU outputs
    x = max_pool(x, 3, 2, name="pool1_pool")
    for (stage, width, stride), count in zip(STAGES, blocks):
        x = _stack(x, BLOCKS[block], count, width, stride, stage, shortcut="projection",
                   stride_on=stride_on, zero_init_residual=zero_init_residual)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = classifier(x, num_classes, name="fc", activation=classifier_activation)
    return keras.Model(inputs, outputs, name=name)


def resnet_cifar(num_classes: int = 10, input_shape=(32, 32, 3), preprocessing=None,
                 name: str = "resnet_cifar", *, depth: int = 20, shortcut: str = "zero_pad",
                 zero_init_residual: bool = False,
                 classifier_activation: str | None = "softmax") -> keras.Model:
    """A CIFAR-10 ResNet of section 4.2: ``depth`` = 6n + 2 (20, 32, 44, 56, 110, 1202).

    ``shortcut="zero_pad"`` is the paper's option A (no parameters: where the map halves and the
    channels double, subsample by 2 and pad the new channels with zeros); ``"projection"`` is
    option B (1x1 conv + BN, ResNet-20: 272,474 instead of 269,722 parameters).
    """
    _check_choice("shortcut", shortcut, SHORTCUTS)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        valid = [6 * n + 2 for n in (3, 5, 7, 9, 18)]
        hint = ""
        if isinstance(depth, int) and depth >= 8:
            lower = depth - (depth - 2) % 6
            hint = f"; the nearest depths are {lower} and {lower + 6}"
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (the paper uses "
                         f"{', '.join(map(str, valid))} and 1202), got {depth!r}{hint}")
    n = (depth - 2) // 6
    # Keras walks the graph recursively: ResNet-1202 (4,211 layers) overflows Python's default
    # limit of 1000 (anchors-zoo.md §2.10); 4 frames per unit of depth is a safe bound. The limit
    # stays raised because fitting, saving and loading the model walk the graph again.
    needed = 4 * depth + 1000
    if sys.getrecursionlimit() < needed:
        sys.setrecursionlimit(needed)
    inputs, x = image_input(input_shape, preprocessing)
    x = conv_bn(x, 16, 3, name="conv1")
    for stage, width, stride in CIFAR_STAGES:
        x = _stack(x, basic_block, n, width, stride, stage, shortcut=shortcut,
                   zero_init_residual=zero_init_residual)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = classifier(x, num_classes, name="fc", activation=classifier_activation)
    return keras.Model(inputs, outputs, name=name)


def conv_bn(x, filters: int, kernel: int, *, name: str, stride: int = 1, relu: bool = True,
            zero_gamma: bool = False):
    """``{name}_conv`` (no bias, He init) -> ``{name}_bn`` -> ``{name}_relu``.

    Padding is (F-1)/2 on every side as in torchvision. At stride 1 that is Keras "same"; at
    stride 2 it is an explicit ``{name}_pad`` (Keras "same" would pad only the bottom/right of an
    even map and shift every window by a pixel).
    """
    pad = (kernel - 1) // 2
    padding = "same" if stride == 1 else 0
    if stride != 1 and pad:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    x = conv(x, filters, kernel, stride=stride, padding=padding, use_bias=False, activation=None,
             kernel_initializer=he_normal(), name=f"{name}_conv")
    x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9,
                                  gamma_initializer="zeros" if zero_gamma else "ones",
                                  name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x) if relu else x


def basic_block(x, width: int, stride: int, *, name: str, shortcut: str = "projection",
                stride_on: str = "3x3", zero_init_residual: bool = False):
    """Figure 5 left: 3x3, C -> 3x3, C, plus the shortcut (ResNet-18/34 and the CIFAR nets).

    ``stride_on`` is accepted for symmetry and has no effect: the first conv is the 3x3 either way.
    """
    residual = conv_bn(x, width, 3, stride=stride, name=f"{name}_1")
    residual = conv_bn(residual, width, 3, relu=False, zero_gamma=zero_init_residual,
                       name=f"{name}_2")
    return _merge(x, residual, width, stride, name, shortcut)


def bottleneck_block(x, width: int, stride: int, *, name: str, shortcut: str = "projection",
                     stride_on: str = "3x3", zero_init_residual: bool = False):
    """Figure 5 right: 1x1, C -> 3x3, C -> 1x1, 4C, plus the shortcut (ResNet-50/101/152)."""
    stride_1x1, stride_3x3 = (1, stride) if stride_on == "3x3" else (stride, 1)
    residual = conv_bn(x, width, 1, stride=stride_1x1, name=f"{name}_1")
    residual = conv_bn(residual, width, 3, stride=stride_3x3, name=f"{name}_2")
    residual = conv_bn(residual, 4 * width, 1, relu=False, zero_gamma=zero_init_residual,
                       name=f"{name}_3")
    return _merge(x, residual, 4 * width, stride, name, shortcut)


BLOCKS = {"basic": basic_block, "bottleneck": bottleneck_block}


def _stack(x, block, count, width, stride, stage, **options):
    """One stage: ``count`` blocks named ``{stage}_block1`` ..., the first one with ``stride``."""
    for i in range(1, count + 1):
        x = block(x, width, stride if i == 1 else 1, name=f"{stage}_block{i}", **options)
    return x


def _merge(x, residual, channels, stride, name, shortcut):
    """y = F(x) + shortcut(x), then ReLU. The shortcut is the identity unless the shape changes."""
    if stride != 1 or x.shape[-1] != channels:
        if shortcut == "projection":  # option B, eq. (2): W_s x with a 1x1 conv (+ BN)
            x = conv_bn(x, channels, 1, stride=stride, relu=False, name=f"{name}_0")
        else:  # option A: no parameters
            x = ZeroPadShortcut(channels, stride, name=f"{name}_0_shortcut")(x)
    x = layers.Add(name=f"{name}_add")([x, residual])
    return layers.Activation("relu", name=f"{name}_out")(x)


@keras.saving.register_keras_serializable(package="kerascnn")
class ZeroPadShortcut(layers.Layer):
    """Option A shortcut (He et al. 2015, section 3.3): the identity, subsampled by ``stride`` and
    padded with zero channels up to ``channels``, so it adds no parameters.

    Takes pixels 0, S, 2S, ... like the stride-S 3x3 conv with padding 1 beside it, so both give
    ceil(W/S) pixels; the new channels are appended after the existing ones.
    """

    def __init__(self, channels: int, stride: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.channels, self.stride = int(channels), int(stride)

    def call(self, x):
        x = x[:, ::self.stride, ::self.stride, :]
        extra = self.channels - x.shape[-1]
        if extra < 0:
            raise ValueError(f"{self.name}: cannot shrink {x.shape[-1]} channels to "
                             f"{self.channels} with zero padding; use a projection shortcut")
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]]) if extra else x

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        down = [None if d is None else -(-d // self.stride) for d in (h, w)]
        return (n, *down, self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "stride": self.stride}


def _check_choice(option, value, choices):
    if value not in choices:
        raise ValueError(f"{option} must be one of {', '.join(map(repr, choices))}; "
                         f"got {value!r}")


for _depth, (_block, _blocks) in LAYOUTS.items():
    register(f"resnet{_depth}", resnet, family="resnet", input_shape=(224, 224, 3), min_size=1,
             paper=PAPER, block=_block, blocks=_blocks,
             description=f"ResNet-{_depth} for ImageNet: {_block} blocks {list(_blocks)}, "
             f"projection shortcuts, stride on the {'3x3' if _block == 'bottleneck' else 'first'}"
             f" conv (v1.5; stride_on='1x1' for v1)")

for _depth in (20, 32, 44, 56, 110):
    register(f"resnet{_depth}", resnet_cifar, family="resnet_cifar", input_shape=(32, 32, 3),
             min_size=1, paper=PAPER_CIFAR, depth=_depth,
             description=f"ResNet-{_depth} for CIFAR-10: 3 stages x {(_depth - 2) // 6} basic "
             "blocks (16/32/64 filters), option A zero-padding shortcuts")
