"""Receptive fields of a Keras model, layer by layer: the graph walk.

The arithmetic is :mod:`kerascnn.arithmetic`'s (:func:`~kerascnn.arithmetic.receptive_field_step`,
the same recurrences that give ``W2``: ``j_out = j_in * S``, ``r_out = r_in + (F - 1) * j_in``);
this module walks a model's layers (branches merged by
:func:`~kerascnn.arithmetic.merge_receptive_fields`) and returns one
:class:`~kerascnn.arithmetic.ReceptiveField` per layer. ``inspect`` shows them as columns and
:mod:`kerascnn.explain` crops image patches with them.
"""

from __future__ import annotations

from .arithmetic import (ReceptiveField, merge_receptive_fields,  # noqa: F401
                         receptive_field_step, same_padding)
from .layer_table import graph_nodes

__all__ = ["receptive_fields", "graph_nodes"]


def receptive_fields(model, *, strict: bool = False) -> dict[str, ReceptiveField]:
    """The :class:`ReceptiveField` of every layer of a built Keras model, in graph order.

    F, S and P are read from the layers as :mod:`kerascnn.inspect` reads them: Keras ``"same"``
    padding is the padding TensorFlow applies (:func:`same_padding`, the odd pixel after, so a
    stride-2 "same" layer on an even map pads 0 before); a ``ZeroPadding2D`` moves ``start`` by its
    padding before; a merge (``Add``, ``Concatenate``) takes the union of its inputs' fields
    (:func:`merge_receptive_fields`); global pooling and ``Flatten`` cover the whole map (F = the
    map's size, as the lecture writes global pooling); layers that keep the map's size
    (activations, batch norm, LRN, dropout, preprocessing, a Dense per position) keep the field.
    A custom layer that changes the map's size states its F, S and P with the
    ``lecture_arithmetic(input_shape, output_shape)`` method :mod:`kerascnn.inspect` reads, or has
    an integer ``stride`` (a subsampling shortcut: F = 1). Adaptive pooling is F = S = in/out when
    that divides. A layer whose field has no single F, S and P (adaptive pooling that does not
    divide, a transposed convolution, an unknown custom layer) and every layer after it are left
    out of the result, or raise ``ValueError`` with ``strict=True``.

    Keys are layer names (a nested model's layers are ``outer/inner``); the input layer has r = 1.
    """
    import keras

    nodes = graph_nodes(model)
    fields: dict[int, tuple] = {}  # id(tensor) -> ((r, j, start) per axis, output size)
    result: dict[str, ReceptiveField] = {}
    for node in nodes:
        op = node.operation
        outputs = list(node.outputs)
        if node.is_input:
            shape = outputs[0].shape
            axes = ((1, 1, 0.0), (1, 1, 0.0))
            out = _map_size(shape)
        else:
            inputs = [fields[id(t)] for t in node.input_tensors if id(t) in fields]
            if len(inputs) < len(node.input_tensors):  # after a layer without a field
                continue
            if isinstance(op, keras.Model) and getattr(op, "outputs", None):
                axes, out, inner = _nested(op, inputs[0], outputs[0])
                result.update(inner)
            elif len(inputs) > 1:
                axes = tuple(merge_receptive_fields([f[0][a] for f in inputs], layer=op.name)
                             for a in (0, 1))
                out = _map_size(outputs[0].shape)
            else:
                try:
                    axes, out = _layer_step(op, node.input_tensors[0], outputs[0], inputs[0],
                                            keras)
                except _NoField:
                    if strict:
                        raise
                    continue
        for t in outputs:
            fields[id(t)] = (axes, out)
        result[op.name] = _record(op.name, type(op).__name__, axes, out)
    return result


class _NoField(ValueError):
    """A layer whose units have no single receptive field (see :func:`receptive_fields`)."""


def _record(name, kind, axes, out):
    (rh, jh, sh), (rw, jw, sw) = axes
    return ReceptiveField(name, kind, (rh, rw), (jh, jw), (float(sh), float(sw)), out)


def _map_size(shape):
    if len(shape) != 4:
        return None
    return tuple(None if d is None else int(d) for d in shape[1:3])


def _pair(value):
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    return int(pair[0]), int(pair[1])


def _is_2d(value) -> bool:
    """A kernel or pool size of a 2D layer: an int or a pair (not None, not a 1D layer's)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, (tuple, list)) and len(value) == 2


def _sides(padding):
    """Keras' ``((top, bottom), (left, right))`` padding or cropping as a pair of pairs."""
    return tuple(_pair(side) for side in padding)


