"""Training on real data: ``model.fit`` with the papers' recipes, a run directory, evaluation.

:func:`train` builds the network with :func:`kerascnn.get_model` (uint8 input, the dataset's
scaling inside the model), feeds it :mod:`kerascnn.data` pipelines and trains it with Keras
callbacks: checkpoints (best and last), ``BackupAndRestore`` (re-running the same command after a
kill continues at the first unfinished epoch), TensorBoard, CSV history, the recipe's schedule and
``TerminateOnNaN``. Everything lands in one run directory::

    RUN_DIR/config.json        what was trained, on what, how (the recipe), versions
    RUN_DIR/model.keras        the inference model: one output `predictions`, uint8 `image` input
    RUN_DIR/metrics.json       validation top-1/top-5/loss, per-class accuracy, wall time, images/s
    RUN_DIR/history.csv        one row per epoch (loss, top-1, top-5, learning rate, time)
    RUN_DIR/training_curves.png, RUN_DIR/confusion_matrix.png
    RUN_DIR/report.html        the run report (kerascnn.report) and the PNGs it shows
    RUN_DIR/checkpoints/       best.keras, last.keras (training models), backup/ while running
    RUN_DIR/logs/              TensorBoard

Every file is written to a temporary name and renamed, so none is ever half-written. Under
``tf.distribute`` (``strategy="mirrored"`` or ``"multiworker"`` with ``TF_CONFIG``) the chief writes
RUN_DIR and each other worker its own ``RUN_DIR/workers/<task>-<index>``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import data as data_lib
from .arithmetic import SizeError
from .cli import UserError
from .files import atomic_path, write_json
from .recipes import BUDGET_RECIPES, VARIANTS, Recipe, learning_rate_at, recipe_for

__all__ = ["TrainConfig", "train", "evaluate", "add_arguments", "run", "list_text",
           "SAMPLE_EPOCHS", "SAMPLE_MAX_SIZE", "STRATEGIES"]

#: On the bundled sample the demo trains this many epochs at inputs of at most this size (the
#: paper's size when smaller, the network's minimum when larger), so that
#: ``python train.py --arch googlenet`` finishes in a few minutes on two CPU cores.
SAMPLE_EPOCHS = 6
SAMPLE_MAX_SIZE = 96
STRATEGIES = ("none", "mirrored", "multiworker")


@dataclass
class TrainConfig:
    """What ``train.py`` asks for; ``None`` means the recipe's (the paper's) value."""

    arch: str
    dataset: str | None = None
    data_dir: str | None = None
    val_split: float = 0.1
    epochs: int | None = None
    batch_size: int | None = None
    image_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    weight_decay: float | None = None
    mixed_precision: bool = False
    recipe: str = "paper"
    seed: int = 0
    run_dir: str | None = None
    strategy: str | None = None
    verbose: int | str = "auto"


# --------------------------------------------------------------------------------------------
# Files


def _check_writable(run_dir: Path) -> None:
    """Fail before any work if ``run_dir`` cannot be created or written (nothing is left behind)."""
    probe = run_dir
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"cannot use run directory {run_dir}: {probe} is a file, not a folder; "
                        f"choose another --run-dir")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise UserError(f"run directory {run_dir} is not writable ({exc.strerror or exc}: "
                        f"{probe}); choose another --run-dir") from None


def _spec_slug(spec: str | None) -> str:
    kind, value = data_lib.parse_spec(spec)
    if kind == "sample":
        return "sample"
    if kind == "tfds":
        return value.replace("/", "-")
    path = Path(value).expanduser().resolve()
    name = path.parent.name if path.name in ("train", "val", "validation", "test") else path.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or kind


def _default_run_dir(arch: str, spec: str | None) -> Path:
    """``runs/ARCH-DATA``, or ``-2``, ``-3`` ... past finished runs: re-running the same command
    resumes an interrupted run but never overwrites a finished one."""
    base = Path("runs") / f"{arch}-{_spec_slug(spec)}"
    candidate, n = base, 1
    while (candidate / "metrics.json").exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


# --------------------------------------------------------------------------------------------
# Distribution


def _make_strategy(name: str | None):
    import tensorflow as tf
    if name in (None, "none"):
        return None
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UserError("--strategy multiworker needs the TF_CONFIG environment variable "
                            '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                            '"task": {"type": "worker", "index": 0}}) on every worker')
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        _patch_keras_multiworker()
        return strategy
    raise UserError(f"unknown --strategy {name!r}; use one of {', '.join(STRATEGIES)}")


def _worker_identity(strategy) -> tuple[bool, str | None]:
    """(is_chief, "worker-1" style name) under a multi-worker strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return True, None
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)
    return chief, None if chief else f"{task_type}-{task_id}"


