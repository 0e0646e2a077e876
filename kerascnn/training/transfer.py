"""Transfer learning (``train.py --weights``): a trained network's layers, a new classifier for the
dataset's classes, and two phases (issue 14).

The source (``imagenet`` with ``--arch``, shipped weights ``MODEL:TAG``, a run directory or a
``.keras`` file, named as :func:`kerascnn.sources.resolve` names models) is rebuilt from its own
saved config at the run's input size, with its in-model preprocessing, and its weights are copied
layer by layer, except the classifier: the ``Dense`` layer that feeds the ``predictions`` output
(:func:`kerascnn.layers.classifier`), found by walking back from the output. That layer keeps its
name with the dataset's class count and a fresh initialisation.

Then, as the Keras transfer-learning guide does it:

1. **freeze** (``--freeze-epochs N``): every layer but the classifier has ``trainable = False``;
   in Keras 3 that also runs batch normalisation in inference mode (its moving statistics stay);
2. **fine-tune** (``--fine-tune-epochs M``): ``--unfreeze all`` or the layers whose names start
   with the given stage prefixes (``conv4,conv5``) train too, at ``--fine-tune-lr`` (a tenth of the
   first phase's rate by default); batch normalisation stays in inference mode unless
   ``--fine-tune-bn train`` (the guide's advice for small datasets).

Each phase compiles the recipe's optimizer afresh (its schedule over the phase's epochs). Epochs
are numbered across phases (history.csv has a ``phase`` column: 1 freeze, 2 fine-tune) and the
run resumes like any other: from the backup inside a phase, from ``checkpoints/last.keras`` at the
boundary between them.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..recipes import Recipe
from . import compiling
from .callbacks import fit_callbacks

__all__ = ["Transfer", "Source", "plan", "PHASE_NUMBERS", "BN_MODES", "DEFAULT_FREEZE_EPOCHS"]

#: history.csv's ``phase`` column (a number: Keras' progress bar and TensorBoard log numbers).
PHASE_NUMBERS = {"freeze": 1, "fine_tune": 2}
BN_MODES = ("frozen", "train")
DEFAULT_FREEZE_EPOCHS = 5
_FLAGS = ("--freeze-epochs", "--fine-tune-epochs", "--fine-tune-lr", "--unfreeze",
          "--fine-tune-bn")


class TransferError(UserError):
    """A ``--weights`` source that cannot start this run, or transfer flags that make no sense."""


@dataclass
class Source:
    """The network ``--weights`` names, read once: its saved config, weights by layer name, the
    classifier's name and the record its run kept (preprocessing, options)."""

    spec: str
    kind: str                      # imagenet | published (.h5/.pth) | weights | run | keras
    arch: str
    input_shape: tuple
    preprocessing: dict | str | None
    model_options: dict
    classifier: str
    config: dict = field(repr=False)
    weights: dict = field(repr=False)
    path: str | None = None

    def record(self) -> dict:
        """What config.json keeps of the source (``RunConfig.weights``)."""
        return {"spec": self.spec, "kind": self.kind, "arch": self.arch, "path": self.path,
                "input_shape": list(self.input_shape), "classifier": self.classifier}


