"""``python -m kerascnn inspect``: the lecture's size-arithmetic table of any model.

The table itself is computed by :mod:`kerascnn.layer_table` (its conventions are written there);
this module resolves MODEL (a registered name, a ``.keras`` file, a run directory), renders the
table as text, CSV, Markdown or rich, and is the command. Only :func:`run` prints.
"""

from __future__ import annotations

import ast
import csv
import io
import sys
from pathlib import Path

from .arithmetic import SizeError
from . import layer_table as _table
from .layer_table import (COLUMNS, RF_COLUMNS, LayerRow, Totals, _fmt_shape,  # noqa: F401
                          _shape, human, table_totals, trace_sizes)

__all__ = ["LayerRow", "Totals", "layer_table", "table_totals", "trace_sizes", "resolve_model",
           "to_csv", "to_markdown", "to_rich", "COLUMNS", "RF_COLUMNS", "columns", "add_arguments",
           "run", "human"]

# --- resolving MODEL ----------------------------------------------------------------------------

def resolve_model(spec, *, input_shape=None, num_classes=None, **options):
    """A built ``keras.Model`` from a registered name, a ``.keras`` file or a run directory
    (what MODEL names is :func:`kerascnn.sources.resolve`'s to say).

    ``input_shape``, ``num_classes`` and ``options`` apply to registered names; ``num_classes``
    defaults to the family builder's own default (10 for LeNet-5 and the CIFAR ResNets, 1000 for
    the ImageNet networks). An input too small for the network raises :class:`SizeError` naming
    the first layer it does not fit. A Keras model passes through unchanged.
    """
    import keras

    from .sources import resolve

    if isinstance(spec, keras.Model):
        return spec
    ref = resolve(spec)
    if ref.kind != "name":
        if input_shape is not None or num_classes is not None or options:
            raise ValueError("--input-shape, --num-classes and model options apply to registered "
                             "model names; a saved model keeps the shape it was built with")
        ref.require("run", "keras", command="inspect")
        return _load(ref.path)
    from .registry import get_model, model_info

    info = model_info(ref.spec)
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


# --- the table, with receptive fields on request -----------------------------------------------

def layer_table(model, *, all_layers: bool = False,
                receptive_field: bool = False) -> list[LayerRow]:
    """:func:`kerascnn.layer_table.layer_table`; with ``receptive_field`` each row's ``field`` is
    its layer's receptive field (:func:`kerascnn.receptive_fields.receptive_fields`: size, jump,
    start; None after a layer without one, such as a transposed convolution), and the renderers
    below add the :data:`RF_COLUMNS`."""
    rows = _table.layer_table(model, all_layers=all_layers)
    if not receptive_field:
        return rows
    from dataclasses import replace

    from .receptive_fields import receptive_fields
    fields = receptive_fields(model)
    return [replace(row, field=fields.get(row.name)) for row in rows]


def has_fields(rows) -> bool:
    """Whether ``rows`` carry receptive fields (``layer_table(..., receptive_field=True)``)."""
    return any(row.field is not None for row in rows)


def columns(rows) -> tuple[str, ...]:
    """The headings of ``rows``' table: :data:`COLUMNS`, then :data:`RF_COLUMNS` with fields."""
    return COLUMNS + RF_COLUMNS if has_fields(rows) else COLUMNS


# --- rendering ----------------------------------------------------------------------------------

_NOTE = ("F kernel, S stride, P zero padding (before/after when uneven), K filters or units; "
         "MACs count conv and fc layers only")
_BN_NOTE = "batch norm rows count gamma and beta as weights"
_RF_NOTE = ("RF receptive field size r, jump j (cumulative stride) and start (the centre of "
            "unit (0,0)'s field; negative: in the padding), in input pixels")


def _notes(rows) -> list[str]:
    notes = [_NOTE]
    if any(r.layer_class == "BatchNormalization" for r in rows):
        notes.append(_BN_NOTE)
    if has_fields(rows):
        notes.append(_RF_NOTE)
    return notes


def to_csv(rows: list[LayerRow], totals: Totals | None = None) -> str:
    """The table as CSV (plain integers), ending in a ``total`` row (receptive-field columns
    when the rows carry them)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    fields = has_fields(rows)
    writer.writerow(columns(rows))
    for row in rows:
        writer.writerow(row.cells(fields).values())
    if totals is not None:
        writer.writerow(["total", "", "", "", "", "", "", "", totals.weights, totals.biases,
                         totals.macs] + [""] * (len(RF_COLUMNS) if fields else 0))
    return buffer.getvalue()


_NUMERIC = {"weights", "biases", "MACs", "K"}


def to_markdown(rows: list[LayerRow], totals: Totals | None = None) -> str:
    """The table as a Markdown pipe table, followed by the totals line and notes."""
    def fmt(key, value):
        return f"{value:,}" if isinstance(value, int) and key != "K" else str(value)

    heads, fields = columns(rows), has_fields(rows)
    lines = ["| " + " | ".join(heads) + " |",
             "|" + "|".join("---:" if c in _NUMERIC or c in RF_COLUMNS else "---"
                            for c in heads) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(k, v) for k, v in row.cells(fields).items()) + " |")
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
    fields = has_fields(rows)
    for column in columns(rows):
        right = column in _NUMERIC | {"F", "S", "P"} | set(RF_COLUMNS)
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) and k != "K" else str(v)
                        for k, v in row.cells(fields).items()))
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
    parser.add_argument("--receptive-field", action="store_true",
                        help="add each layer's receptive field: size r, jump j (cumulative "
                             "stride) and start (centre of unit (0,0)'s field), in input pixels")
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
    from .errors import UserError
    from .registry import UnknownModelError

    options = {key[len("option_"):]: value for key, value in vars(args).items()
               if key.startswith("option_") and value is not None}
    try:
        model = resolve_model(args.model, input_shape=args.input_shape,
                              num_classes=args.num_classes, **options)
        rows = layer_table(model, all_layers=args.all_layers,
                           receptive_field=args.receptive_field)
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