def _patch_keras_multiworker() -> None:
    """Work around keras-team/keras#20585 (open): Keras 3's TF trainer reduces each replica's
    scalar logs with ``strategy.reduce("MEAN", v, axis=0)``, which fails under
    MultiWorkerMirroredStrategy. Reduce scalars with ``axis=None`` (the cross-worker mean)."""
    from keras import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer
    if getattr(tf_trainer.reduce_per_replica, "_kerascnn_patched", False):
        return
    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        multi_worker = tf_trainer._collective_all_reduce_multi_worker(strategy)
        if multi_worker and reduction in ("auto", "mean"):
            return tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None if v.shape.rank == 0 else 0), values)
        return original(values, strategy, reduction)

    reduce_per_replica._kerascnn_patched = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def _symbolic_build_from_first_replica(model, strategy) -> None:
    """The other half of the keras#20585 workaround: Keras builds metrics from a first batch it
    reduces across replicas (which fails for a nested batch under tf.distribute); only shapes
    matter, so use the first local replica's batch."""
    from keras import tree

    def build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0], next(it))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = build


# --------------------------------------------------------------------------------------------
# Callbacks


def _callbacks_module():
    import keras

    class EpochLog(keras.callbacks.Callback):
        """Puts the epoch's learning rate and wall time into the logs (and so into history.csv)."""

        def __init__(self):
            super().__init__()
            self.times, self.steps = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            elapsed = time.perf_counter() - self._start
            self.times.append(elapsed)
            if logs is not None:
                lr = self.model.optimizer.learning_rate
                logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
                logs["epoch_time_s"] = elapsed

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


def _schedule_callback(recipe: Recipe, monitor: str):
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
        lambda epoch, lr: learning_rate_at(recipe, epoch, recipe.epochs))


# --------------------------------------------------------------------------------------------
# Training


def _image_size(cfg: TrainConfig, info, on_sample: bool) -> int:
    paper = info.input_shape[0]
    demo = max(min(paper, SAMPLE_MAX_SIZE), info.min_size)
    size = cfg.image_size or (demo if on_sample else paper)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserError(f"--image-size must be a positive integer, got {size!r}")
    if size < info.min_size:
        raise SizeError(f"{info.name} needs an input of at least {info.min_size}x{info.min_size}, "
                        f"got --image-size {size}; pass --image-size {info.min_size} or larger")
    return size


def _model_options(info, recipe: Recipe, image_size: int) -> tuple[dict, list[str]]:
    """The recipe's model options the network accepts (dropout, aux_logits), and notes."""
    accepted = set(info.accepted_options())
    options, notes = dict(recipe.model_options), []
    if recipe.dropout is not None:
        options["dropout"] = recipe.dropout
    if options.get("aux_logits") and info.family == "googlenet":
        from .models.googlenet import AUX_MIN_SIZE
        if image_size < AUX_MIN_SIZE:
            options["aux_logits"] = False
            notes.append(f"auxiliary classifiers off: they need inputs of at least "
                         f"{AUX_MIN_SIZE}x{AUX_MIN_SIZE}")
    return {k: v for k, v in options.items() if k in accepted}, notes


