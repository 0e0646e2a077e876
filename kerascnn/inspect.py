"""``python -m kerascnn inspect``: the lecture's size-arithmetic table of any model.

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

The library part returns data (:func:`layer_table`, :func:`table_totals`, :func:`to_csv`,
:func:`to_markdown`); only :func:`run` prints.
"""

from __future__ import annotations

import ast
import csv
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from .arithmetic import (SizeError, batch_norm_params, conv_macs, conv_params, dense_macs,
                         dense_params, output_size, same_padding)

__all__ = ["LayerRow", "Totals", "layer_table", "table_totals", "trace_sizes", "resolve_model",
           "to_csv", "to_markdown", "to_rich", "COLUMNS", "add_arguments", "run"]

#: Column headings, in the lecture's order (shapes are written width x height x depth).
COLUMNS = ("layer", "type", "F", "S", "P", "K", "input WxHxD", "output WxHxD", "weights", "biases",
           "MACs")

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

    def cells(self) -> dict[str, object]:
        """The row as the table shows it: compact strings for F/S/P/shapes, ints for counts."""
        return {"layer": self.name, "type": self.type, "F": _fmt_pair(self.kernel),
                "S": _fmt_pair(self.strides), "P": _fmt_padding(self.padding),
                "K": "" if self.filters is None else self.filters,
                "input WxHxD": _fmt_inputs(self.inputs or (self.input_shape,), self.type),
                "output WxHxD": _fmt_shape(self.output_shape), "weights": self.weights,
                "biases": self.biases, "MACs": self.macs}


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


def _graph(model):
    """The model's call nodes in topological order, each branch listed whole before the next
    (depth first from the outputs, so an inception module reads 1x1, 3x3 reduce, 3x3, ...)."""
    outputs = getattr(model, "outputs", None)
    if not outputs:
        raise ValueError(f"model {model.name!r} has no graph yet: build it on an input first "
                         f"(a functional model, or a Sequential one that starts with keras.Input)")
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


# --- resolving MODEL ----------------------------------------------------------------------------

def _is_path(spec: str) -> bool:
    """A .keras file or run directory, not a registered name (a name wins over a folder of it)."""
    if spec.endswith(".keras") or "/" in spec or "\\" in spec:
        return True
    from .registry import list_models
    return Path(spec).is_dir() and spec.lower() not in list_models()


def resolve_model(spec, *, input_shape=None, num_classes=None, **options):
    """A built ``keras.Model`` from a registered name, a ``.keras`` file or a run directory.

    ``input_shape``, ``num_classes`` and ``options`` apply to registered names; ``num_classes``
    defaults to the family builder's own default (10 for LeNet-5 and the CIFAR ResNets, 1000 for
    the ImageNet networks). An input too small for the network raises :class:`SizeError` naming
    the first layer it does not fit. A Keras model passes through unchanged.
    """
    import keras

    if isinstance(spec, keras.Model):
        return spec
    spec = str(spec)
    if _is_path(spec):
        if input_shape is not None or num_classes is not None or options:
            raise ValueError("--input-shape, --num-classes and model options apply to registered "
                             "model names; a saved model keeps the shape it was built with")
        return _load(Path(spec))
    from .registry import get_model, model_info

    info = model_info(spec)  # an unknown name raises UnknownModelError with close names
    if num_classes is None:
        num_classes = _builder_default(info, "num_classes", 1000)
    try:
        return get_model(info.name, num_classes, input_shape, **options)
    except SizeError as exc:
        if exc.layer is not None or input_shape is None:
            raise
        located = _locate_size_error(info, tuple(input_shape), num_classes, options)
        raise (located or exc) from None


def _builder_default(info, name, fallback):
    import inspect as pyinspect
    param = pyinspect.signature(info.builder).parameters.get(name)
    default = None if param is None else param.default
    return default if isinstance(default, int) and not isinstance(default, bool) else fallback


def _locate_size_error(info, shape, num_classes, options) -> SizeError | None:
    """Build ``info``'s network at a size it accepts; find the layer ``shape`` is too small for."""
    from .registry import get_model

    if len(shape) != 3:
        return None
    h, w, c = shape
    big = (max(h, info.min_size), max(w, info.min_size), c)
    try:
        trace_sizes(get_model(info.name, num_classes, big, **options), h, w)
    except SizeError as exc:
        m = info.min_size
        return SizeError(f"{info.name} cannot take a {h}x{w}x{c} input: {exc}. The smallest input "
                         f"that works for {info.name} is {m}x{m}; pass --input-shape {m},{m},{c} "
                         f"or larger", layer=exc.layer)
    return None


def _load(path: Path):
    from .registry import load_model

    if path.is_dir():
        candidate = path / "model.keras"
        if not candidate.is_file():
            raise FileNotFoundError(f"{path} has no model.keras: pass a run directory written by "
                                    f"train.py --run-dir, or a .keras file")
        path = candidate
    elif not path.is_file():
        raise FileNotFoundError(f"no such model file or run directory: {path}")
    elif path.suffix != ".keras":
        raise ValueError(f"{path} is not a .keras file: pass a registered model name, a .keras "
                         f"file or a run directory holding model.keras")
    try:
        return load_model(path)
    except Exception as exc:  # a truncated or foreign file: say which, not a deep traceback
        raise ValueError(f"could not load {path} as a Keras model ({type(exc).__name__}: {exc}); "
                         f"re-save it with model.save('model.keras')") from None


