"""The lecture's size-arithmetic table of a Keras model, as data (``python -m kerascnn inspect``
prints it).

One row per layer that shapes the volume or holds parameters::

    layer  type  F  S  P  K  input W x H x D  output W x H x D  weights  biases  MACs

computed with :mod:`kerascnn.arithmetic` (``W2 = (W1 - F + 2P)/S + 1``, ``F*F*D1*K/groups``
weights, ``W2*H2*K*F*F*D1/groups`` MACs) from the Keras graph, then totalled. Conventions:

- P is written on the layer it pads, as the lecture does: a ``ZeroPadding2D`` feeding a single
  convolution or pooling layer is merged into that layer's P (and its input is the unpadded volume);
  ``padding="same"`` shows its effective padding, ``(F-1)/2`` for stride 1. Asymmetric padding is
  shown ``before/after`` (Keras' "same" with stride 2 pads ``0/1``).
- MACs count Conv2D and Dense only (anchors-zoo.md section 5); pooling, batch norm and add rows
  appear with 0 MACs.
- Batch norm's gamma and beta are counted as *weights*; its moving mean and variance are not
  trainable and appear only in the totals' non-trainable count.
- Activations, dropout and in-model preprocessing change no size and hold no parameters: they
  are left out unless ``all_layers=True``.
- ``kerascnn.inspect.layer_table(..., receptive_field=True)`` sets each row's ``field`` (its
  receptive field) and the table gains :data:`RF_COLUMNS` after MACs (opt-in).

The library part returns data (:func:`layer_table`, :func:`table_totals`, :func:`to_csv`,
:func:`to_markdown`); only :func:`run` prints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .arithmetic import (SizeError, batch_norm_params, conv_macs, conv_params, dense_macs,
                         dense_params, output_size, same_padding)

__all__ = ["LayerRow", "Totals", "layer_table", "table_totals", "trace_sizes", "COLUMNS",
           "RF_COLUMNS", "human"]

#: Column headings, in the lecture's order (shapes are written width x height x depth).
COLUMNS = ("layer", "type", "F", "S", "P", "K", "input WxHxD", "output WxHxD", "weights", "biases",
           "MACs")
#: Receptive field size r, jump j and start: ``kerascnn.inspect.layer_table(receptive_field=True)``
RF_COLUMNS = ("RF", "jump", "start")

#: The lecture's word for each Keras layer class.
_TYPES = {
    "Conv2D": "conv", "Dense": "fc", "MaxPooling2D": "max pool", "AveragePooling2D": "avg pool",
    "GlobalAveragePooling2D": "global avg pool", "GlobalMaxPooling2D": "global max pool",
    "BatchNormalization": "batch norm", "LocalResponseNormalization": "LRN", "Add": "add",
    "Concatenate": "concat", "Flatten": "flatten", "ZeroPadding2D": "zero pad",
    "Dropout": "dropout", "Reshape": "reshape",
}
#: Layers that change no size and hold no parameters: shown only with ``all_layers=True``.
_SILENT = {"Activation", "ReLU", "LeakyReLU", "Softmax", "ELU", "Dropout", "SpatialDropout2D",
           "GaussianNoise", "GaussianDropout", "AlphaDropout", "Rescaling", "Normalization",
           "Identity"}

Pair = tuple[int, int]


@dataclass(frozen=True)
class LayerRow:
    """One row of the table. Shapes are Keras' ``(H, W, D)`` (or ``(units,)``) without the batch;
    ``kernel``/``strides`` are ``(h, w)`` and ``padding`` is ``((top, bottom), (left, right))``,
    or ``None`` where the layer has none. ``inputs`` holds every input's shape (concat, add)."""

    name: str
    type: str
    kernel: Pair | None
    strides: Pair | None
    padding: tuple[Pair, Pair] | None
    filters: int | None
    input_shape: tuple
    output_shape: tuple
    weights: int = 0
    biases: int = 0
    macs: int = 0
    inputs: tuple = ()
    layer_class: str = ""
    merged: tuple[str, ...] = ()  # the ZeroPadding2D layers folded into this row's P
    field: object = None  # its arithmetic.ReceptiveField (inspect's receptive_field=True)

    @property
    def params(self) -> int:
        return self.weights + self.biases

    @property
    def f(self):
        """F as the lecture writes it: an int for a square kernel, else ``(h, w)``."""
        return _uniform(self.kernel)

    @property
    def s(self):
        return _uniform(self.strides)

    @property
    def p(self):
        """P: an int when all four sides are padded alike, else ((top, bottom), (left, right))."""
        if self.padding is None:
            return None
        (t, b), (l, r) = self.padding
        return t if t == b == l == r else self.padding

    @property
    def k(self):
        return self.filters

    def cells(self, receptive_field: bool = False) -> dict[str, object]:
        """The row as the table shows it: compact strings for F/S/P/shapes, ints for counts;
        with ``receptive_field`` the :data:`RF_COLUMNS` too (empty where the row has no field)."""
        cells = {"layer": self.name, "type": self.type, "F": _fmt_pair(self.kernel),
                "S": _fmt_pair(self.strides), "P": _fmt_padding(self.padding),
                "K": "" if self.filters is None else self.filters,
                "input WxHxD": _fmt_inputs(self.inputs or (self.input_shape,), self.type),
                "output WxHxD": _fmt_shape(self.output_shape), "weights": self.weights,
                "biases": self.biases, "MACs": self.macs}
        if receptive_field:
            f = self.field
            cells.update({"RF": "" if f is None else _fmt_pair(f.size),
                          "jump": "" if f is None else _fmt_pair(f.jump),
                          "start": "" if f is None else _fmt_start(f.start)})
        return cells