def _add_weight_decay(model, weight_decay: float) -> int:
    """L2 on every trainable kernel (conv, dense), added to the loss as the papers' SGD did:
    ``wd/2 * ||w||^2`` per kernel. Biases and batch-norm parameters are not decayed. The
    regularizer lives on the variables, not in the layer configs, so the saved model is clean."""
    import keras
    if not weight_decay:
        return 0
    n = 0
    for variable in model.trainable_weights:
        if variable.path.split("/")[-1] in ("kernel", "depthwise_kernel"):
            variable.regularizer = keras.regularizers.L2(weight_decay / 2)
            n += 1
    return n


def _optimizer(recipe: Recipe, steps_per_epoch: int):
    """The recipe's optimizer; the per-step ``cosine`` schedule lives inside it (Keras'
    ``CosineDecay`` with its linear warm-up), the per-epoch schedules in a callback."""
    import keras
    lr = recipe.effective_lr()
    if recipe.schedule == "cosine":
        warmup = recipe.warmup_epochs * steps_per_epoch
        decay = max(1, recipe.epochs * steps_per_epoch - warmup)
        lr = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else lr, decay, alpha=0.0, warmup_target=lr if warmup else None,
            warmup_steps=warmup)
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=recipe.momentum, nesterov=recipe.nesterov)
    return keras.optimizers.Adam(lr)


def _loss(recipe: Recipe):
    import keras
    if recipe.label_smoothing:
        from .losses import SparseSmoothedCrossentropy
        return SparseSmoothedCrossentropy(recipe.label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy()


def _compile(model, recipe: Recipe, num_classes: int, steps_per_epoch: int = 1):
    """Cross-entropy on ``predictions`` (+ the auxiliary heads, weighted per the recipe);
    top-1 and top-5 accuracy."""
    import keras
    k = min(5, num_classes)
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="top1"),
               keras.metrics.SparseTopKCategoricalAccuracy(k=k, name="top5")]
    optimizer = _optimizer(recipe, steps_per_epoch)
    names = list(model.output_names)
    if len(names) == 1:
        model.compile(optimizer, _loss(recipe), metrics=metrics)
        return "val_top1", names
    aux = recipe.aux_loss_weight if recipe.aux_loss_weight is not None else 0.3
    model.compile(optimizer,
                  loss={n: _loss(recipe) for n in names},
                  loss_weights={n: 1.0 if n == "predictions" else aux for n in names},
                  metrics={"predictions": metrics})
    return "val_predictions_top1", names


def _resume_state(run_dir: Path, config: dict) -> int:
    """0 for a fresh run; the first unfinished epoch when a backup of this same run exists."""
    if (run_dir / "metrics.json").exists():
        raise UserError(f"{run_dir} already holds a finished run (metrics.json); choose a new "
                        f"--run-dir (or delete it to train again)")
    backup = run_dir / "checkpoints" / "backup" / "training_metadata.json"
    old_path = run_dir / "config.json"
    if not backup.exists() or not old_path.exists():
        return 0
    old = json.loads(old_path.read_text())
    for key in ("arch", "dataset", "num_classes", "class_names", "input_shape"):
        if old.get(key) != config.get(key):
            raise UserError(f"{run_dir} holds an interrupted run with a different {key} "
                            f"({old.get(key)!r}, now {config.get(key)!r}); re-run its command to "
                            f"resume it, or choose another --run-dir")
    return int(json.loads(backup.read_text()).get("epoch", 0))


def _trim_history(path: Path, before_epoch: int | None = None) -> None:
    """Keep one row per epoch in history.csv (the last written), dropping epochs >= ``before_epoch``
    (a resumed run writes those again)."""
    if not path.exists():
        return
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    fields = list(rows[0].keys())
    by_epoch = {}
    for row in rows:
        epoch = int(float(row["epoch"]))
        if before_epoch is None or epoch < before_epoch:
            by_epoch[epoch] = row
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(by_epoch[e] for e in sorted(by_epoch))


def _versions() -> dict:
    import keras
    import tensorflow as tf

    from . import __version__
    return {"kerascnn": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "keras_backend": keras.backend.backend()}