# --- rendering ----------------------------------------------------------------------------------

def _uniform(pair):
    if pair is None:
        return None
    return pair[0] if pair[0] == pair[1] else pair


def _fmt_pair(pair) -> str:
    if pair is None:
        return ""
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


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


_NOTE = ("F kernel, S stride, P zero padding (before/after when uneven), K filters or units; "
         "MACs count conv and fc layers only")
_BN_NOTE = "batch norm rows count gamma and beta as weights"


def _notes(rows) -> list[str]:
    notes = [_NOTE]
    if any(r.layer_class == "BatchNormalization" for r in rows):
        notes.append(_BN_NOTE)
    return notes


def to_csv(rows: list[LayerRow], totals: Totals | None = None) -> str:
    """The table as CSV (plain integers), ending in a ``total`` row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(row.cells().values())
    if totals is not None:
        writer.writerow(["total", "", "", "", "", "", "", "", totals.weights, totals.biases,
                         totals.macs])
    return buffer.getvalue()


_NUMERIC = {"weights", "biases", "MACs", "K"}


def to_markdown(rows: list[LayerRow], totals: Totals | None = None) -> str:
    """The table as a Markdown pipe table, followed by the totals line and notes."""
    def fmt(key, value):
        return f"{value:,}" if isinstance(value, int) and key != "K" else str(value)

    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---:" if c in _NUMERIC else "---" for c in COLUMNS) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(k, v) for k, v in row.cells().items()) + " |")
    lines.append("")
    if totals is not None:
        lines.append(totals.line())
        lines.append("")
    lines.extend(f"_{note}._" for note in _notes(rows))
    return "\n".join(lines) + "\n"


def to_rich(rows: list[LayerRow], totals: Totals | None = None, *, title: str | None = None):
    """The table as a :class:`rich.table.Table` (the command prints it)."""
    from rich.table import Table

    caption = "; ".join(_notes(rows))
    table = Table(title=title, caption=caption, caption_justify="left", show_lines=False)
    for column in COLUMNS:
        right = column in _NUMERIC | {"F", "S", "P"}
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) and k != "K" else str(v)
                        for k, v in row.cells().items()))
    if totals is not None:
        table.add_section()
        table.add_row("total", "", "", "", "", "", "", "", f"{totals.weights:,}",
                      f"{totals.biases:,}", f"{totals.macs:,}", style="bold")
    return table


# --- the command --------------------------------------------------------------------------------

def _input_shape(text: str):
    import argparse
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected H,W,C with positive integers, e.g. "
                                         f"224,224,3; got {text!r}")
    return shape


def _positive(text: str) -> int:
    import argparse
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _option_value(text: str):
    """``true``/``false``/``none``, a number or a Python literal; anything else stays a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered == "none":
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _model_options() -> dict[str, list[str]]:
    """Every option any registered model accepts -> the models that accept it."""
    from .registry import list_models, model_info
    found: dict[str, list[str]] = {}
    for name in list_models():
        for option in model_info(name).accepted_options():
            found.setdefault(option, []).append(name)
    return found


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="a registered model name (see kerascnn.list_models()), a .keras file "
                             "or a run directory holding model.keras")
    parser.add_argument("--input-shape", type=_input_shape, metavar="H,W,C",
                        help="build the network for this input (default: the paper's)")
    parser.add_argument("--num-classes", type=_positive, metavar="N",
                        help="classifier width (default: the family's, else 1000)")
    parser.add_argument("--format", choices=("table", "csv", "markdown"), default="table",
                        help="table (default, rich), csv or markdown for notes")
    parser.add_argument("--all-layers", action="store_true",
                        help="also list activations, dropout and preprocessing layers")
    group = parser.add_argument_group(
        "model options", "passed to the family builder; write them after MODEL (--aux-logits, "
        "--stride-on 1x1, --batch-norm false); see kerascnn.model_info(NAME).accepted_options()")
    for option, names in sorted(_model_options().items()):
        flag = "--" + option.replace("_", "-")
        if flag in parser._option_string_actions:
            continue
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        group.add_argument(flag, dest=f"option_{option}", type=_option_value, nargs="?",
                           const=True, default=None, metavar="VALUE", help=f"({shown})")


def run(args) -> int:
    from .cli import UserError
    from .registry import UnknownModelError

    options = {key[len("option_"):]: value for key, value in vars(args).items()
               if key.startswith("option_") and value is not None}
    try:
        model = resolve_model(args.model, input_shape=args.input_shape,
                              num_classes=args.num_classes, **options)
        rows = layer_table(model, all_layers=args.all_layers)
    except (SizeError, UnknownModelError):
        raise
    except ValueError as exc:  # a bad option value or file: one line, exit 2
        raise UserError(str(exc)) from None
    totals = table_totals(rows, model)
    if args.format == "csv":
        sys.stdout.write(to_csv(rows, totals))
    elif args.format == "markdown":
        sys.stdout.write(to_markdown(rows, totals))
    else:
        from rich.console import Console
        from rich.measure import Measurement

        console = Console()
        title = f"{model.name}: input {_fmt_shape(_shape(model.inputs[0]))}"
        table = to_rich(rows, totals, title=title)
        if not console.is_terminal:  # piped or captured: never squeeze the columns
            wide = console.options.update_width(1000)
            console = Console(width=Measurement.get(console, wide, table).maximum)
        console.print(table)
        console.print(totals.line(), soft_wrap=True)
    return 0
