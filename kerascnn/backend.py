"""Starting the frameworks for a command: the Keras backend, and a quiet start.

Keras reads ``KERAS_BACKEND`` once, when it is first imported (importing TensorFlow imports it
too), so ``--backend`` must be applied before any module that imports them. This module imports
neither until asked; :func:`kerascnn.cli.main` calls :func:`select_backend`, then
:func:`start_quietly`, before it imports a command.

TensorFlow's C++ start-up writes lines to the process's stderr before any Python setting can
reach it (absl's "All log messages before absl::InitializeLog()", cudart's "Could not find cuda
drivers", ``E0000 ... failed call to cuInit`` on a machine without a GPU, which reads like a
failure). :func:`start_quietly` imports TensorFlow and lists its devices with file descriptor 2
pointed at /dev/null, then restores it: Python warnings and errors (the ones to act on) still
show. ``--verbose`` or ``KERASCNN_VERBOSE=1`` keeps the framework's own lines.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

__all__ = ["BACKENDS", "VERBOSE_ENV", "select_backend", "start_quietly", "verbose_requested"]

#: Set to 1 to see the frameworks' own start-up logs (as --verbose does).
VERBOSE_ENV = "KERASCNN_VERBOSE"

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


def verbose_requested(argv) -> bool:
    """``--verbose`` among the arguments, or ``KERASCNN_VERBOSE=1`` in the environment."""
    return "--verbose" in argv or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


@contextlib.contextmanager
def _native_stderr_to_devnull():
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def start_quietly(verbose: bool = False) -> None:
    """Import TensorFlow (which every command's data path uses) and initialise its devices,
    without the C++ start-up lines unless ``verbose``."""
    if "tensorflow" in sys.modules:
        return
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        with _native_stderr_to_devnull():
            import tensorflow as tf
            tf.config.list_physical_devices()
    except ImportError:
        pass  # the command that needs it says so, with stderr back in place