def train(cfg: TrainConfig, *, callbacks=()) -> dict:
    """Train ``cfg.arch`` on ``cfg.dataset`` per its paper's recipe; returns the run's metrics.

    Errors the user can fix (unknown network or dataset, bad paths, too-small images, unwritable
    run directory) raise :class:`UserError`/:class:`SizeError` before anything is written.
    """
    import keras

    from .registry import get_model, model_info
    info = model_info(cfg.arch)
    kind, _ = data_lib.parse_spec(cfg.dataset)
    on_sample = kind == "sample"
    recipe = recipe_for(info.name, cfg.recipe or "paper").replace(
        lr=cfg.lr, optimizer=cfg.optimizer, weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        epochs=SAMPLE_EPOCHS if cfg.epochs is None and on_sample else cfg.epochs)
    image_size = _image_size(cfg, info, on_sample)
    if cfg.strategy not in (None, *STRATEGIES):
        raise UserError(f"unknown --strategy {cfg.strategy!r}; use one of {', '.join(STRATEGIES)}")
    run_dir = Path(cfg.run_dir) if cfg.run_dir else _default_run_dir(info.name, cfg.dataset)
    _check_writable(run_dir)

    strategy = _make_strategy(cfg.strategy)  # before other TF work, as MultiWorker requires
    chief, worker = _worker_identity(strategy) if strategy else (True, None)
    if worker:
        run_dir = run_dir / "workers" / worker
    verbose = cfg.verbose if chief else 0

    dataset = data_lib.load(cfg.dataset, data_dir=cfg.data_dir, val_split=cfg.val_split,
                            seed=cfg.seed, verbose=bool(verbose))
    channels = dataset.channels
    augment = data_lib.augmentation_for(dataset, image_size, recipe.augment)
    preprocessing = recipe.preprocessing or data_lib.preprocessing_for(dataset.name, channels)
    options, notes = _model_options(info, recipe, image_size)
    input_shape = [image_size, image_size, channels]
    mixed = _mixed_policy(notes) if cfg.mixed_precision else None
    config = {
        "arch": info.name, "num_classes": dataset.num_classes, "class_names": dataset.class_names,
        "input_shape": input_shape, "preprocessing": preprocessing, "model_options": options,
        "dataset": cfg.dataset or "sample",
        "recipe": {**recipe.to_dict(), "augment": augment, "mixed_precision": mixed,
                   "strategy": cfg.strategy or "none", "run_notes": notes},
        "seed": cfg.seed, "epochs": recipe.epochs, "batch_size": recipe.batch_size,
        "versions": _versions(),
        "data": {"name": dataset.name, "train_images": dataset.train.count,
                 "val_images": dataset.val.count, "val_source": dataset.val.source,
                 "val_split": cfg.val_split, "data_dir": cfg.data_dir,
                 "skipped_images": len(dataset.skipped), "native_size": dataset.native_size},
    }
    initial_epoch = _resume_state(run_dir, config)

    if strategy is None:
        keras.backend.clear_session()
    keras.utils.set_random_seed(cfg.seed)
    previous_policy = keras.config.dtype_policy()
    if mixed:
        keras.config.set_dtype_policy(mixed)
    try:
        scope = strategy.scope() if strategy else contextlib.nullcontext()
        with scope:
            try:
                model = get_model(info.name, dataset.num_classes, tuple(input_shape),
                                  preprocessing=preprocessing, **options)
            except ValueError as exc:
                if isinstance(exc, SizeError):
                    raise
                raise UserError(f"cannot build {info.name}: {exc}") from None
            _add_weight_decay(model, recipe.weight_decay)
            monitor, outputs = _compile(model, recipe, dataset.num_classes,
                                        max(1, dataset.train.count // recipe.batch_size))
        if strategy is not None:
            _symbolic_build_from_first_replica(model, strategy)
    finally:
        keras.config.set_dtype_policy(previous_policy)

    train_ds, val_ds, steps = _pipelines(dataset, recipe, image_size, augment, cfg.seed, outputs,
                                         strategy)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    write_json(run_dir / "config.json", config)
    if initial_epoch:
        _trim_history(run_dir / "history.csv", before_epoch=initial_epoch)
        if verbose:
            print(f"resuming {run_dir} at epoch {initial_epoch + 1}/{recipe.epochs}")
    elif (run_dir / "history.csv").exists():
        (run_dir / "history.csv").unlink()  # a run killed before its first epoch ended

    fit_callbacks, epoch_log = _fit_callbacks(run_dir, recipe, monitor, notes, callbacks)
    if verbose:
        print(f"training {info.name} ({model.count_params():,} parameters) on {config['dataset']}: "
              f"{dataset.train.count} train / {dataset.val.count} val images "
              f"({dataset.val.source}), {image_size}x{image_size}x{channels}, {recipe.epochs} "
              f"epochs of {steps} steps x {recipe.batch_size}, {recipe.optimizer} lr "
              f"{recipe.effective_lr():g}, augment {augment}; run dir {run_dir}")
        for note in notes:
            print(f"note: {note}")
    start = time.perf_counter()
    with warnings.catch_warnings():
        # The pipelines are shuffled already, and the validation set (unknown length: unreadable
        # images are dropped) ends where it ends; Keras warns about both.
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
        warnings.filterwarnings("ignore", message=".*ran out of data.*")
        model.fit(train_ds, validation_data=val_ds, epochs=recipe.epochs, steps_per_epoch=steps,
                  callbacks=fit_callbacks, verbose=verbose, shuffle=False)
    fit_time = time.perf_counter() - start
    _trim_history(run_dir / "history.csv")

    inference = _inference_model(model, info.name, dataset.num_classes, input_shape,
                                 preprocessing, options)
    with atomic_path(run_dir / "model.keras", keep_suffix=True) as tmp:
        inference.save(tmp)
    val_pipe = data_lib.pipeline(dataset.val, image_size=image_size, channels=channels,
                                 style=dataset.style, training=False, augment=augment,
                                 batch_size=recipe.batch_size, native_size=dataset.native_size)
    results = _evaluate_model(inference, val_pipe, dataset.class_names)
    # Throughput of the steady state: the first epoch also traces and compiles the step function.
    timed = epoch_log.times[1:] or epoch_log.times
    images_per_s = round(steps * recipe.batch_size * len(timed) / sum(timed), 1) if timed else None
    metrics = {
        "val_top1": results["top1"], "val_top5": results["top5"], "val_loss": results["loss"],
        "top5_k": results["k"], "val_images": results["images"],
        "wall_time_s": round(fit_time, 2),
        "images_per_s": images_per_s,
        "epochs": recipe.epochs, "epochs_this_session": len(epoch_log.times),
        "resumed_from_epoch": initial_epoch or None,
        "skipped_images": len(dataset.skipped), "skipped_examples": dataset.skipped[:20],
        "per_class_accuracy": results["per_class_accuracy"],
        **_best_epoch(run_dir / "checkpoints" / "best.json"),
    }
    if dataset.num_classes <= 100:
        metrics["confusion_matrix"] = results["confusion_matrix"]
    _plots(run_dir, results, dataset.class_names)
    write_json(run_dir / "metrics.json", metrics)
    from .report import write_report_or_warn  # report.html: curves, predictions, model, recipe
    write_report_or_warn(run_dir, model=inference, val_data=val_pipe, metrics=metrics,
                         config=config)
    if verbose:
        print(f"validation top-1 {metrics['val_top1']:.2%}, top-{results['k']} "
              f"{metrics['val_top5']:.2%}, loss {metrics['val_loss']:.4f} "
              f"({fit_time:.0f} s, {metrics['images_per_s']} images/s); saved {run_dir}")
    return {**metrics, "run_dir": str(run_dir)}


def _fit_callbacks(run_dir: Path, recipe: Recipe, monitor: str, notes: list, extra) -> tuple:
    """The run's callbacks, in the order that keeps a kill harmless: the epoch's history row and
    checkpoints are written before BackupAndRestore marks the epoch done."""
    import keras
    EpochLog, AtomicCheckpoint = _callbacks_module()
    epoch_log = EpochLog()
    schedule = _schedule_callback(recipe, monitor)
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


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX, read from
    /proc/cpuinfo). Elsewhere oneDNN emulates it, several times slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def _mixed_policy(notes: list | None = None) -> str | None:
    """float16 on GPUs; bfloat16 on CPUs that compute it natively (no loss scaling needed); on
    other CPUs None (float32), with a note: emulated bfloat16 measured 5x slower here."""
    import tensorflow as tf
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    if cpu_has_bfloat16():
        return "mixed_bfloat16"
    if notes is not None:
        notes.append("--mixed-precision: this CPU has no native bfloat16 (no avx512_bf16/amx_bf16 "
                     "in /proc/cpuinfo), where emulated bfloat16 trains ~5x slower; training in "
                     "float32")
    return None


def _pipelines(dataset, recipe, image_size, augment, seed, outputs, strategy):
    import tensorflow as tf
    common = dict(image_size=image_size, channels=dataset.channels, style=dataset.style,
                  augment=augment, batch_size=recipe.batch_size, seed=seed,
                  native_size=dataset.native_size)
    train_ds = data_lib.pipeline(dataset.train, training=True, repeat=True, drop_remainder=True,
                                 **common)
    val_ds = data_lib.pipeline(dataset.val, training=False, **common)
    if len(outputs) > 1:  # GoogLeNet's auxiliary heads learn the same labels
        def to_outputs(x, y):
            return x, {name: y for name in outputs}
        train_ds = train_ds.map(to_outputs)
        val_ds = val_ds.map(to_outputs)
    if strategy is not None:
        options = tf.data.Options()
        policy = tf.data.experimental.AutoShardPolicy.DATA  # sources are tensors, not files
        options.experimental_distribute.auto_shard_policy = policy
        train_ds, val_ds = train_ds.with_options(options), val_ds.with_options(options)
    steps = max(1, dataset.train.count // recipe.batch_size)
    return train_ds, val_ds, steps


def _inference_model(model, arch, num_classes, input_shape, preprocessing, options):
    """A float32 copy of the trained network with one output, ``predictions`` (GoogLeNet's
    auxiliary heads dropped, mixed precision undone), weights copied layer by layer."""
    from .registry import get_model
    fresh = get_model(arch, num_classes, tuple(input_shape), preprocessing=preprocessing,
                      **{k: v for k, v in options.items() if k != "aux_logits"})
    for layer in fresh.layers:
        if layer.weights:
            layer.set_weights([np.asarray(w) for w in model.get_layer(layer.name).get_weights()])
    return fresh


def _best_epoch(path: Path) -> dict:
    if not path.exists():
        return {}
    record = json.loads(path.read_text())
    return {"best_epoch": record.get("epoch"), "best_val_top1": record.get("value")}


# --------------------------------------------------------------------------------------------
# Evaluation


def _evaluate_model(model, dataset, class_names, label_map=None) -> dict:
    """Top-1, top-k (k = min(5, classes)), loss, per-class accuracy and confusion matrix of
    ``model`` (probabilities out) over a batched ``(image, label)`` dataset."""
    num_classes = len(class_names)
    probs, labels = [], []
    for x, y in dataset:
        # NumPy in: JAX's jitted predict takes no tf.Tensor (train.py on KERAS_BACKEND=jax)
        probs.append(np.asarray(model.predict_on_batch(np.asarray(x)), np.float64))
        labels.append(np.asarray(y))
    probs = np.concatenate(probs) if probs else np.zeros((0, num_classes))
    labels = np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64)
    if label_map is not None:
        labels = label_map[labels]
    k = min(5, num_classes)
    top = np.argsort(-probs, axis=1)[:, :k]
    hit1 = top[:, 0] == labels
    hitk = (top == labels[:, None]).any(axis=1)
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))))
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, top[:, 0]), 1)
    support = confusion.sum(axis=1)
    per_class = {name: (float(confusion[i, i] / support[i]) if support[i] else None)
                 for i, name in enumerate(class_names)}
    return {"top1": float(hit1.mean()) if len(labels) else 0.0,
            "top5": float(hitk.mean()) if len(labels) else 0.0, "k": k, "loss": loss,
            "images": int(len(labels)), "per_class_accuracy": per_class,
            "confusion_matrix": confusion.tolist()}


