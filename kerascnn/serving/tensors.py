"""TF Serving's JSON tensor format (``util/json_tensor.cc``) to and from NumPy.

Request side (serving-protocol.md §1.2): the row format (``instances``, the batch dimension
prepended by the server, an unnamed list only for one-input signatures, named objects otherwise)
and the columnar format (``inputs``, a bare tensor or an object naming every input);
``{"b64": ...}`` for any string input; JSON type checks per dtype (floats take any number,
integer types need JSON integers). Response side (§1.3): ``predictions`` (row) or ``outputs`` (columnar), one output's name
dropped, ``{"b64": ...}`` for string outputs named ``*_bytes``, float32 printed as its shortest
form, ``NaN``/``Infinity`` for non-finite values. Conversions take the fast NumPy route and only
walk the JSON element by element to word an error.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

import numpy as np

from .errors import invalid
from .limits import ServingLimits

__all__ = ["TensorInfo", "parse_json", "signature_name_of", "request_inputs", "format_response",
           "shortest_float32"]


@dataclass(frozen=True)
class TensorInfo:
    """An input or output of a SignatureDef: key, dtype, shape (-1 = any size, None = any rank)."""

    alias: str
    dtype: np.dtype          # object for DT_STRING
    dtype_name: str          # TF Serving's spelling: float, uint8, string, ...
    shape: tuple | None

    @property
    def is_string(self) -> bool:
        return self.dtype == np.dtype(object)

    def shape_text(self) -> str:
        if self.shape is None:
            return "<unknown rank>"
        return "[" + ",".join(map(str, self.shape)) + "]"

    def check_shape(self, shape) -> str | None:
        """A message if ``shape`` cannot be fed to this input, else None."""
        if self.shape is None:
            return None
        if len(shape) != len(self.shape) or any(d not in (-1, s)
                                                for d, s in zip(self.shape, shape)):
            return (f"input '{self.alias}' has shape [{','.join(map(str, shape))}] but the "
                    f"signature expects {self.shape_text()} (-1 = any size; the first dimension is "
                    "the batch)")
        return None


# --- request -------------------------------------------------------------------------------------

_RAPIDJSON = {"Expecting value": "Invalid value.",
              "Extra data": "The document root must not be followed by other values.",
              "Unterminated string starting at": "Missing a closing quotation mark in string.",
              "Expecting ',' delimiter": "Missing a comma or ']' after an array element.",
              "Expecting property name enclosed in double quotes":
                  "Missing a name for object member."}


_DEFAULT_LIMITS = ServingLimits()


def parse_json(body: bytes, limits: ServingLimits = _DEFAULT_LIMITS):
    """Parse a request body; errors read like TF Serving's (rapidjson) ones.

    The nesting depth is checked first (``limits.max_json_depth``), so parsing and the tensor
    conversions that walk the document never recurse deeper than that.
    """
    if not body.strip():
        raise invalid("JSON Parse error: The document is empty")
    limits.check_json_depth(body)
    try:
        doc = json.loads(body)
    except UnicodeDecodeError as exc:
        raise invalid("JSON Parse error: Invalid encoding in string. at offset: "
                      f"{exc.start}") from None
    except json.JSONDecodeError as exc:
        message = _RAPIDJSON.get(exc.msg, exc.msg)
        raise invalid(f"JSON Parse error: {message} at offset: {exc.pos}") from None
    except RecursionError:  # not reached below the depth limit; kept as a last line of defence
        raise invalid("JSON Parse error: the document nests too deeply (--max-json-depth)") \
            from None
    except ValueError as exc:  # e.g. an integer literal over Python's 4300-digit limit
        raise invalid(f"JSON Parse error: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {_short(doc)} Is not object")
    return doc


def signature_name_of(doc: dict) -> str:
    """The requested signature; empty or absent means ``serving_default``."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid(f"JSON Value: {_short(doc)} 'signature_name' key must be a string value.")
    return name or "serving_default"


def request_inputs(doc: dict, inputs: dict[str, TensorInfo]) -> tuple[dict[str, np.ndarray], bool]:
    """Input arrays of a predict request and whether it used the row (``instances``) format."""
    has_rows, has_cols = "instances" in doc, "inputs" in doc
    if has_rows and has_cols:
        raise invalid(f"JSON Value: {_short(doc)} Not formatted correctly expecting only one of "
                      "'inputs' or 'instances' keys to exist")
    if not (has_rows or has_cols):
        raise invalid("Missing 'inputs' or 'instances' key")
    if has_rows:
        return _from_instances(doc["instances"], inputs), True
    return _from_columns(doc["inputs"], inputs), False


