"""Pretrained weights that ship inside the package.

Each entry is ``{model}_{tag}.weights.h5`` beside a ``{model}_{tag}.json`` manifest: the build
arguments (``num_classes``, ``input_shape``, ``preprocessing``, ``model_options``), the class names,
the validation accuracy and the provenance of the run that produced it (command, epochs, wall time,
machine, data split and licence, versions, the file's SHA-256). ``kerascnn.get_model(name,
weights=tag)`` builds the network from the manifest (raw uint8 pixels in, the training's scaling
inside the model) and loads the weights; :func:`manifest` gives the class names.

    >>> import kerascnn
    >>> from kerascnn import weights
    >>> model = kerascnn.get_model("resnet20", weights="cifar10")   # 10 classes, 32x32x3 uint8
    >>> weights.manifest("resnet20", "cifar10")["class_names"][:2]
    ['airplane', 'automobile']

:func:`ship` turns a finished ``train.py`` run directory into such an entry; :func:`save_run_dir`
does the reverse (a run-directory-shaped folder that ``python -m kerascnn export`` accepts).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
from pathlib import Path

from ..cli import UserError
from ..files import atomic_path, atomic_write, write_json

__all__ = ["WeightsError", "available", "manifest", "weights_file", "load_weights",
           "build_arguments", "ship", "save_run_dir", "MAX_BYTES", "DATA_LICENCES"]

HERE = Path(__file__).parent
#: Shipped files stay small enough for the wheel (issue 8: "each well under 2 MB").
MAX_BYTES = 2_000_000
#: The licence of each dataset weights may be trained on (../shared/data/README.md).
DATA_LICENCES = {
    "mnist": "MNIST (LeCun, Cortes & Burges): CC BY-SA 3.0",
    "cifar10": "CIFAR-10 (Krizhevsky 2009): for research and education",
    "imagenette": "Imagenette (fast.ai; a subset of ImageNet): for research and education",
}


class WeightsError(UserError, ValueError):
    """Unknown, mismatched or damaged shipped weights; the message names the ones that exist.

    A ``ValueError`` for library callers (as ``get_model``'s other argument errors), a
    ``UserError`` for the CLI (one line, exit code 2)."""


def available(model: str | None = None) -> dict[str, dict]:
    """Manifests of the shipped weights, keyed ``model:tag`` (only ``model``'s when given)."""
    found = {}
    for path in sorted(HERE.glob("*.json")):
        meta = json.loads(path.read_text(encoding="utf-8"))
        if model is None or meta["model"] == model:
            found[f"{meta['model']}:{meta['tag']}"] = meta
    return found


def _listing() -> str:
    shipped = available()
    return ", ".join(f"get_model({k.split(':')[0]!r}, weights={k.split(':')[1]!r})"
                     for k in shipped) or "none"


def manifest(name: str, tag: str) -> dict:
    """The manifest of the shipped weights ``tag`` of network ``name`` (class names, accuracy,
    provenance); an unknown pair raises :class:`WeightsError` listing the shipped ones."""
    if not isinstance(tag, str):
        raise WeightsError(f"weights must be the tag of shipped weights (a string), got {tag!r}; "
                           f"shipped: {_listing()}")
    meta = available().get(f"{name}:{tag}")
    if meta is None:
        own = [k.split(":")[1] for k in available(name)]
        hint = f"{name} ships {', '.join(map(repr, own))}" if own else f"{name} ships none"
        raise WeightsError(f"no shipped weights {tag!r} for {name} ({hint}); shipped weights: "
                           f"{_listing()}")
    return meta


def weights_file(name: str, tag: str) -> Path:
    return HERE / manifest(name, tag)["file"]


def build_arguments(name: str, tag: str, num_classes=None, input_shape=None,
                    preprocessing=None) -> dict:
    """``get_model`` arguments for ``name`` with weights ``tag``: the manifest's, checked against
    what the caller passed (``None`` = not given). Classes, channels and preprocessing must match
    the training; the height and width may differ where the network allows it (global pooling)."""
    meta = manifest(name, tag)
    where = f"the shipped weights {tag!r} of {name}"
    if num_classes is not None and num_classes != meta["num_classes"]:
        raise WeightsError(f"{where} have {meta['num_classes']} classes, not {num_classes}; leave "
                           f"num_classes out (or pass {meta['num_classes']}), or train your own "
                           f"head: get_model({name!r}, {num_classes}) without weights")
    shape = tuple(meta["input_shape"]) if input_shape is None else tuple(input_shape)
    if len(shape) == 3 and shape[-1] != meta["input_shape"][-1]:
        raise WeightsError(f"{where} take {meta['input_shape'][-1]}-channel images, not "
                           f"{shape[-1]}; pass input_shape={tuple(meta['input_shape'])} or "
                           f"leave it out")
    if preprocessing is not None and preprocessing != meta["preprocessing"]:
        raise WeightsError(f"{where} were trained with preprocessing {meta['preprocessing']}; a "
                           f"different one ({preprocessing!r}) would feed them pixels they never "
                           f"saw. Leave preprocessing out to use the training's")
    return {"num_classes": meta["num_classes"], "input_shape": shape,
            "preprocessing": meta["preprocessing"], "options": dict(meta.get("model_options", {}))}


def load_weights(model, name: str, tag: str) -> None:
    """Load the shipped weights ``tag`` of network ``name`` into ``model`` (built to match, as
    :func:`build_arguments` says). The file's SHA-256 is checked against the manifest first."""
    meta = manifest(name, tag)
    path = HERE / meta["file"]
    if not path.is_file():
        raise WeightsError(f"{path} is missing (the manifest {meta['file']} names it); reinstall "
                           f"kerascnn")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != meta["sha256"]:
        raise WeightsError(f"{path} is damaged (SHA-256 {digest[:12]}..., the manifest says "
                           f"{meta['sha256'][:12]}...); reinstall kerascnn")
    try:
        model.load_weights(path)
    except ValueError as exc:  # e.g. a Flatten-fed dense layer at another input size
        found = re.search(r"path=([^,\s]+), shape=(\([^)]*\))", str(exc))
        want = re.search(r"value\.shape=(\([^)]*\))", str(exc))
        what = (f"{found[1]} is {found[2]} here but {want[1]} in the file" if found and want
                else str(exc).splitlines()[0][:200])
        raise WeightsError(f"the shipped weights {tag!r} of {name} do not fit this model ({what}); "
                           f"build it at the training's input_shape "
                           f"{tuple(meta['input_shape'])}") from None


# --------------------------------------------------------------------------------------------
# Making and unmaking entries


def ship(run_dir, tag: str, *, command: str, machine: str, reference: str = "",
         notes: str = "", destination=None) -> Path:
    """Package a finished ``train.py`` run as shipped weights ``{arch}_{tag}``; returns the manifest.

    Reads ``model.keras`` (the inference model), ``config.json`` and ``metrics.json``; refuses a run
    without preprocessing inside the model (raw pixels must work) or a file over :data:`MAX_BYTES`.
    ``command`` is how the run was made, ``machine`` what it ran on, ``reference`` the paper's
    number it compares with. Both files are written to temporary names and renamed.
    """
    import tensorflow as tf

    from ..registry import load_model


    run_dir = Path(run_dir)
    for needed in ("model.keras", "config.json", "metrics.json"):
        if not (run_dir / needed).is_file():
            raise WeightsError(f"{run_dir} lacks {needed}: pass a finished train.py run directory")
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    if not config.get("preprocessing"):
        raise WeightsError(f"{run_dir} was trained without in-model preprocessing; shipped weights "
                           f"must take raw uint8 pixels")
    name = config["arch"]
    destination = Path(destination or HERE)
    stem = f"{name}_{tag}"
    model = load_model(run_dir / "model.keras")
    tmp = destination / f".{stem}.tmp-{os.getpid()}.weights.h5"
    try:
        model.save_weights(tmp)
        data = tmp.read_bytes()
    finally:
        tmp.unlink(missing_ok=True)
    if len(data) > MAX_BYTES:
        raise WeightsError(f"{stem}.weights.h5 would be {len(data):,} bytes, over the "
                           f"{MAX_BYTES:,} bytes a shipped file may take")
    data_info = config.get("data", {})
    history = run_dir / "history.csv"
    wall = metrics.get("wall_time_s")
    if history.exists():  # a resumed run's metrics time only its last session: sum the epochs
        import csv
        with history.open(newline="") as f:
            wall = round(sum(float(r.get("epoch_time_s") or 0) for r in csv.DictReader(f)), 1)
    meta = {
        "model": name, "tag": tag, "file": f"{stem}.weights.h5",
        "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
        "num_classes": config["num_classes"], "input_shape": config["input_shape"],
        "preprocessing": config["preprocessing"], "model_options": config.get("model_options", {}),
        "class_names": config["class_names"],
        "val_top1": round(metrics["val_top1"], 4), "val_top5": round(metrics["val_top5"], 4),
        "val_loss": round(metrics["val_loss"], 4),
        "epochs": config["epochs"], "wall_time_s": wall,
        "images_per_s": metrics.get("images_per_s"), "machine": machine,
        "dataset": config["dataset"],
        "split": {"train_images": data_info.get("train_images"),
                  "val_images": data_info.get("val_images"),
                  "val_source": data_info.get("val_source"),
                  "val_split": data_info.get("val_split"), "seed": config.get("seed")},
        "data_name": data_info.get("name"),
        "augment": config.get("recipe", {}).get("augment"),
        "recipe": config.get("recipe", {}),
        "batch_size": config.get("batch_size"),
        "command": command,
        "date": datetime.date.fromtimestamp(history.stat().st_mtime if history.exists()
                                            else (run_dir / "metrics.json").stat().st_mtime
                                            ).isoformat(),
        "versions": config.get("versions", {}),
        "data_licence": DATA_LICENCES.get(data_info.get("name"), "see the dataset's own terms"),
        "reference": reference, "notes": notes,
        "tensorflow_at_packing": tf.__version__,
    }
    atomic_write(destination / f"{stem}.weights.h5", data)
    target = destination / f"{stem}.json"
    atomic_write(target, (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    return target


def save_run_dir(name: str, tag: str, directory) -> Path:
    """Write the shipped model ``name:tag`` as a run-directory-shaped folder (``model.keras``,
    ``config.json``, ``metrics.json``) that ``python -m kerascnn export DIR --name NAME`` takes,
    so ``kerascnn predict`` works offline with shipped weights. Returns the folder."""
    from ..registry import get_model

    meta = manifest(name, tag)
    directory = Path(directory)
    if (directory / "model.keras").exists():
        raise WeightsError(f"{directory} already holds a model.keras; choose another folder")
    directory.mkdir(parents=True, exist_ok=True)
    model = get_model(name, weights=tag)
    with atomic_path(directory / "model.keras", keep_suffix=True) as tmp:
        model.save(tmp)
    write_json(directory / "config.json", {
        "arch": name, "num_classes": meta["num_classes"], "class_names": meta["class_names"],
        "input_shape": meta["input_shape"], "preprocessing": meta["preprocessing"],
        "model_options": meta.get("model_options", {}), "dataset": meta["dataset"],
        "recipe": meta.get("recipe", {}), "seed": meta["split"]["seed"], "epochs": meta["epochs"],
        "batch_size": meta.get("batch_size"), "versions": meta.get("versions", {}),
        "data": {"name": meta.get("data_name"), **meta["split"]},
        "weights": f"{name}:{tag}"})
    write_json(directory / "metrics.json", {
        "val_top1": meta["val_top1"], "val_top5": meta["val_top5"], "val_loss": meta["val_loss"],
        "epochs": meta["epochs"], "wall_time_s": meta.get("wall_time_s"),
        "weights": f"{name}:{tag}"})
    return directory