def _plots(run_dir: Path, results: dict, class_names) -> None:
    from . import plots
    if (run_dir / "history.csv").exists():
        plots.training_curves(run_dir / "history.csv", run_dir / "training_curves.png")
    plots.confusion_matrix(np.asarray(results["confusion_matrix"]), class_names,
                           run_dir / "confusion_matrix.png",
                           title=f"validation top-1 {results['top1']:.1%}")


def evaluate(run_dir, dataset: str | None = None, *, data_dir: str | None = None,
             batch_size: int = 128, save: bool = True, verbose: bool = True) -> dict:
    """Top-1, top-5 and per-class accuracy of a trained run on the validation split of ``dataset``
    (default: the run's own; another spec is matched to the run's classes by name). Saved as
    ``RUN_DIR/evaluation.json`` (``evaluation-<dataset>.json`` for another dataset)."""
    from .registry import load_model
    run_dir = Path(run_dir)
    config_path, model_path = run_dir / "config.json", run_dir / "model.keras"
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a run directory (train one with train.py --arch NAME)")
    if not config_path.exists() or not model_path.exists():
        raise UserError(f"{run_dir} has no config.json and model.keras: it is not a finished run "
                        f"(re-run its training command to finish it)")
    config = json.loads(config_path.read_text())
    spec = dataset or config["dataset"]
    h, w, c = config["input_shape"]
    split_opts = config.get("data", {})
    ds = data_lib.load(spec, data_dir=data_dir or split_opts.get("data_dir"),
                       val_split=split_opts.get("val_split") or 0.1, seed=config.get("seed", 0),
                       channels=c, verbose=verbose)
    names = config["class_names"]
    index = {n: i for i, n in enumerate(names)}
    unknown = [n for n in ds.class_names if n not in index]
    if unknown:
        raise UserError(f"{spec} has classes the run does not know: {', '.join(unknown[:8])}"
                        f"{' ...' if len(unknown) > 8 else ''} (the run's classes: "
                        f"{', '.join(names[:8])}{' ...' if len(names) > 8 else ''})")
    label_map = np.array([index[n] for n in ds.class_names], np.int64)
    model = load_model(model_path)
    augment = data_lib.augmentation_for(ds, h, config.get("recipe", {}).get("augment", "auto"))
    pipe = data_lib.pipeline(ds.val, image_size=h, channels=c, style=ds.style, training=False,
                             augment=augment, batch_size=batch_size, native_size=ds.native_size)
    results = _evaluate_model(model, pipe, names, label_map)
    report = {"run_dir": str(run_dir), "dataset": spec, "split": ds.val.source,
              "top1": results["top1"], "top5": results["top5"], "top5_k": results["k"],
              "loss": results["loss"], "images": results["images"],
              "skipped_images": len(ds.skipped),
              "per_class_accuracy": results["per_class_accuracy"]}
    if save:
        name = "evaluation.json" if dataset in (None, config["dataset"]) else \
            f"evaluation-{_spec_slug(spec)}.json"
        report["saved"] = str(run_dir / name)
        write_json(run_dir / name, report)
    return report