def _is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _from_instances(instances, inputs):
    if not isinstance(instances, list):
        raise invalid(f"JSON Value: {_short(instances)} Excepting 'instances' to be an list/array")
    if not instances:
        raise invalid("No values in 'instances' array")
    named = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if not named:
        if len(inputs) != 1:
            raise invalid("instances is a plain list, but expecting list of objects as multiple "
                          "input tensors required as per tensorinfo_map")
        (info,) = inputs.values()
        return {info.alias: _to_array(instances, info, rows=True)}
    expected = set(inputs)
    for i, item in enumerate(instances):
        if not isinstance(item, dict) or _is_b64(item):
            raise invalid(f"Failed to process element: {i} of 'instances' list. JSON Value: "
                          f"{_short(item)} Is not object (expecting named inputs "
                          f"{sorted(expected)}, like element 0)")
        if set(item) != expected:
            missing, extra = sorted(expected - set(item)), sorted(set(item) - expected)
            raise invalid(f"Failed to process element: {i} of 'instances' list. JSON object: "
                          f"{_short(item)} keys do not match the signature inputs: missing "
                          f"{missing}, unexpected {extra}")
    return {name: _to_array([item[name] for item in instances], info, rows=True)
            for name, info in inputs.items()}


def _from_columns(columns, inputs):
    if isinstance(columns, dict) and not _is_b64(columns):
        missing = [name for name in inputs if name not in columns]
        if missing:
            raise invalid(f"Missing named input: {missing[0]} in 'inputs' object.")
        extra = sorted(set(columns) - set(inputs))
        if extra:
            raise _input_count_error(columns, inputs)
        return {name: _to_array(columns[name], info, rows=False) for name, info in inputs.items()}
    if len(inputs) != 1:
        raise invalid(f"JSON Value: {_short(columns)} Expecting an object naming the "
                      f"{len(inputs)} inputs {sorted(inputs)} in 'inputs'")
    (info,) = inputs.values()
    return {info.alias: _to_array(columns, info, rows=False)}


def _input_count_error(sent, inputs):
    sent, wanted = set(sent), set(inputs)
    return invalid(f"input size does not match signature: {len(sent)}!={len(wanted)} "
                   f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
                   f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                   f"Missing but required: {{{','.join(sorted(wanted - sent))}}}.")


def _to_array(value, info: TensorInfo, *, rows: bool) -> np.ndarray:
    """Convert the JSON value of one input (batch dimension included) to an array of its dtype."""
    if info.is_string:
        flat, shape = _walk(value, info, rows)
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(shape)
    try:
        arr = np.asarray(value)
    except (ValueError, OverflowError):
        arr = None
    if arr is None or not _numeric_kind_ok(arr.dtype, info):
        _walk(value, info, rows)  # raises with TF Serving's wording
        raise invalid(f"JSON Value: {_short(value)} cannot be read as a {info.dtype_name} tensor")
    if info.dtype.kind in "iu":
        limits = np.iinfo(info.dtype)
        if arr.size and (arr.min() < limits.min or arr.max() > limits.max):
            bad = arr.flat[int(np.argmax((arr < limits.min) | (arr > limits.max)))]
            raise invalid(f"JSON Value: {bad} is out of range for type: {info.dtype_name} "
                          f"({limits.min}..{limits.max})")
    return arr.astype(info.dtype, copy=False)


def _numeric_kind_ok(dtype: np.dtype, info: TensorInfo) -> bool:
    if info.dtype.kind == "b":
        return dtype.kind == "b"
    if info.dtype.kind in "iu":
        return dtype.kind in "iu"
    return dtype.kind in "iuf"  # floats accept any JSON number, ints included


_JSON_TYPE = {type(None): "Null", dict: "Object", list: "Array", str: "String", int: "Number",
              float: "Number"}


def _leaf_error(value, info: TensorInfo) -> str | None:
    if info.is_string:
        if isinstance(value, str):
            return None
        if _is_b64(value):
            return None if isinstance(value["b64"], str) else "b64"
    elif isinstance(value, bool):
        if info.dtype.kind == "b":
            return None
    elif isinstance(value, int):
        if info.dtype.kind in "iuf":
            return None
    elif isinstance(value, float):
        if info.dtype.kind == "f":
            return None
    if isinstance(value, bool):
        kind = "True" if value else "False"
    else:
        kind = _JSON_TYPE.get(type(value), "Value")
    return (f"JSON Value: {_short(value)} Type: {kind} is not of expected type: "
            f"{info.dtype_name}")


