"""Making and unmaking shipped weights: a finished run directory in, a run directory out.

Kept apart from :mod:`kerascnn.weights` (which only reads entries, for ``get_model``) because
these build and load networks through :mod:`kerascnn.registry`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path

from ..files import atomic_path, atomic_write, write_json
from . import DATA_LICENCES, HERE, MAX_BYTES, WeightsError, manifest, run_record

__all__ = ["ship", "save_run_dir"]


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


    from ..runs import RunDir

    run = RunDir(run_dir)
    run_dir = run.path
    for needed in ("model.keras", "config.json", "metrics.json"):
        if not (run_dir / needed).is_file():
            raise WeightsError(f"{run_dir} lacks {needed}: pass a finished train.py run directory")
    record = run.read_config()
    config = record.to_dict()
    metrics = run.read_metrics()
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
    history = run.history_file
    # a resumed run's metrics time only its last session: sum the epochs
    wall = run.training_seconds() or metrics.get("wall_time_s")
    meta = {
        "model": name, "tag": tag, "file": f"{stem}.weights.h5",
        "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
        "num_classes": config["num_classes"], "input_shape": config["input_shape"],
        "preprocessing": config["preprocessing"], "model_options": config.get("model_options", {}),
        "class_names": config["class_names"],
        "val_top1": round(metrics["val_top1"], 4), "val_top5": None if metrics.get("val_top5") is None else round(metrics["val_top5"], 4),
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
        "run": config,  # the run's own record (kerascnn.runs.RunConfig), eval transform included
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
    from ..runs import RunDir
    record = run_record(name, tag)
    record.extra["weights"] = f"{name}:{tag}"
    RunDir(directory).write_config(record)
    write_json(directory / "metrics.json", {
        "val_top1": meta["val_top1"], "val_top5": meta["val_top5"], "val_loss": meta["val_loss"],
        "epochs": meta["epochs"], "wall_time_s": meta.get("wall_time_s"),
        "weights": f"{name}:{tag}"})
    return directory
