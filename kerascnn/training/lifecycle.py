"""The life of a training run, top to bottom: plan, build, fit (or resume), finish.

:func:`train` builds the network with :func:`kerascnn.get_model` (uint8 input, the dataset's
scaling inside the model), feeds it :mod:`kerascnn.data` pipelines, fits it with the callbacks of
:mod:`.callbacks` and writes the run directory through :class:`kerascnn.runs.RunDir`::

    RUN_DIR/config.json        RunConfig: what was trained, on what, how, the eval transform
    RUN_DIR/model.keras        the inference model: one output `predictions`, uint8 `image` input
    RUN_DIR/metrics.json       validation top-1/top-5/loss, per-class accuracy, wall time, images/s
    RUN_DIR/history.csv        one row per epoch (loss, top-1, top-5, learning rate, time)
    RUN_DIR/training_curves.png, RUN_DIR/confusion_matrix.png
    RUN_DIR/report.html        the run report (kerascnn.report) and the PNGs it shows
    RUN_DIR/checkpoints/       best.keras, last.keras (training models), backup/ while running
    RUN_DIR/logs/              TensorBoard

Re-running the same command after a kill continues at the first unfinished epoch
(``BackupAndRestore``); after a kill between the last epoch and ``metrics.json`` it only finishes
(evaluation, files, report) from ``checkpoints/last.keras``, training nothing again. Every file is
written to a temporary name and renamed. Under ``tf.distribute`` the chief writes RUN_DIR and each
other worker its own ``RUN_DIR/workers/<task>-<index>``.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path


from .. import data as data_lib
from ..arithmetic import SizeError
from ..errors import UserError
from ..files import atomic_path
from ..recipes import Recipe, recipe_for
from ..runs import STATUS_FINISHED, RunConfig, RunDir
from . import compiling, multiworker, transfer
from .callbacks import best_epoch, fit_callbacks
from .evaluation import evaluate_model, write_plots

__all__ = ["TrainConfig", "train", "default_run_dir", "SAMPLE_EPOCHS",
           "SAMPLE_MAX_SIZE"]

#: On the bundled sample the demo trains this many epochs at inputs of at most this size (the
#: paper's size when smaller, the network's minimum when larger), so that
#: ``python train.py --arch googlenet`` finishes in a few minutes on two CPU cores.
SAMPLE_EPOCHS = 6
SAMPLE_MAX_SIZE = 96


@dataclass
class TrainConfig:
    """What ``train.py`` asks for; ``None`` means the recipe's (the paper's) value."""

    arch: str | None  # None: the network --weights names
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
    # transfer learning (kerascnn.training.transfer): the source, then two phases
    weights: str | None = None
    freeze_epochs: int | None = None
    fine_tune_epochs: int | None = None
    fine_tune_lr: float | None = None
    unfreeze: str | None = None
    fine_tune_bn: str | None = None


    def check(self) -> None:
        """Numbers that cannot be right, named with their flag, before anything runs."""
        for flag, value in (("--lr", self.lr), ("--weight-decay", self.weight_decay),
                            ("--val-split", self.val_split)):
            if value is not None and not math.isfinite(value):
                raise UserError(f"{flag} must be a finite number, got {value!r}")
        for flag, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size),
                            ("--image-size", self.image_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise UserError(f"{flag} must be positive (a whole number), got {value!r}")


# --------------------------------------------------------------------------------------------
# The run directory


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


def default_run_dir(arch: str, spec: str | None) -> Path:
    """``runs/ARCH-DATA``, or ``-2``, ``-3`` ... past finished runs: re-running the same command
    resumes an interrupted run but never overwrites a finished one."""
    base = Path("runs") / f"{arch}-{data_lib.spec_slug(spec)}"
    candidate, n = base, 1
    while (candidate / "metrics.json").exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate



def _resume_state(run: RunDir, config: RunConfig, epochs: int) -> int:
    """Where this run starts: 0 fresh; the first unfinished epoch when a backup of this same
    run exists; ``epochs`` when every epoch was trained but the run was killed before its files
    were written (the backup is gone then: Keras deletes it when fit ends)."""
    if run.is_finished:
        raise UserError(f"{run.path} already holds a finished run (metrics.json); choose a new "
                        f"--run-dir (or delete it to train again)")
    if not run.has_config():
        return 0
    old = run.read_config()
    differs = old.matches(config)
    backup = run.checkpoints / "backup" / "training_metadata.json"
    trained = len(run.read_history()) >= epochs and (run.checkpoints / "last.keras").is_file()
    if differs and (backup.exists() or trained):
        raise UserError(f"{run.path} holds an interrupted run with a different {differs} "
                        f"({getattr(old, differs)!r}, now {getattr(config, differs)!r}); re-run its "
                        f"command to resume it, or choose another --run-dir")
    if backup.exists():
        import json
        return int(json.loads(backup.read_text()).get("epoch", 0))
    return epochs if trained else 0


def _versions() -> dict:
    import keras
    import tensorflow as tf

    from .. import __version__
    return {"kerascnn": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "keras_backend": keras.backend.backend()}


# --------------------------------------------------------------------------------------------
# Sizes, options and pipelines


def _image_size(cfg: TrainConfig, info, on_sample: bool, source_size: int | None = None) -> int:
    paper = info.input_shape[0]
    demo = max(min(paper, SAMPLE_MAX_SIZE), info.min_size)
    size = cfg.image_size if cfg.image_size is not None else \
        source_size or (demo if on_sample else paper)
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
        from ..models.googlenet import AUX_MIN_SIZE
        if image_size < AUX_MIN_SIZE:
            options["aux_logits"] = False
            notes.append(f"auxiliary classifiers off: they need inputs of at least "
                         f"{AUX_MIN_SIZE}x{AUX_MIN_SIZE}")
    return {k: v for k, v in options.items() if k in accepted}, notes

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



# --------------------------------------------------------------------------------------------
# The run


def train(cfg: TrainConfig, *, callbacks=()) -> dict:
    """Train ``cfg.arch`` on ``cfg.dataset`` per its paper's recipe; returns the run's metrics.

    Errors the user can fix (unknown network or dataset, bad paths, too-small images, unwritable
    run directory) raise :class:`UserError`/:class:`SizeError` before anything is written.
    """
    import keras

    from ..registry import get_model, model_info

    # 1. plan: the network, the recipe, the sizes, the run directory
    cfg.check()
    plan = transfer.plan(cfg)  # --weights: the source network, read; the phases
    if plan is None and not cfg.arch:
        raise UserError("--arch NAME is required (or --weights to start from trained weights)")
    info = model_info(plan.source.arch if plan else cfg.arch)
    kind, _ = data_lib.parse_spec(cfg.dataset)
    on_sample = kind == "sample"
    recipe = recipe_for(info.name, cfg.recipe or "paper").replace(
        lr=cfg.lr, optimizer=cfg.optimizer, weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        epochs=plan.epochs if plan else
        SAMPLE_EPOCHS if cfg.epochs is None and on_sample else cfg.epochs)
    image_size = _image_size(cfg, info, on_sample, plan and plan.source.input_shape[0])
    if cfg.strategy not in (None, *multiworker.STRATEGIES):
        raise UserError(f"unknown --strategy {cfg.strategy!r}; use one of "
                        f"{', '.join(multiworker.STRATEGIES)}")
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(info.name, cfg.dataset)
    _check_writable(run_dir)

    strategy = multiworker.make_strategy(cfg.strategy)  # before other TF work, as MWMS requires
    chief, worker = multiworker.worker_identity(strategy) if strategy else (True, None)
    if worker:
        run_dir = run_dir / "workers" / worker
    run = RunDir(run_dir)
    verbose = cfg.verbose if chief else 0

    # 2. the data, and the run's record (the evaluation transform decided here, once)
    dataset = data_lib.load(cfg.dataset, data_dir=cfg.data_dir, val_split=cfg.val_split,
                            seed=cfg.seed, verbose=bool(verbose))
    channels = dataset.channels
    _warn_if_cropped(dataset, image_size)
    augment = data_lib.augmentation_for(dataset, image_size, recipe.augment)
    preprocessing = recipe.preprocessing or data_lib.preprocessing_for(dataset.name, channels)
    options, notes = _model_options(info, recipe, image_size)
    if plan:  # the source's own preprocessing and options; the phases' rates
        plan.check_channels(channels)
        preprocessing, options = plan.source.preprocessing, plan.source.model_options
        plan.set_rates(recipe)
    input_shape = (image_size, image_size, channels)
    mixed = compiling.mixed_policy(notes) if cfg.mixed_precision else None
    config = RunConfig(
        arch=info.name, num_classes=dataset.num_classes, class_names=dataset.class_names,
        input_shape=input_shape, preprocessing=preprocessing, model_options=options,
        dataset=cfg.dataset or "sample",
        recipe={**recipe.to_dict(), "augment": augment, "mixed_precision": mixed,
                "strategy": cfg.strategy or "none", "run_notes": notes},
        seed=cfg.seed, epochs=recipe.epochs, batch_size=recipe.batch_size, versions=_versions(),
        data={"name": dataset.name, "style": dataset.style, "train_images": dataset.train.count,
              "val_images": dataset.val.count, "val_source": dataset.val.source,
              "val_split": cfg.val_split, "data_dir": cfg.data_dir,
              "skipped_images": len(dataset.skipped), "native_size": dataset.native_size},
        eval_transform=data_lib.eval_transform(dataset, image_size, augment),
        weights=plan.source.record() if plan else None, phases=plan.phases if plan else [])
    initial_epoch = _resume_state(run, config, recipe.epochs)
    if plan:
        initial_epoch = plan.resume_epoch(run, config, initial_epoch)

    # 3. the network, compiled per the recipe
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
                model = plan.build(dataset.num_classes, input_shape) if plan else \
                    get_model(info.name, dataset.num_classes, input_shape,
                              preprocessing=preprocessing, **options)
            except ValueError as exc:
                if isinstance(exc, SizeError):
                    raise
                raise UserError(f"cannot build {info.name}: {exc}") from None
            compiling.add_weight_decay(model, recipe.weight_decay)
            monitor, outputs = compiling.compile_model(
                model, recipe, dataset.num_classes, max(1, dataset.train.count // recipe.batch_size))
        if strategy is not None:
            multiworker.symbolic_build_from_first_replica(model, strategy)
    finally:
        keras.config.set_dtype_policy(previous_policy)

    # 4. fit (or resume, or nothing left to fit)
    train_ds, val_ds, steps = _pipelines(dataset, recipe, image_size, augment, cfg.seed, outputs,
                                         strategy)
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    run.write_config(config)
    if initial_epoch:
        run.trim_history(before_epoch=initial_epoch)
        if verbose:
            print(f"resuming {run.path} at epoch {initial_epoch + 1}/{recipe.epochs}"
                  if initial_epoch < recipe.epochs else
                  f"{run.path}: all {recipe.epochs} epochs were trained; finishing the run")
    elif run.history_file.exists():
        run.history_file.unlink()  # a run killed before its first epoch ended

    callback_list, epoch_log = fit_callbacks(run.path, recipe, monitor, notes, callbacks)
    if verbose and initial_epoch < recipe.epochs:
        print(f"training {info.name} ({model.count_params():,} parameters) on {config.dataset}: "
              f"{dataset.train.count} train / {dataset.val.count} val images "
              f"({dataset.val.source}), {image_size}x{image_size}x{channels}, {recipe.epochs} "
              f"epochs of {steps} steps x {recipe.batch_size}, {recipe.optimizer} lr "
              f"{recipe.effective_lr():g}, augment {augment}; run dir {run.path}")
        for note in notes:
            print(f"note: {note}")
    start = time.perf_counter()
    if initial_epoch < recipe.epochs:
        with warnings.catch_warnings():
            # The pipelines are shuffled already, and the validation set (unknown length:
            # unreadable images are dropped) ends where it ends; Keras warns about both.
            warnings.filterwarnings("ignore", message=".*shuffle=True.*")
            warnings.filterwarnings("ignore", message=".*ran out of data.*")
            if plan:
                epoch_log = plan.fit(model, run, recipe, initial_epoch, train_ds=train_ds,
                                     val_ds=val_ds, steps=steps, num_classes=dataset.num_classes,
                                     notes=notes, callbacks=callbacks, verbose=verbose)
            else:
                model.fit(train_ds, validation_data=val_ds, epochs=recipe.epochs,
                          steps_per_epoch=steps, callbacks=callback_list, verbose=verbose,
                          shuffle=False)
    else:  # every epoch ran before a kill: the last epoch's weights are in last.keras
        from ..registry import load_model
        model = load_model(run.checkpoints / "last.keras")
    fit_time = time.perf_counter() - start
    run.trim_history()
    if _diverged(run):
        run.mark_failed("the loss became NaN (TerminateOnNaN)", epoch=len(run.read_history()),
                        lr=recipe.effective_lr())
        raise UserError(f"training diverged: the loss became NaN (TerminateOnNaN stopped it at "
                        f"epoch {len(run.read_history())}); {run.path} is marked failed "
                        f"(failed.json), not finished. Lower --lr (now "
                        f"{recipe.effective_lr():g}) and train again into a new --run-dir")

    # 5. finish: the inference model, its evaluation, the files and the report
    from ..inference import inference_model
    inference = inference_model(model, copy=strategy is not None)
    with atomic_path(run.model_file, keep_suffix=True) as tmp:
        inference.save(tmp)
    val_pipe = data_lib.pipeline(dataset.val, image_size=image_size, channels=channels,
                                 style=dataset.style, training=False, augment=augment,
                                 batch_size=recipe.batch_size, native_size=dataset.native_size)
    results = evaluate_model(inference, val_pipe, dataset.class_names)
    flipped = evaluate_model(inference, val_pipe, dataset.class_names, flip=True) \
        if dataset.style == "photos" else None
    metrics = {
        "status": STATUS_FINISHED,
        "val_top1": results["top1"], "val_top5": results["top5"], "val_loss": results["loss"],
        "top5_k": results["k"], "val_images": results["images"],
        # test-time flip averaging, beside the plain figure (never in its place)
        **({"val_top1_flip": flipped["top1"]} if flipped else {}),
        "wall_time_s": round(fit_time, 2),
        "images_per_s": _images_per_s(run, epoch_log, steps * recipe.batch_size),
        "epochs": recipe.epochs, "epochs_this_session": len(epoch_log.times),
        "resumed_from_epoch": initial_epoch or None,
        "skipped_images": len(dataset.skipped), "skipped_examples": dataset.skipped[:20],
        "per_class_accuracy": results["per_class_accuracy"],
        **best_epoch(run.checkpoints / "best.json"),
    }
    if dataset.num_classes <= 100:
        metrics["confusion_matrix"] = results["confusion_matrix"]
    write_plots(run.path, results, dataset.class_names)
    run.write_metrics(metrics)
    from ..report import write_report_or_warn  # report.html: curves, predictions, model, recipe
    write_report_or_warn(run.path, model=inference, val_data=val_pipe, metrics=metrics,
                         config=config)
    if verbose:
        top_k = f"top-{results['k']} {metrics['val_top5']:.2%}, " if results["k"] else ""
        print(f"validation top-1 {metrics['val_top1']:.2%}, {top_k}loss {metrics['val_loss']:.4f} "
              f"({fit_time:.0f} s, {metrics['images_per_s']} images/s); saved {run.path}")
    return {**metrics, "run_dir": str(run.path)}


class CropWarning(UserWarning):
    """The input size cuts away most of each image."""


def _warn_if_cropped(dataset, image_size: int) -> None:
    """Glyphs are fitted by centre padding, so an input smaller than the images crops them:
    say so when most of each image is cut away (photos are resized, never cropped that much)."""
    if dataset.style != "glyphs" or dataset.native_size is None:
        return
    height, width = dataset.native_size
    kept = min(1.0, image_size / height) * min(1.0, image_size / width)
    if kept < 0.5:
        warnings.warn(f"--image-size {image_size} keeps only the centre {image_size}x{image_size} "
                      f"of each {height}x{width} image ({kept:.0%} of it): glyphs are centre-"
                      f"padded or cropped, not resized; use --image-size {max(height, width)} "
                      f"or more to keep whole images", CropWarning, stacklevel=3)


def _diverged(run: RunDir) -> bool:
    """The last epoch's loss is not a number (TerminateOnNaN ended the fit)."""
    rows = run.read_history()
    if not rows:
        return False
    try:
        return not math.isfinite(float(rows[-1].get("loss", "nan")))
    except ValueError:
        return True


def _images_per_s(run: RunDir, epoch_log, images_per_epoch: int) -> float | None:
    """Throughput of the steady state: the first epoch of a session also traces and compiles the
    step function, so it is left out when there are others (history's times after a resume)."""
    times = list(epoch_log.times)
    if not times:
        times = [float(r.get("epoch_time_s") or 0) for r in run.read_history()]
        times = [t for t in times if t > 0]
    timed = times[1:] or times
    return round(images_per_epoch * len(timed) / sum(timed), 1) if timed else None
