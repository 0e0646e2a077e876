"""Occlusion and Grad-CAM maps, ``[N, H, W]`` on the input's pixel grid (see :mod:`kerascnn.explain`
for the papers and conventions); the one backend-specific piece is :func:`gradient`."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ..arithmetic import ReceptiveField
from ..receptive_fields import graph_nodes, receptive_fields

__all__ = ["occlusion", "grad_cam", "gradient", "predict_proba", "default_cam_layer",
           "field_interpolation"]


# --- the model's outputs --------------------------------------------------------------------------

def _predictions_layer(model):
    try:
        return model.get_layer("predictions")
    except ValueError:
        return None


def _input(model):
    """The model's input tensor (one image input: sub-models take the batch itself, not a list)."""
    if len(model.inputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs; explanations need "
                         f"a model with one image input")
    return model.inputs[0]


def _probability_model(model):
    """``model`` with its ``predictions`` output only (GoogLeNet's training graph has three)."""
    if len(model.outputs) == 1:
        return model
    layer = _predictions_layer(model)
    if layer is None:
        raise ValueError(f"model {model.name!r} has {len(model.outputs)} outputs and no layer "
                         f"named 'predictions'; pass a model with one probability output")
    return keras.Model(_input(model), layer.output, name=f"{model.name}_predictions")


def _score_tensor(model):
    """The class scores Grad-CAM differentiates: the input of a softmax ``predictions`` layer (the
    pre-softmax score y^c of Selvaraju et al., section 3), else the model's only output."""
    layer = _predictions_layer(model)
    if layer is not None and isinstance(layer, keras.layers.Activation):
        activation = getattr(layer.activation, "__name__", "")
        if activation == "softmax":
            return layer.input
    if layer is not None:
        return layer.output
    if len(model.outputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.outputs)} outputs and no layer "
                         f"named 'predictions'")
    return model.outputs[0]


def _batches(images, batch_size):
    for i in range(0, len(images), batch_size):
        yield images[i:i + batch_size]


def _input_dtype(model) -> str:
    dtype = model.inputs[0].dtype
    return getattr(dtype, "name", str(dtype))


def _as_images(model, images) -> np.ndarray:
    images = np.asarray(images)
    shape = tuple(model.inputs[0].shape[1:])
    if images.ndim == len(shape):  # one image
        images = images[None]
    if images.ndim != len(shape) + 1:
        raise ValueError(f"images must be a batch [N, H, W, C] matching the model's input "
                         f"{shape}, got an array of shape {images.shape}")
    for want, got in zip(shape, images.shape[1:]):
        if want is not None and want != got:
            raise ValueError(f"images of shape {images.shape[1:]} do not fit the model's input "
                             f"{shape}; resize or pad them first (kerascnn.data.pipeline)")
    return images.astype(_input_dtype(model), copy=False)


def predict_proba(model, images, *, batch_size: int = 64) -> np.ndarray:
    """The class probabilities ``[N, classes]`` of ``images`` (the ``predictions`` output)."""
    net = _probability_model(model)
    images = _as_images(model, images)
    return np.concatenate([ops.convert_to_numpy(net(b, training=False)).astype("float32")
                           for b in _batches(images, batch_size)])


def _class_indices(class_index, probabilities) -> np.ndarray:
    """Per image: the given class (an int for all, or one per image), else the predicted one."""
    n = len(probabilities)
    if class_index is None:
        return probabilities.argmax(axis=1)
    classes = np.broadcast_to(np.asarray(class_index, dtype="int64"), (n,)).copy()
    bad = (classes < 0) | (classes >= probabilities.shape[1])
    if bad.any():
        raise ValueError(f"class_index {classes[bad][0]} is out of range: the model has "
                         f"{probabilities.shape[1]} classes")
    return classes


# --- occlusion (Zeiler & Fergus 2013, Fig. 7) ---------------------------------------------------

def _positions(size: int, patch: int, stride: int) -> list[int]:
    """Top (or left) edges of the patches along one axis; the last patch touches the far edge."""
    last = size - patch
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def _fill_values(images, fill) -> np.ndarray:
    """The grey of the square per image and channel, shape ``[N, 1, 1, C]``."""
    if isinstance(fill, str):
        if fill != "mean":
            raise ValueError(f"fill must be 'mean', a pixel value or one value per channel; "
                             f"got {fill!r}")
        return images.astype("float64").mean(axis=(1, 2), keepdims=True)
    values = np.asarray(fill, dtype="float64").reshape(1, 1, 1, -1)
    if values.shape[-1] not in (1, images.shape[-1]):
        raise ValueError(f"fill has {values.shape[-1]} values but the images have "
                         f"{images.shape[-1]} channels")
    return np.broadcast_to(values, (len(images), 1, 1, images.shape[-1]))