def _layer_step(op, tensor_in, tensor_out, field_in, keras):
    """The (r, j, start) pair of axes and map size after one single-input layer."""
    axes_in, size_in = field_in
    out = _map_size(tensor_out.shape)
    name, kind = op.name, type(op).__name__
    spatial = None  # (kernel, strides, padding before, dilation) per axis
    if isinstance(op, keras.layers.Conv2DTranspose):
        raise _NoField(f"layer '{name}': receptive fields of transposed convolutions are not "
                       f"supported")
    adaptive = tuple(getattr(keras.layers, f"Adaptive{mode}Pooling2D")
                     for mode in ("Average", "Max")
                     if hasattr(keras.layers, f"Adaptive{mode}Pooling2D"))
    if adaptive and isinstance(op, adaptive) and out is not None and size_in != out:
        if None in size_in or any(i % o for i, o in zip(size_in, out)):
            raise _NoField(f"layer '{name}': adaptive pooling from {size_in} to {out} has windows "
                           f"of different sizes, so its units have no single receptive field")
        ratio = tuple(i // o for i, o in zip(size_in, out))
        return tuple(receptive_field_step(r, j, start, ratio[a], ratio[a], 0, layer=name)
                     for a, (r, j, start) in enumerate(axes_in)), out
    if isinstance(op, keras.layers.ZeroPadding2D):
        (t, _), (l, _) = _sides(op.padding)
        return tuple((r, j, start - before * j)
                     for (r, j, start), before in zip(axes_in, (t, l))), out
    if isinstance(op, keras.layers.Cropping2D):
        (t, _), (l, _) = _sides(op.cropping)
        return tuple((r, j, start + before * j)
                     for (r, j, start), before in zip(axes_in, (t, l))), out
    if isinstance(op, (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D,
                       keras.layers.Flatten)) and size_in is not None:
        if None in size_in:
            raise _NoField(f"layer '{name}': the map it pools or flattens has an unknown size "
                           f"{size_in}; build the model at a fixed input size")
        spatial = (size_in, (1, 1), (0, 0), (1, 1))
        out = None
    elif _is_2d(getattr(op, "kernel_size", None)) and hasattr(op, "strides") \
            and hasattr(op, "padding") and out is not None:
        spatial = _window(op, op.kernel_size, tensor_in)
    elif _is_2d(getattr(op, "pool_size", None)) and hasattr(op, "strides") and out is not None:
        spatial = _window(op, op.pool_size, tensor_in)
    elif hasattr(op, "lecture_arithmetic") and out is not None:
        stated = op.lecture_arithmetic(tuple(tensor_in.shape[1:]), tuple(tensor_out.shape[1:]))
        if stated.get("kernel"):
            (t, _), (l, _) = _sides(stated.get("padding") or ((0, 0), (0, 0)))
            spatial = (_pair(stated["kernel"]), _pair(stated.get("strides") or 1), (t, l), (1, 1))
    if spatial is None and out is not None and size_in is not None and out != size_in:
        stride = getattr(op, "stride", None)
        if isinstance(stride, int) and not isinstance(stride, bool):
            spatial = ((1, 1), (stride, stride), (0, 0), (1, 1))
        else:
            raise _NoField(f"layer '{name}' ({kind}) changes the map from {size_in} to {out} "
                           f"but states no F, S and P; give it a lecture_arithmetic() method "
                           f"(see kerascnn.inspect)")
    if spatial is None:  # keeps the map's size: the field is unchanged
        return axes_in, out
    kernel, strides, before, dilation = spatial
    return tuple(receptive_field_step(r, j, start, kernel[a], strides[a], before[a],
                                      dilation=dilation[a], layer=name)
                 for a, (r, j, start) in enumerate(axes_in)), out


def _window(op, kernel, tensor_in):
    """Kernel, strides, padding before and dilation of a Keras convolution or pooling layer."""
    kernel, strides = _pair(kernel), _pair(op.strides)
    dilation = _pair(getattr(op, "dilation_rate", 1))
    before = (0, 0)
    if op.padding == "same":
        size = _map_size(tensor_in.shape) or (None, None)
        span = [dilation[a] * (kernel[a] - 1) + 1 for a in (0, 1)]
        # an unknown size is taken to be a multiple of the stride
        before = tuple(same_padding(size[a], span[a], strides[a])[0] if size[a] is not None
                       else max(span[a] - strides[a], 0) // 2 for a in (0, 1))
    return kernel, strides, before, dilation


def _nested(submodel, field_in, tensor_out):
    """A model used as a layer: compose its own fields with the field of its input."""
    inner = receptive_fields(submodel)
    axes_in, _ = field_in
    composed = {}
    for key, f in inner.items():
        axes = tuple((r + (f.size[a] - 1) * j, j * f.jump[a], start + f.start[a] * j)
                     for a, (r, j, start) in enumerate(axes_in))
        composed[f"{submodel.name}/{key}"] = _record(f"{submodel.name}/{key}", f.type, axes,
                                                     f.output)
    last = composed[f"{submodel.name}/{submodel.outputs[0]._keras_history[0].name}"]
    axes = tuple(zip(last.size, last.jump, last.start))
    return axes, _map_size(tensor_out.shape), composed