# --------------------------------------------------------------------------------------------
# Command line (train.py is a thin wrapper around these)


def list_text() -> str:
    """What ``train.py --list`` prints: the networks with their recipes, and the dataset forms."""
    from .registry import list_models, model_info
    lines = ["architectures (paper input, smallest input, recipe):"]
    for name in list_models():
        info = model_info(name)
        r = recipe_for(name)
        shape = "x".join(map(str, info.input_shape))
        lines.append(f"  {name:<16} {shape:<12} min {info.min_size:<4} {r.optimizer} lr "
                     f"{r.effective_lr():g}, wd {r.weight_decay:g}, batch {r.batch_size}, "
                     f"{r.epochs} epochs, {r.schedule}")
    lines.append("")
    lines.append("recipes (--recipe NAME):")
    for variant, text in VARIANTS.items():
        lines.append(f"  {variant:<8} {text}")
    for family, r in BUDGET_RECIPES.items():
        lines.append(f"  budget for {family}: {r.optimizer} lr {r.effective_lr():g} "
                     f"{'nesterov ' if r.nesterov else ''}, wd {r.weight_decay:g}, label smoothing "
                     f"{r.label_smoothing:g}, {r.epochs} epochs, {r.schedule} after "
                     f"{r.warmup_epochs} warm-up epoch(s)")
    lines.append("")
    lines.append("datasets (--dataset SPEC):")
    for form, text in data_lib.SPEC_FORMS.items():
        lines.append(f"  {form:<20} {text}")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    parser.add_argument("--arch", help="network to train (see --list)")
    parser.add_argument("--dataset", metavar="SPEC",
                        help="sample (default), tfds:NAME[/CONFIG], folder:PATH or idx:PATH")
    parser.add_argument("--data-dir", help="TFDS data directory holding prepared datasets")
    parser.add_argument("--val-split", type=float, default=0.1,
                        help="held-out fraction per class when the data has no validation split")
    parser.add_argument("--epochs", type=int, help="default: the paper's (6 on the sample)")
    parser.add_argument("--batch-size", type=int, help="global batch size (default: the paper's)")
    parser.add_argument("--image-size", type=int,
                        help=f"square input size (default: the paper's; at most {SAMPLE_MAX_SIZE} "
                             f"on the sample)")
    parser.add_argument("--lr", type=float, help="initial learning rate (default: the paper's)")
    parser.add_argument("--optimizer", choices=["sgd", "adam"], help="default: the paper's (sgd)")
    parser.add_argument("--weight-decay", type=float,
                        help="L2 on conv/dense kernels added to the loss (0 turns it off)")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="bfloat16 compute on CPU, float16 on GPU (weights stay float32)")
    parser.add_argument("--recipe", choices=list(VARIANTS), default="paper",
                        help="paper (default: the paper's recipe, exact) or budget (far fewer "
                             "epochs; CIFAR ResNets; see --list)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="none",
                        help="tf.distribute strategy (multiworker reads TF_CONFIG)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", help="run directory (default: runs/ARCH-DATASET)")
    parser.add_argument("--evaluate", metavar="RUN_DIR",
                        help="evaluate a trained run (on --dataset if given) instead of training")
    parser.add_argument("--list", action="store_true", help="list architectures and dataset forms")


