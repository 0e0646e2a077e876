"""Pretrained weights that ship inside the package.

Each entry is ``{model}_{tag}.weights.h5`` beside a ``{model}_{tag}.json`` manifest: the build
arguments (``num_classes``, ``input_shape``, ``preprocessing``, ``model_options``), the class names,
the validation accuracy and the provenance of the run that produced it (command, epochs, wall time,
machine, data split and licence, versions, the file's SHA-256). ``kerascnn.get_model(name,
weights=tag)`` builds the network from the manifest (raw uint8 pixels in, the training's scaling
inside the model) and loads the weights; :func:`manifest` gives the class names. Published ImageNet
weights (``weights="imagenet"``, ``"imagenet:keras"``, a publisher's file) go through the same
functions, answered by :mod:`kerascnn.weights.published` (downloaded, converted and cached).

    >>> import kerascnn
    >>> from kerascnn import weights
    >>> model = kerascnn.get_model("resnet20", weights="cifar10")   # 10 classes, 32x32x3 uint8
    >>> weights.manifest("resnet20", "cifar10")["class_names"][:2]
    ['airplane', 'automobile']

:func:`kerascnn.weights.packing.ship` turns a finished ``train.py`` run directory into such an
entry; :func:`~kerascnn.weights.packing.save_run_dir` does the reverse (a run directory that
``python -m kerascnn export`` accepts). This module only reads entries: it imports no network.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from ..errors import WeightsError

__all__ = ["WeightsError", "available", "manifest", "weights_file", "load_weights",
           "build_arguments", "run_record", "MAX_BYTES", "DATA_LICENCES"]

HERE = Path(__file__).parent
#: Shipped files stay small enough for the wheel (issue 8: "each well under 2 MB").
MAX_BYTES = 2_000_000
#: The licence of each dataset weights may be trained on (../shared/data/README.md).
DATA_LICENCES = {
    "mnist": "MNIST (LeCun, Cortes & Burges): CC BY-SA 3.0",
    "cifar10": "CIFAR-10 (Krizhevsky 2009): for research and education",
    "imagenette": "Imagenette (fast.ai; a subset of ImageNet): for research and education",
}


def available(model: str | None = None) -> dict[str, dict]:
    """Manifests of the shipped weights, keyed ``model:tag`` (only ``model``'s when given)."""
    found = {}
    for path in sorted(HERE.glob("*.json")):
        if not path.with_name(f"{path.stem}.weights.h5").is_file():
            continue  # a manifest sits beside its weights file (imagenet_classes.json does not)
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
    provenance); an unknown pair raises :class:`WeightsError` listing the shipped ones. A
    published ``tag`` (``"imagenet"`` ...) gets a manifest of the same shape."""
    from .published import NoPublishedWeights, is_published, manifest as published_manifest
    if is_published(tag):
        try:
            return published_manifest(name, tag)
        except NoPublishedWeights as exc:
            own = [k.split(":")[1] for k in available(name)]
            raise WeightsError(f"{exc}; {name} ships {', '.join(map(repr, own)) or 'none'} "
                               f"(shipped weights: {_listing()})") from None
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


def run_record(name: str, tag: str):
    """The :class:`kerascnn.runs.RunConfig` of the run that made the shipped weights: the same
    record as a run directory's config.json (class names, input, evaluation transform ...)."""
    from ..runs import RunConfig
    meta = manifest(name, tag)
    return RunConfig.from_dict(meta["run"] if isinstance(meta.get("run"), dict) else meta)


def weights_file(name: str, tag: str) -> Path:
    return HERE / manifest(name, tag)["file"]


def build_arguments(name: str, tag: str, num_classes=None, input_shape=None,
                    preprocessing=None, options=None) -> dict:
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
    fixed = dict(meta.get("model_options", {}))
    clash = {k: v for k, v in (options or {}).items() if k in fixed and v is not None
             and v != fixed[k]}
    if clash:
        key = sorted(clash)[0]
        raise WeightsError(f"{where} belong to {name} built with {key}={fixed[key]!r}, not "
                           f"{clash[key]!r}; leave {key} out")
    return {"num_classes": meta["num_classes"], "input_shape": shape,
            "preprocessing": meta["preprocessing"], "options": dict(meta.get("model_options", {}))}


def load_weights(model, name: str, tag: str, *, build=None, skip_mismatch: bool = False) -> None:
    """Load the shipped weights ``tag`` of network ``name`` into ``model`` (built to match, as
    :func:`build_arguments` says). The file's SHA-256 is checked against the manifest first.
    ``skip_mismatch`` leaves out layers of another shape (a headless model's unused classifier);
    ``build(input_shape)`` builds another such model (published weights convert on one)."""
    from .published import is_published, load
    if is_published(tag):
        return load(model, name, tag, build=build, skip_mismatch=skip_mismatch)
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
        model.load_weights(path, skip_mismatch=skip_mismatch)
    except ValueError as exc:  # e.g. a Flatten-fed dense layer at another input size
        found = re.search(r"path=([^,\s]+), shape=(\([^)]*\))", str(exc))
        want = re.search(r"value\.shape=(\([^)]*\))", str(exc))
        what = (f"{found[1]} is {found[2]} here but {want[1]} in the file" if found and want
                else str(exc).splitlines()[0][:200])
        raise WeightsError(f"the shipped weights {tag!r} of {name} do not fit this model ({what}); "
                           f"build it at the training's input_shape "
                           f"{tuple(meta['input_shape'])}") from None
