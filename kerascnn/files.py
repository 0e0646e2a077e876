"""Writing files so that nothing is ever half-written: the one home of atomic writes.

Every artefact the project writes (run directories, plots, reports, weights, configs, exports'
small files) goes to a temporary sibling first and is renamed into place, which is atomic on POSIX
file systems: a reader, a TF Serving poller or an interrupted run sees the old file or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

__all__ = ["atomic_path", "atomic_write", "write_json"]


@contextlib.contextmanager
def atomic_path(path, *, keep_suffix: bool = False):
    """Yield a temporary sibling of ``path``; on success rename it to ``path``.

    ``keep_suffix`` keeps the extension (``.model.tmp-123.keras``) for writers that check it.
    """
    path = Path(path)
    suffix = path.suffix if keep_suffix else ""
    tmp = path.with_name(f".{path.stem if keep_suffix else path.name}.tmp-{os.getpid()}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path, data: bytes | str) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)


def write_json(path, obj) -> None:
    """Write ``obj`` as indented, strict JSON (no NaN or Infinity, which JSON does not have: a
    ValueError instead of a file other programs cannot read), atomically."""
    atomic_write(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")