def _walk(value, info: TensorInfo, rows: bool):
    """Flatten ``value`` checking types and rectangularity; return (leaves, shape) or raise."""
    def walk(v, path):
        if isinstance(v, list):
            parts = [walk(child, path + (i,)) for i, child in enumerate(v)]
            odd = next((i for i, p in enumerate(parts) if p[1] != parts[0][1]), None)
            if odd is not None:
                raise _Ragged(path, parts[0][1], parts[odd][1], odd)
            shape = (len(v),) + (parts[0][1] if parts else ())
            return [leaf for p in parts for leaf in p[0]], shape
        message = _leaf_error(v, info)
        if message:
            raise _BadLeaf(path, message)
        return [_decode_leaf(v, path) if info.is_string else v], ()

    try:
        return walk(value, ())
    except _BadLeaf as exc:
        raise invalid(_where(exc.path, rows) + exc.message) from None
    except _Ragged as exc:
        if rows and len(exc.path) == 0:
            raise invalid(f"Failed to process element: {exc.index} of "
                          f"'instances' list. Error: Expecting shape {list(exc.expected)} but got: "
                          f"{list(exc.got)}") from None
        raise invalid(_where(exc.path, rows) + "Encountered list at unexpected size/level: "
                      f"expecting shape {list(exc.expected)} but got: {list(exc.got)}") from None


class _BadLeaf(Exception):
    def __init__(self, path, message):
        self.path, self.message = path, message


class _Ragged(Exception):
    def __init__(self, path, expected, got, index):
        self.path, self.expected, self.got, self.index = path, expected, got, index


def _where(path, rows):
    if rows and path:
        return (f"Failed to process element: {path[0]} of 'instances' list. Error: "
                "INVALID_ARGUMENT: ")
    return ""


def _decode_leaf(value, path):
    if isinstance(value, str):
        return value.encode("utf-8")
    text = value["b64"]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _BadLeaf(path, f"Unable to base64 decode: {_short(text)} (use the standard base64 "
                             "alphabet with + and /, not the URL-safe one)") from None


def _short(value, limit: int = 120) -> str:
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# --- response ------------------------------------------------------------------------------------

def format_response(outputs: dict[str, np.ndarray], rows: bool) -> bytes:
    """The JSON body of a predict response: ``predictions`` (row requests) or ``outputs``."""
    values = {name: _to_json(name, arr) for name, arr in outputs.items()}
    if not rows:
        body = next(iter(values.values())) if len(values) == 1 else values
        return json.dumps({"outputs": body}, separators=(",", ":")).encode()
    if len(values) == 1:
        return json.dumps({"predictions": next(iter(values.values()))},
                          separators=(",", ":")).encode()
    sizes = {name: (arr.shape[0] if arr.ndim else None) for name, arr in outputs.items()}
    first = next(iter(sizes.values()))
    for name, size in sizes.items():
        if size is None or size != first:
            raise invalid(f"Tensor name: {name} has inconsistent batch size: {size} expecting: "
                          f"{first}")
    rows_out = [{name: values[name][i] for name in values} for i in range(first)]
    return json.dumps({"predictions": rows_out}, separators=(",", ":")).encode()


def _to_json(name: str, arr: np.ndarray):
    arr = np.asarray(arr)
    if arr.dtype == object or arr.dtype.kind in "SU":
        as_b64 = name.endswith("_bytes")
        flat = [_string_out(v, as_b64) for v in arr.ravel().tolist()]
        return np.array(flat, dtype=object).reshape(arr.shape).tolist() if arr.ndim else flat[0]
    if arr.dtype == np.float32 or arr.dtype == np.float16:
        return shortest_float32(arr.astype(np.float32)).tolist()
    return arr.tolist()


def _string_out(value, as_b64: bool):
    raw = value if isinstance(value, bytes) else str(value).encode()
    if as_b64:
        return {"b64": base64.b64encode(raw).decode("ascii")}
    return raw.decode("utf-8", errors="replace")


def shortest_float32(x: np.ndarray) -> np.ndarray:
    """float64 values that print as float32's short decimal form (``0.2``, not ``0.200000003``).

    TF Serving writes floats with 6 significant digits when that round-trips and with 9 otherwise;
    ``n / 10**k`` is the double nearest that decimal, so Python's ``repr`` prints it the same way.
    """
    shape = np.shape(x)
    x = np.asarray(x, dtype=np.float32).ravel()
    out = x.astype(np.float64)
    todo = np.flatnonzero(np.isfinite(x) & (x != 0))
    for digits in (6, 9):
        if not todo.size:
            break
        v = out[todo]
        k = digits - 1 - np.floor(np.log10(np.abs(v))).astype(np.int64)
        scale = np.power(10.0, np.abs(k))  # exact up to 1e22
        n = np.where(k >= 0, np.round(v * scale), np.round(v / scale))
        r = np.where(k >= 0, n / scale, n * scale)
        good = (np.abs(k) <= 22) & (r.astype(np.float32) == x[todo])
        out[todo[good]] = r[good]
        todo = todo[~good]
    for i in todo:  # tiny or huge values: rare, so the per-element route is fine
        out[i] = float(np.format_float_scientific(x[i], unique=True))
    return out.reshape(shape)
