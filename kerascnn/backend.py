"""Choosing the Keras backend of a command before Keras is imported.

Keras reads ``KERAS_BACKEND`` once, when it is first imported (importing TensorFlow imports it
too), so ``--backend`` must be applied before any module that imports them. This module imports
neither; :func:`kerascnn.cli.main` calls :func:`select_backend` before it imports a command.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["BACKENDS", "select_backend"]

BACKENDS = ("tensorflow", "jax", "torch")


def select_backend(argv, prog: str) -> str | None:
    """Apply ``--backend NAME`` of ``argv`` (if any) to ``KERAS_BACKEND``; returns it."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--backend", choices=BACKENDS)
    backend = pre.parse_known_args(argv)[0].backend
    if backend is None:
        return None
    if "keras" in sys.modules:
        import keras
        if keras.backend.backend() != backend:
            raise SystemExit(f"{prog}: error: --backend {backend}: Keras is already running on "
                             f"{keras.backend.backend()} in this process; run it in a new process "
                             f"(or set KERAS_BACKEND={backend} before importing keras)")
    os.environ["KERAS_BACKEND"] = backend
    return backend