def occlusion(model, images, patch: int = 8, stride: int = 4, class_index=None, *,
              fill="mean", batch_size: int = 128) -> np.ndarray:
    """Occlusion sensitivity maps, shape ``[N, H, W]`` (float32).

    A ``patch x patch`` square of the colour ``fill`` slides over each image with step ``stride``
    (the last square of a row or column touches the image's edge, so every pixel is covered); each
    pixel's value is the mean, over the squares that cover it, of the drop in the probability of
    the class ``p(class | image) - p(class | occluded image)``: positive where hiding the pixel
    hurts the class (Zeiler & Fergus 2013, section 4.2, Fig. 7 (b, d), who plot it per square).

    ``class_index``: ``None`` for each image's predicted class, an int for one class, or one per
    image (the true labels). ``fill``: ``"mean"`` (each image's mean colour, the grey of a
    mean-subtracted input as in the paper), a pixel value in the model's input units (``0`` is
    MNIST's background, ``128`` mid-grey for uint8 photos) or one value per channel. ``images`` are
    what the model takes (uint8 for the zoo's models).
    """
    images = _as_images(model, images)
    n, height, width = images.shape[:3]
    for label, value, limit in (("patch", patch, min(height, width)), ("stride", stride, None)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1 or \
                (limit is not None and value > limit):
            raise ValueError(f"{label} must be an integer from 1 to "
                             f"{limit if limit else 'the patch size'}, got {value!r}")
    net = _probability_model(model)
    base = predict_proba(net, images, batch_size=batch_size)
    classes = _class_indices(class_index, base)
    fills = _fill_values(images, fill)
    low, high = _dtype_range(images.dtype)
    squares = [(y, x) for y in _positions(height, patch, stride)
               for x in _positions(width, patch, stride)]
    maps = np.zeros((n, height, width), "float64")
    counts = np.zeros((height, width), "float64")
    for y, x in squares:
        counts[y:y + patch, x:x + patch] += 1
    for i in range(n):
        grey = np.clip(np.rint(fills[i]) if images.dtype.kind in "iu" else fills[i], low, high)
        drops = []
        for chunk in _batches(squares, batch_size):
            batch = np.repeat(images[i:i + 1], len(chunk), axis=0)
            for b, (y, x) in enumerate(chunk):
                batch[b, y:y + patch, x:x + patch] = grey.astype(images.dtype)
            probs = ops.convert_to_numpy(net(batch, training=False))
            drops.append(base[i, classes[i]] - probs[:, classes[i]])
        for (y, x), drop in zip(squares, np.concatenate(drops)):
            maps[i, y:y + patch, x:x + patch] += drop
    return (maps / counts).astype("float32")


def _dtype_range(dtype):
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        return info.min, info.max
    return -np.inf, np.inf


# --- gradients: the one backend-specific function -----------------------------------------------

def gradient(fn, x):
    """``(fn(x), d fn / d x)`` for a function ``fn`` of one tensor that returns a scalar.

    ``keras.ops`` has no gradient op, so this is the one place that asks the backend:
    ``tf.GradientTape`` on TensorFlow, ``jax.value_and_grad`` on JAX, ``torch.autograd.grad`` on
    PyTorch. ``fn`` itself should use Keras layers and ``keras.ops`` only.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf
        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
        return value, tape.gradient(value, x)
    if backend == "jax":
        import jax
        return jax.value_and_grad(fn)(ops.convert_to_tensor(x))
    if backend == "torch":
        import torch
        x = ops.convert_to_tensor(x).detach().requires_grad_(True)
        with torch.enable_grad():
            value = fn(x)
            (grad,) = torch.autograd.grad(value, x)
        return value.detach(), grad
    raise NotImplementedError(f"gradients on the {backend!r} Keras backend are not supported; "
                              f"use tensorflow, jax or torch (KERAS_BACKEND)")


# --- Grad-CAM (Selvaraju et al. 2017) ------------------------------------------------------------

def _map_shape(tensor):
    shape = tensor.shape
    return tuple(shape[1:3]) if len(shape) == 4 else None


def default_cam_layer(model) -> str:
    """Grad-CAM's default layer: the last convolution whose map is larger than 1x1 (a 1x1 map, such
    as LeNet-5's C5, has no spatial information), followed through the layers after it that keep
    the map's size and are its only consumer (batch norm, activation, the residual add and its ReLU,
    the inception concatenation), so the maps are rectified features as in the paper: ``c3_tanh``
    for LeNet-5, ``block5_conv3_relu`` for VGG-16, ``conv5_block3_out`` for ResNet-50."""
    nodes = graph_nodes(model)  # this model's graph only (other models may share its layers)
    consumers: dict[int, list] = {}
    for node in nodes:
        for tensor in node.input_tensors:
            consumers.setdefault(id(tensor), []).append(node)
    for tensor in model.outputs:
        consumers.setdefault(id(tensor), []).append(None)
    convs = [node for node in nodes if not node.is_input and len(node.outputs) == 1
             and hasattr(node.operation, "kernel_size")
             and (_map_shape(node.outputs[0]) or (1, 1)) != (1, 1)]
    if not convs:
        raise ValueError(f"model {model.name!r} has no convolution with a map larger than 1x1; "
                         f"pass layer=NAME")
    node = convs[-1]
    while True:
        users = consumers.get(id(node.outputs[0]), [])
        if len(users) != 1 or users[0] is None or len(users[0].outputs) != 1 \
                or _map_shape(users[0].outputs[0]) != _map_shape(node.outputs[0]):
            return node.operation.name
        node = users[0]


def field_interpolation(field: ReceptiveField, height: int, width: int):
    """Matrices ``(Wy [H, h], Wx [W, w])`` that spread a layer's ``h x w`` map over the input's
    pixels by linear interpolation between the *centres of the units' receptive fields*
    (``start + i*jump``), constant beyond the first and last centres: ``Wy @ map @ Wx.T``.

    A plain image resize would put unit i at ``(i + 0.5) * H/h``, which is off by several pixels
    for unpadded networks (LeNet-5's C3 units are centred at 6.5, 8.5 ... 24.5 of 32, not 1.1 ...
    29.9).
    """
    def axis(size, units, start, jump):
        weights = np.zeros((size, units), "float32")
        u = np.clip((np.arange(size) - start) / jump, 0, units - 1)
        lo = np.floor(u).astype(int)
        hi = np.minimum(lo + 1, units - 1)
        frac = (u - lo).astype("float32")
        weights[np.arange(size), lo] += 1 - frac
        weights[np.arange(size), hi] += frac
        return weights

    h, w = field.output
    return (axis(height, h, field.start[0], field.jump[0]),
            axis(width, w, field.start[1], field.jump[1]))


def grad_cam(model, images, class_index=None, layer: str | None = None, *,
             normalize: bool = True, batch_size: int = 32) -> np.ndarray:
    """Grad-CAM maps, shape ``[N, H, W]`` (float32, >= 0).

    ``L^c = ReLU(sum_k alpha_k^c A^k)`` with ``alpha_k^c`` the spatial mean of ``d y^c / d A^k``
    (Selvaraju et al. 2017, eq. 1-2): ``A`` the maps of ``layer`` (by default
    :func:`default_cam_layer`, the last convolution), ``y^c`` the class score before the softmax.
    The coarse map is spread over the input's pixels through the layer's receptive-field centres
    (:func:`field_interpolation`). ``class_index``: ``None`` for the predicted class, an int, or
    one per image. ``normalize`` divides each map by its maximum (the paper's display; maps that
    are all zero stay zero).

    The layer must lie on every path to the output (a block's output, not a convolution inside a
    residual block whose shortcut bypasses it).
    """
    images = _as_images(model, images)
    name = layer or default_cam_layer(model)
    target = model.get_layer(name)
    field = receptive_fields(model).get(name)
    if field is None:  # strict=True says why
        receptive_fields(model, strict=True)
    if field.output is None or None in field.output:
        raise ValueError(f"layer {name!r} has no spatial map (shape {target.output.shape}); "
                         f"Grad-CAM needs a convolutional layer")
    features = keras.Model(_input(model), target.output, name=f"{model.name}_features")
    try:
        head = keras.Model(target.output, _score_tensor(model), name=f"{model.name}_head")
    except ValueError:
        raise ValueError(f"layer {name!r} is bypassed by another path to the output (a residual "
                         f"shortcut or an inception branch), so the scores are not a function of "
                         f"its maps alone; pick a layer every path goes through, such as a block's "
                         f"output") from None
    probabilities = predict_proba(model, images, batch_size=batch_size)
    classes = _class_indices(class_index, probabilities)
    wy, wx = field_interpolation(field, images.shape[1], images.shape[2])
    maps = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        chosen = ops.one_hot(ops.convert_to_tensor(classes[start:start + batch_size]),
                             probabilities.shape[1])
        acts = features(batch, training=False)

        def score(a, chosen=chosen):
            return ops.sum(ops.cast(head(a, training=False), "float32") * chosen)

        _, grads = gradient(score, acts)
        alpha = ops.mean(ops.cast(grads, "float32"), axis=(1, 2))          # [B, K]
        cam = ops.relu(ops.einsum("bhwk,bk->bhw", ops.cast(acts, "float32"), alpha))
        cam = ops.einsum("Hh,bhw,Ww->bHW", ops.convert_to_tensor(wy), cam,
                         ops.convert_to_tensor(wx))
        maps.append(ops.convert_to_numpy(cam))
    maps = np.concatenate(maps).astype("float32")
    if normalize:
        peak = maps.max(axis=(1, 2), keepdims=True)
        maps = np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)
    return maps