@dataclass(frozen=True)
class Totals:
    """Sums over the table, and Keras' own parameter counts to compare them with.

    ``params`` (= weights + biases of every row) equals ``keras_trainable`` unless some layers
    are frozen; ``keras_non_trainable`` is mostly batch norm's moving mean and variance.
    """

    weights: int
    biases: int
    macs: int
    keras_trainable: int | None = None
    keras_non_trainable: int | None = None

    @property
    def params(self) -> int:
        return self.weights + self.biases

    def line(self) -> str:
        """The totals as one sentence (the command prints it under the table)."""
        text = (f"Totals: {self.params:,} trainable parameters ({self.weights:,} weights + "
                f"{self.biases:,} biases), {self.macs:,} MACs ({human(self.macs)}MACs)")
        if self.keras_trainable is not None and self.keras_trainable != self.params:
            text += f"; Keras counts {self.keras_trainable:,} trainable (some layers are frozen)"
        if self.keras_non_trainable:
            text += (f"; plus {self.keras_non_trainable:,} non-trainable (batch norm statistics "
                     f"or fixed weights)")
        return text


def human(n: int) -> str:
    """``15470264320`` -> ``"15.470 G"``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3f} {unit}"
    return f"{n} "


# --- the graph ----------------------------------------------------------------------------------

def _node_of(tensor):
    operation, node_index, _ = tensor._keras_history
    return operation._inbound_nodes[node_index]


def graph_nodes(model) -> list:
    """The model's call nodes in topological order, each branch listed whole before the next
    (depth first from the outputs, so an inception module reads 1x1, 3x3 reduce, 3x3, ...);
    iterative, since ResNet-1202 is 4,000 layers deep."""
    outputs = getattr(model, "outputs", None)
    if not outputs:
        raise ValueError(f"model {getattr(model, 'name', model)!r} has no graph yet: build it on "
                         f"an input first (a functional model, or a Sequential one that starts "
                         f"with keras.Input)")
    order, done = [], set()
    stack = [(_node_of(t), False) for t in reversed(outputs)]
    while stack:
        node, expanded = stack.pop()
        if id(node) in done:
            continue
        if expanded:
            done.add(id(node))
            order.append(node)
            continue
        stack.append((node, True))
        stack.extend((_node_of(t), False) for t in reversed(node.input_tensors)
                     if id(_node_of(t)) not in done)
    return order


def _graph(model):
    """:func:`graph_nodes` and, per tensor, the nodes that consume it (None: a model output)."""
    order, outputs = graph_nodes(model), model.outputs
    consumers: dict[int, list] = {}
    for node in order:
        for t in node.input_tensors:
            consumers.setdefault(id(t), []).append(node)
    for t in outputs:
        consumers.setdefault(id(t), []).append(None)
    return order, consumers


def _shape(tensor) -> tuple:
    return tuple(tensor.shape[1:])


def _class(op) -> str:
    return type(op).__name__


def _is_spatial(op) -> bool:
    import keras
    return isinstance(op, (keras.layers.Conv2D, keras.layers.MaxPooling2D,
                           keras.layers.AveragePooling2D))


def _mergeable_padding(node, consumers) -> bool:
    """A ZeroPadding2D whose only consumer is one convolution or pooling layer."""
    import keras
    if not isinstance(node.operation, keras.layers.ZeroPadding2D) or len(node.outputs) != 1:
        return False
    users = consumers.get(id(node.outputs[0]), [])
    return (len(users) == 1 and users[0] is not None and _is_spatial(users[0].operation)
            and len(users[0].input_tensors) == 1)


# --- the table ----------------------------------------------------------------------------------

def layer_table(model, *, all_layers: bool = False) -> list[LayerRow]:
    """The lecture's table of ``model`` (a built Keras model): one :class:`LayerRow` per layer.

    Layers that only apply a function (activations, dropout, preprocessing) are left out unless
    ``all_layers``; a nested model contributes its own rows, named ``outer/inner``.
    """
    import keras

    order, consumers = _graph(model)
    folded = {}  # id(consumer node) -> the ZeroPadding2D node folded into it
    for node in order:
        if _mergeable_padding(node, consumers):
            folded[id(consumers[id(node.outputs[0])][0])] = node
    skipped = {id(n) for n in folded.values()}
    rows = []
    for node in order:
        op = node.operation
        if node.is_input or isinstance(op, keras.layers.InputLayer) or id(node) in skipped:
            continue
        if isinstance(op, keras.Model) and getattr(op, "outputs", None):
            rows.extend(_prefixed(row, op.name) for row in layer_table(op, all_layers=all_layers))
            continue
        trainable = sum(math.prod(w.shape) for w in getattr(op, "trainable_weights", []))
        if _class(op) in _SILENT and not trainable and not all_layers:
            continue
        rows.append(_row(node, folded.get(id(node)), trainable))
    return rows


def _prefixed(row: LayerRow, prefix: str) -> LayerRow:
    return LayerRow(**{**row.__dict__, "name": f"{prefix}/{row.name}"})


def _row(node, pad_node, trainable: int) -> LayerRow:
    import keras

    op = node.operation
    cls = _class(op)
    inputs = tuple(_shape(t) for t in node.input_tensors)
    out = _shape(node.outputs[0]) if node.outputs else ()
    merged = ()
    pad = ((0, 0), (0, 0))
    if pad_node is not None:  # the lecture writes P on the conv: show its unpadded input
        inputs = (_shape(pad_node.input_tensors[0]),)
        pad = tuple(tuple(int(v) for v in side) for side in pad_node.operation.padding)
        merged = (pad_node.operation.name,)
    first = inputs[0] if inputs else ()
    row = dict(name=op.name, type=_TYPES.get(cls, cls), kernel=None, strides=None, padding=None,
               filters=None, input_shape=first, output_shape=out, inputs=inputs,
               layer_class=cls, merged=merged)
    if cls == "Activation":  # only listed with all_layers: say which function
        row["type"] = getattr(op.activation, "__name__", "activation")

    if isinstance(op, keras.layers.Conv2D):
        kernel, strides = _ints(op.kernel_size), _ints(op.strides)
        padding = _padding(op.padding, node.input_tensors[0], kernel, strides, pad)
        h1, w1, d1 = _shape(node.input_tensors[0])
        h2, w2, k = out
        weights, biases = conv_params(kernel[1], d1, op.filters, groups=op.groups,
                                      bias=op.use_bias, fh=kernel[0])
        macs = conv_macs(w2, h2, kernel[1], d1, op.filters, groups=op.groups, fh=kernel[0])
        row.update(kernel=kernel, strides=strides, padding=padding, filters=op.filters,
                   weights=weights, biases=biases, macs=macs)
        if op.groups > 1:  # e.g. AlexNet's two-GPU halves: each filter sees D1/groups channels
            row["type"] = f"conv ({op.groups} groups)"
    elif isinstance(op, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)):
        kernel, strides = _ints(op.pool_size), _ints(op.strides)
        row.update(kernel=kernel, strides=strides,
                   padding=_padding(op.padding, node.input_tensors[0], kernel, strides, pad))
    elif isinstance(op, (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)):
        # the lecture writes global pooling as an F x F / 1 pool over the whole map
        row.update(kernel=(first[0], first[1]), strides=(1, 1), padding=((0, 0), (0, 0)))
    elif isinstance(op, keras.layers.Dense):
        n_in = first[-1]
        weights, biases = dense_params(n_in, op.units, bias=op.use_bias)
        row.update(filters=op.units, weights=weights, biases=biases,
                   macs=dense_macs(n_in, op.units, positions=math.prod(first[:-1])))
    elif isinstance(op, keras.layers.BatchNormalization):
        weights, _ = batch_norm_params(node.input_tensors[0].shape[op.axis], scale=op.scale,
                                       center=op.center)
        row.update(weights=weights)
    elif isinstance(op, keras.layers.ZeroPadding2D):  # one not folded into a conv or pool
        row.update(padding=tuple(tuple(int(v) for v in side) for side in op.padding))
    elif hasattr(op, "lecture_arithmetic"):  # a custom layer that states its own row
        row.update(op.lecture_arithmetic(first, out))
    else:  # any other layer with parameters: show them all as weights
        row.update(weights=trainable)
    return LayerRow(**row)


def _ints(value) -> Pair:
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    return int(pair[0]), int(pair[1])


def _padding(mode, tensor, kernel, strides, extra):
    """Total ((top, bottom), (left, right)) padding: a folded ZeroPadding2D plus the layer's own."""
    if mode == "same":
        h, w = _shape(tensor)[:2]
        own = (same_padding(h, kernel[0], strides[0]), same_padding(w, kernel[1], strides[1]))
    else:
        own = ((0, 0), (0, 0))
    return tuple((a[0] + b[0], a[1] + b[1]) for a, b in zip(extra, own))