@dataclass
class Transfer:
    """A transfer run's plan: the source and the phases (``RunConfig.phases``)."""

    source: Source
    phases: list[dict]

    @property
    def epochs(self) -> int:
        return sum(p["epochs"] for p in self.phases)

    @property
    def boundary(self) -> int | None:
        """The first fine-tune epoch when a freeze phase comes before it."""
        if len(self.phases) == 2 and self.phases[0]["epochs"]:
            return self.phases[1]["first_epoch"]
        return None

    def set_rates(self, recipe: Recipe) -> None:
        """The phases' learning rates: the recipe's (``--lr``) when freezing, a tenth of it when
        fine-tuning unless ``--fine-tune-lr`` says otherwise."""
        for phase in self.phases:
            if phase["lr"] is None:
                base = recipe.effective_lr()
                phase["lr"] = base if phase["name"] == "freeze" else base / 10

    def check_channels(self, channels: int) -> None:
        want = self.source.input_shape[-1]
        if channels != want:
            raise TransferError(f"--weights {self.source.spec} takes {want}-channel images but "
                                f"the dataset has {channels}-channel ones; pass a "
                                f"{want}-channel dataset or weights trained on "
                                f"{channels}-channel images")

    # ------------------------------------------------------------------------------------ build
    def build(self, num_classes: int, input_shape) -> object:
        """The source network at ``input_shape`` with a new ``num_classes`` classifier; every
        other layer holds the source's weights. Refuses sizes the source's weights cannot take."""
        import keras

        from .. import layers  # noqa: F401  (the zoo's custom layers, registered)
        from ..registry import list_models
        list_models()  # the families' custom layers too
        src = self.source
        config = copy.deepcopy(src.config)
        policy = keras.config.dtype_policy().name
        for layer in config["layers"]:
            layer.pop("build_config", None)  # rebuilt from the new input, not the saved shapes
            conf = layer["config"]
            if layer["class_name"] == "InputLayer":
                conf["batch_shape"] = [None, *input_shape]
                continue
            conf["trainable"] = True  # a transfer run's model.keras saves its frozen layers
            if layer["name"] == src.classifier:
                conf["units"] = int(num_classes)
            if policy.startswith("mixed_") and layer["name"] != "predictions" and "dtype" in conf:
                conf["dtype"] = policy
        try:
            model = keras.Model.from_config(config)
        except ValueError as exc:
            raise TransferError(f"--weights {src.spec} cannot take "
                                f"{'x'.join(map(str, input_shape))} inputs: "
                                f"{str(exc).splitlines()[0][:200]}; pass --image-size "
                                f"{src.input_shape[0]}") from None
        for layer in model.layers:
            if layer.name == src.classifier or not layer.weights:
                continue
            values = src.weights.get(layer.name)
            shapes = [tuple(w.shape) for w in layer.weights]
            if values is None or [v.shape for v in values] != shapes:
                had = None if values is None else [v.shape for v in values]
                raise TransferError(
                    f"at {input_shape[0]}x{input_shape[1]} layer {layer.name} needs weights of "
                    f"shape {shapes}, but --weights {src.spec} (trained at "
                    f"{src.input_shape[0]}x{src.input_shape[1]}) has {had}: a Flatten fixes "
                    f"its input size; pass --image-size {src.input_shape[0]}")
            layer.set_weights(values)
        return model

    # ------------------------------------------------------------------------------------ phases
    def set_phase(self, model, phase: dict) -> int:
        """Make the layers of ``phase`` trainable and freeze the rest; the count of trainable
        layers with weights."""
        import keras
        classifier = self.source.classifier
        prefixes = None if phase.get("unfreeze") in (None, "all") else phase["unfreeze"]
        n = 0
        for layer in model.layers:
            if layer.name == classifier:
                layer.trainable = True
            elif phase["name"] == "freeze":
                layer.trainable = False
            elif isinstance(layer, keras.layers.BatchNormalization) and \
                    phase.get("batch_norm") != "train":
                layer.trainable = False  # inference mode: the moving statistics stay
            else:
                layer.trainable = prefixes is None or layer.name.startswith(tuple(prefixes))
            n += bool(layer.trainable and layer.weights)
        return n

    def phase_recipe(self, recipe: Recipe, phase: dict) -> Recipe:
        """The recipe of one phase: its optimizer and schedule over the phase's epochs, at the
        phase's rate (no warm-up when fine-tuning a trained network)."""
        warmup = recipe.warmup_epochs if phase["name"] == "freeze" else 0
        out = dataclasses.replace(recipe, lr=phase["lr"], lr_batch=None, epochs=phase["epochs"],
                                  warmup_epochs=min(warmup, phase["epochs"] - 1))
        out.validate()
        return out

    def resume_epoch(self, run, config, initial_epoch: int) -> int:
        """Where a rerun starts: as :func:`lifecycle._resume_state` says, or at the fine-tune
        phase's first epoch when a kill came between the phases (history holds the freeze
        phase, ``last.keras`` its weights; the freeze phase's backup, if any, is dropped: its
        optimizer state is not the fine-tune phase's)."""
        boundary = self.boundary
        if boundary is None or initial_epoch > boundary or not run.has_config():
            return initial_epoch
        backup = run.checkpoints / "backup"
        last = run.checkpoints / "last.keras"
        done = len(run.read_history()) >= boundary and last.is_file()
        if initial_epoch == boundary or (initial_epoch == 0 and done and
                                          not (backup / "training_metadata.json").exists()):
            differs = run.read_config().matches(config)
            if differs:
                raise TransferError(f"{run.path} holds an interrupted run with a different "
                                    f"{differs}; re-run its command to resume it, or choose "
                                    f"another --run-dir")
            if done:
                shutil.rmtree(backup, ignore_errors=True)
                return boundary
        return initial_epoch

    def fit(self, model, run, recipe: Recipe, initial_epoch: int, *, train_ds, val_ds, steps: int,
            num_classes: int, notes: list, callbacks=(), verbose="auto"):
        """Train the phases from ``initial_epoch`` on; returns the last phase's epoch log with
        every phase's epoch times."""
        from ..registry import load_model
        if initial_epoch and initial_epoch == self.boundary:
            trained = load_model(run.checkpoints / "last.keras")  # the freeze phase's last epoch
            for layer in model.layers:
                if layer.weights:
                    layer.set_weights(trained.get_layer(layer.name).get_weights())
        times, log = [], None
        for phase in self.phases:
            first, end = phase["first_epoch"], phase["first_epoch"] + phase["epochs"]
            if not phase["epochs"] or initial_epoch >= end:
                continue
            trainable = self.set_phase(model, phase)
            phase_recipe = self.phase_recipe(recipe, phase)
            monitor, _ = compiling.compile_model(model, phase_recipe, num_classes, steps)
            callback_list, log = fit_callbacks(
                run.path, phase_recipe, monitor, notes, callbacks, epoch_offset=first,
                fields={"phase": PHASE_NUMBERS[phase["name"]]})
            if verbose:
                print(f"phase {phase['name']}: epochs {first + 1}-{end}, {trainable} layers with "
                      f"weights trainable, {phase_recipe.optimizer} lr {phase['lr']:g}")
            model._initial_epoch = None  # Keras keeps the epoch a previous fit's backup restored
            model.fit(train_ds, validation_data=val_ds, epochs=end,
                      initial_epoch=max(first, initial_epoch), steps_per_epoch=steps,
                      callbacks=callback_list, verbose=verbose, shuffle=False)
            times += log.times
            if model.stop_training:  # TerminateOnNaN: the run is marked failed after this
                break
        log.times[:] = times
        return log