def run(args) -> int:
    if args.list:
        print(list_text())
        return 0
    if args.evaluate:
        report = evaluate(args.evaluate, args.dataset, data_dir=args.data_dir,
                          batch_size=args.batch_size or 128)
        print(f"{report['run_dir']} on {report['dataset']} ({report['split']}, {report['images']} "
              f"images): top-1 {report['top1']:.2%}, top-{report['top5_k']} {report['top5']:.2%}, "
              f"loss {report['loss']:.4f}")
        width = max(len(n) for n in report["per_class_accuracy"])
        for name, acc in report["per_class_accuracy"].items():
            print(f"  {name:<{width}}  {'-' if acc is None else f'{acc:.2%}'}")
        print(f"saved {report['saved']}")
        return 0
    if not args.arch:
        raise UserError("--arch NAME is required (see --list for the networks)")
    cfg = TrainConfig(arch=args.arch, dataset=args.dataset, data_dir=args.data_dir,
                      val_split=args.val_split, epochs=args.epochs, batch_size=args.batch_size,
                      image_size=args.image_size, lr=args.lr, optimizer=args.optimizer,
                      weight_decay=args.weight_decay, mixed_precision=args.mixed_precision,
                      recipe=args.recipe, seed=args.seed, run_dir=args.run_dir, strategy=args.strategy)
    train(cfg)
    return 0