def table_totals(rows: list[LayerRow], model=None) -> Totals:
    """Sum the table's weights, biases and MACs; with ``model``, add Keras' own counts."""
    trainable = non_trainable = None
    if model is not None:
        trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
        non_trainable = sum(math.prod(w.shape) for w in model.non_trainable_weights)
    return Totals(sum(r.weights for r in rows), sum(r.biases for r in rows),
                  sum(r.macs for r in rows), trainable, non_trainable)


# --- sizes of an input the model was not built for ----------------------------------------------

def trace_sizes(model, height: int, width: int) -> dict[str, tuple[int, int] | None]:
    """Push an ``height x width`` input through ``model``'s layers with the lecture's formula.

    Returns each layer's output size (``None`` once the volume is flattened or pooled away);
    raises :class:`SizeError` naming the first layer the input is too small for. The model is
    built at any size that works; only its layers' F, S and P are read.
    """
    import keras

    order, _ = _graph(model)
    sizes: dict[int, tuple[int, int] | None] = {}
    result = {}
    for node in order:
        op = node.operation
        if node.is_input:
            size = (height, width)
        else:
            known = [sizes.get(id(t)) for t in node.input_tensors]
            size = next((s for s in known if s is not None), None)
            if size is not None:
                size = _next_size(op, size, keras)
            if len(node.outputs[0].shape) != 4:  # flattened, pooled globally, or a vector
                size = None
        for t in node.outputs:
            sizes[id(t)] = size
        result[op.name] = size
    return result