# --------------------------------------------------------------------------------------------
# Reading the source


def _inbound(layer: dict) -> list[str]:
    """The names of the layers a saved layer config is called on."""
    found = []

    def walk(obj):
        if isinstance(obj, dict):
            if obj.get("class_name") == "__keras_tensor__":
                found.append(obj["config"]["keras_history"][0])
                return
            for value in obj.values():
                walk(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                walk(value)
    walk(layer.get("inbound_nodes", []))
    return found


def find_classifier(config: dict, weights: dict, spec: str) -> str:
    """The Dense layer that feeds the single output, past weightless layers (the float32
    ``predictions`` activation, dropout)."""
    outputs = config["output_layers"]
    if outputs and isinstance(outputs[0], (list, tuple)):
        if len(outputs) != 1:
            raise TransferError(f"--weights {spec} has {len(outputs)} outputs; pass a model with "
                                f"one (a run's model.keras)")
        outputs = outputs[0]
    by_name = {layer["name"]: layer for layer in config["layers"]}
    name = outputs[0]
    while True:
        layer = by_name[name]
        if layer["class_name"] == "Dense":
            return name
        inbound = _inbound(layer)
        if name in weights or len(inbound) != 1:
            raise TransferError(f"--weights {spec} does not end in a Dense classifier (found "
                                f"{layer['class_name']} {name!r}); pass a model of the zoo")
        name = inbound[0]


def _preprocessing_of(model) -> dict | None:
    """The in-model preprocessing dict, read from the ``preprocess_*`` layers."""
    names = {layer.name: layer for layer in model.layers}
    if "preprocess_rescale" not in names:
        return None
    conf = names["preprocess_rescale"].get_config()
    spec = {"scale": float(conf["scale"])}
    if float(conf.get("offset") or 0.0):
        spec["offset"] = float(conf["offset"])
    if "preprocess_normalize" in names:
        norm = names["preprocess_normalize"].get_config()
        spec["mean"] = [float(v) for v in np.ravel(norm["mean"])]
        spec["std"] = [float(math.sqrt(v)) for v in np.ravel(norm["variance"])]
    return spec


def _load_source(spec: str, arch: str | None):
    """``(kind, arch, model, record)`` of ``--weights spec``; ``record`` is the source run's
    RunConfig where there is one."""
    from ..registry import get_model, load_model, model_info
    from ..sources import resolve
    published = spec.endswith((".h5", ".pth"))  # a publisher's file, as get_model takes it
    if spec == "imagenet" or spec.startswith("imagenet:") or published:
        if not arch:
            raise TransferError(f"--weights {spec} needs --arch NAME (the network whose ImageNet "
                                f"weights to start from; python -m kerascnn.weights list)")
        return ("published" if published else "imagenet"), model_info(arch).name, \
            get_model(arch, weights=spec), None
    ref = resolve(spec).require("weights", "run", "keras", command="train.py --weights")
    if ref.kind == "weights":
        from ..weights import run_record
        name, tag = spec.split(":", 1)
        return "weights", name, get_model(name, weights=tag), run_record(name, tag)
    run = ref.run_dir
    record = run.read_config() if run is not None else None
    model = load_model(ref.path / "model.keras" if ref.kind == "run" else ref.path)
    name = record.arch if record else (arch or model.name)
    try:
        name = model_info(name).name
    except UserError:
        raise TransferError(f"{spec} does not say which network it is (no config.json beside "
                            f"it); pass --arch NAME") from None
    return ref.kind, name, model, record


def plan(cfg) -> Transfer | None:
    """Check the transfer flags of ``cfg`` (a TrainConfig) and read the source; None without
    ``--weights``."""
    given = [flag for flag, value in zip(_FLAGS, (cfg.freeze_epochs, cfg.fine_tune_epochs,
                                                  cfg.fine_tune_lr, cfg.unfreeze,
                                                  cfg.fine_tune_bn)) if value is not None]
    if cfg.weights is None:
        if given:
            raise TransferError(f"{given[0]} needs --weights (imagenet, MODEL:TAG, a run "
                                f"directory or a .keras file to start from)")
        return None
    for flag, value in (("--freeze-epochs", cfg.freeze_epochs),
                        ("--fine-tune-epochs", cfg.fine_tune_epochs)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 0):
            raise TransferError(f"{flag} must be 0 or more (a whole number), got {value!r}")
    if cfg.epochs is not None:
        raise TransferError("--epochs does not apply with --weights: pass --freeze-epochs N "
                            "(head only) and --fine-tune-epochs M (then unfrozen)")
    if cfg.strategy not in (None, "none"):
        raise TransferError("--weights does not support --strategy yet; train on one machine")
    freeze = DEFAULT_FREEZE_EPOCHS if cfg.freeze_epochs is None else cfg.freeze_epochs
    tune = cfg.fine_tune_epochs or 0
    if freeze + tune == 0:
        raise TransferError("--freeze-epochs 0 with no --fine-tune-epochs trains nothing; pass "
                            "--freeze-epochs N or --fine-tune-epochs M")
    for flag in ("--fine-tune-lr", "--unfreeze", "--fine-tune-bn"):
        if flag in given and not tune:
            raise TransferError(f"{flag} needs --fine-tune-epochs M (a fine-tune phase)")
    lr = cfg.fine_tune_lr
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise TransferError(f"--fine-tune-lr must be a positive number, got {lr!r}")
    if cfg.fine_tune_bn not in (None, *BN_MODES):
        raise TransferError(f"--fine-tune-bn must be one of {', '.join(BN_MODES)}, got "
                            f"{cfg.fine_tune_bn!r}")
    kind, arch, model, record = _load_source(str(cfg.weights), cfg.arch)
    if cfg.arch is not None:
        from ..registry import model_info
        wanted = model_info(cfg.arch).name
        if wanted != arch:
            raise TransferError(f"--arch {wanted} does not match --weights {cfg.weights}, which "
                                f"is a {arch}; drop --arch or pass --arch {arch}")
    from ..inference import inference_model
    model = inference_model(model)  # one output: auxiliary heads are training's
    weights = {layer.name: [np.asarray(w) for w in layer.get_weights()] for layer in model.layers
               if layer.weights}
    config = model.get_config()
    path = str(Path(cfg.weights).resolve()) if kind in ("run", "keras", "published") else None
    source = Source(
        spec=str(cfg.weights), kind=kind, arch=arch, input_shape=tuple(model.input_shape[1:]),
        preprocessing=record.preprocessing if record else _preprocessing_of(model),
        model_options=dict(record.model_options) if record else {},
        classifier=find_classifier(config, weights, str(cfg.weights)), config=config,
        weights=weights, path=path)
    unfreeze = _unfreeze(cfg.unfreeze, model, source.classifier) if tune else None
    return Transfer(source, [p for p in (
        {"name": "freeze", "first_epoch": 0, "epochs": freeze, "lr": None,
         "trainable": "classifier"} if freeze else None,
        {"name": "fine_tune", "first_epoch": freeze, "epochs": tune, "lr": lr,
         "unfreeze": unfreeze, "batch_norm": cfg.fine_tune_bn or "frozen"} if tune else None)
        if p is not None])


def _unfreeze(text: str | None, model, classifier: str) -> str | list[str]:
    """``all`` or the stage prefixes, each checked to name layers with weights."""
    if text is None or text == "all":
        return "all"
    prefixes = [p.strip() for p in text.split(",") if p.strip()]
    named = [layer.name for layer in model.layers if layer.name != classifier
             and any(w.trainable for w in layer.weights)]
    stages = sorted({n.split("_")[0] for n in named})
    unknown = [p for p in prefixes if not any(n.startswith(p) for n in named)]
    if not prefixes or unknown:
        raise TransferError(f"--unfreeze {text!r}: no layer with weights starts with "
                            f"{', '.join(unknown) or 'nothing'}; pass all or stage prefixes "
                            f"from: {', '.join(stages)}")
    return prefixes
