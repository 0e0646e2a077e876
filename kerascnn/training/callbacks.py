"""The callbacks of a training run, in the order that keeps a kill harmless.

``EpochLog`` puts each epoch's learning rate and wall time into the logs (so into history.csv);
``AtomicCheckpoint`` is ModelCheckpoint writing through a temporary file; then the recipe's
schedule, TensorBoard, CSVLogger and ``BackupAndRestore`` (which marks the epoch done last).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..files import write_json
from ..recipes import Recipe, learning_rate_at

__all__ = ["fit_callbacks", "best_epoch"]


def _callbacks_module():
    import keras

    class EpochLog(keras.callbacks.Callback):
        """Puts the epoch's learning rate and wall time (and ``fields``, numbers such as a
        transfer run's phase) into the logs, and so into history.csv."""

        def __init__(self, fields=None):
            super().__init__()
            self.times, self.steps = [], []
            self.fields = dict(fields or {})

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            elapsed = time.perf_counter() - self._start
            self.times.append(elapsed)
            if logs is not None:
                lr = self.model.optimizer.learning_rate
                logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
                logs["epoch_time_s"] = elapsed
                logs.update(self.fields)

    class AtomicCheckpoint(keras.callbacks.ModelCheckpoint):
        """ModelCheckpoint that writes a temporary file and renames it into place, so a kill never
        leaves half a checkpoint; the best value is kept beside it so a resumed run compares
        against it instead of starting from scratch."""

        def __init__(self, path: Path, *, monitor: str, save_best_only: bool):
            self.final = Path(path)
            self.record = self.final.with_suffix(".json")
            best = None
            if save_best_only and self.record.exists():
                best = json.loads(self.record.read_text()).get("value")
            super().__init__(str(self.final.with_name(f".{self.final.stem}.tmp.keras")),
                             monitor=monitor, mode="max", save_best_only=save_best_only,
                             initial_value_threshold=best, verbose=0)

        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            tmp = Path(self.filepath)
            if tmp.exists():
                os.replace(tmp, self.final)
                value = (logs or {}).get(self.monitor)
                write_json(self.record, {"epoch": epoch + 1, "monitor": self.monitor,
                                         "value": None if value is None else float(value)})

    return EpochLog, AtomicCheckpoint


def _schedule_callback(recipe: Recipe, monitor: str, epoch_offset: int = 0):
    import keras
    if recipe.schedule == "plateau":
        args = recipe.schedule_args
        return keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode="max",
                                                 factor=args.get("factor", 0.1),
                                                 patience=args.get("patience", 5), min_lr=1e-6,
                                                 verbose=1)
    if recipe.schedule == "cosine":  # per step, inside the optimizer (see _optimizer)
        return None
    if recipe.schedule == "constant" and not recipe.warmup_epochs:
        return None
    return keras.callbacks.LearningRateScheduler(
        lambda epoch, lr: learning_rate_at(recipe, epoch - epoch_offset, recipe.epochs))


def fit_callbacks(run_dir: Path, recipe: Recipe, monitor: str, notes: list, extra, *,
                  epoch_offset: int = 0, fields: dict | None = None) -> tuple:
    """The run's callbacks, in the order that keeps a kill harmless: the epoch's history row and
    checkpoints are written before BackupAndRestore marks the epoch done. A phase of a transfer
    run starts at ``epoch_offset`` (its schedule counts from there) and logs ``fields``."""
    import keras
    EpochLog, AtomicCheckpoint = _callbacks_module()
    epoch_log = EpochLog(fields)
    schedule = _schedule_callback(recipe, monitor, epoch_offset)
    checkpoints = run_dir / "checkpoints"
    return [epoch_log, keras.callbacks.TerminateOnNaN(), *([schedule] if schedule else []),
            *_tensorboard(run_dir / "logs", notes),
            keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
            AtomicCheckpoint(checkpoints / "best.keras", monitor=monitor, save_best_only=True),
            AtomicCheckpoint(checkpoints / "last.keras", monitor=monitor, save_best_only=False),
            keras.callbacks.BackupAndRestore(str(checkpoints / "backup"), double_checkpoint=True),
            *extra], epoch_log


def _tensorboard(log_dir: Path, notes: list) -> list:
    """Keras' TensorBoard callback, when the ``tensorboard`` package (which writes the summaries)
    is installed; TensorFlow 2.21 no longer pulls it in."""
    import importlib.util

    import keras
    if importlib.util.find_spec("tensorboard") is None:
        notes.append("TensorBoard logs off: pip install tensorboard to get them")
        return []
    return [keras.callbacks.TensorBoard(str(log_dir), write_graph=False)]


def best_epoch(path: Path) -> dict:
    if not path.exists():
        return {}
    record = json.loads(path.read_text())
    return {"best_epoch": record.get("epoch"), "best_val_top1": record.get("value")}
