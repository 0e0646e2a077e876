"""Pretrained weights that ship inside the package.

Each entry is ``{model}_{tag}.weights.h5`` beside a ``{model}_{tag}.json`` manifest holding the
build arguments (``num_classes``, ``input_shape``, options), the class names, the validation
accuracy and the provenance of the run that produced it.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent


def available(model: str | None = None) -> dict[str, dict]:
    """Manifests of the shipped weights, keyed ``model:tag``."""
    found = {}
    for manifest in sorted(HERE.glob("*.json")):
        meta = json.loads(manifest.read_text())
        if model is None or meta["model"] == model:
            found[f"{meta['model']}:{meta['tag']}"] = meta
    return found


def load_weights(model, name: str, tag: str) -> None:
    """Load the shipped weights ``tag`` of network ``name`` into ``model`` (built to match)."""
    key = f"{name}:{tag}"
    shipped = available()
    if key not in shipped:
        names = ", ".join(f"weights={k.split(':')[1]!r} for {k.split(':')[0]}" for k in shipped)
        raise ValueError(f"no shipped weights {tag!r} for {name}; available: {names or 'none'}")
    meta = shipped[key]
    model.load_weights(HERE / meta["file"])