def _next_size(op, size, keras):
    (h, w) = size
    if isinstance(op, keras.layers.ZeroPadding2D):
        (t, b), (l, r) = op.padding
        return h + t + b, w + l + r
    if _is_spatial(op):
        kernel = _ints(getattr(op, "kernel_size", None) or op.pool_size)
        strides = _ints(op.strides)
        dilation = _ints(getattr(op, "dilation_rate", 1))
        if op.padding == "same":
            return math.ceil(h / strides[0]), math.ceil(w / strides[1])
        return tuple(output_size(n, dilation[i] * (kernel[i] - 1) + 1, strides[i], 0,
                                 layer=op.name, rounding="floor") for i, n in enumerate((h, w)))
    if isinstance(op, keras.layers.Cropping2D):
        (t, b), (l, r) = op.cropping
        if h - t - b < 1 or w - l - r < 1:
            raise SizeError(f"layer '{op.name}': cropping {op.cropping} leaves nothing of a "
                            f"{w}x{h} input", layer=op.name)
        return h - t - b, w - l - r
    if isinstance(op, keras.layers.UpSampling2D):
        fh, fw = _ints(op.size)
        return h * fh, w * fw
    return h, w


# --- cells as the lecture writes them ------------------------------------------------------

def _uniform(pair):
    if pair is None:
        return None
    return pair[0] if pair[0] == pair[1] else pair


def _fmt_pair(pair) -> str:
    if pair is None:
        return ""
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def _fmt_start(start) -> str:
    """Unit (0, 0)'s centre: ``6.5`` when both axes agree, else ``y,x``."""
    texts = [f"{float(v):g}" for v in start]
    return texts[0] if texts[0] == texts[1] else ",".join(texts)


def _fmt_padding(padding) -> str:
    if padding is None:
        return ""
    sides = [str(a) if a == b else f"{a}/{b}" for a, b in padding]
    return sides[0] if sides[0] == sides[1] else f"{sides[0]},{sides[1]}"


def _fmt_shape(shape) -> str:
    shape = tuple("?" if d is None else d for d in shape)
    if len(shape) == 3:  # Keras stores (H, W, D); the lecture writes W x H x D
        return f"{shape[1]}x{shape[0]}x{shape[2]}"
    return "x".join(map(str, shape))


def _fmt_inputs(shapes, kind) -> str:
    if len(shapes) == 1:
        return _fmt_shape(shapes[0])
    if kind == "concat" and all(len(s) == 3 and s[:2] == shapes[0][:2] for s in shapes):
        h, w = shapes[0][:2]  # the depths the concatenation stacks: 28x28x(64+128+32+32)
        return f"{w}x{h}x({'+'.join(str(s[2]) for s in shapes)})"
    if len(set(shapes)) == 1:
        return f"{len(shapes)} x ({_fmt_shape(shapes[0])})"
    return " + ".join(_fmt_shape(s) for s in shapes)
