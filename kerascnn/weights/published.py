"""Published ImageNet weights (torchvision, keras.applications) converted into the zoo's networks.

One :class:`PublishedWeights` record per network that has them: where the publisher's file lives,
its published hash, the builder options that make our network the publisher's (``stride_on="1x1"``
for keras.applications' ResNet v1, ``variant="torchvision"`` for torchvision's GoogLeNet), the
publisher's preprocessing as our ``preprocessing`` dict (so the converted model takes raw uint8 RGB
pixels) and the publisher's own ImageNet top-1.

Each publisher has a module with two functions, looked up through :data:`PUBLISHERS`:

* ``read(path) -> dict[str, numpy.ndarray]``: the tensors of the publisher's file, by the
  publisher's own names (a torchvision state-dict key ``layer1.0.conv1.weight``; a keras.applications
  legacy-h5 entry ``conv1_conv/kernel:0``);
* ``convert(model, tensors, entry) -> None``: assign them to our ``model`` (built with
  ``entry.options`` and ``entry.preprocessing``), folding what is foldable exactly (a conv bias before
  batch norm into the moving mean, an epsilon difference into the moving variance, BGR into the first
  kernel's channel order) and raising :class:`kerascnn.weights.WeightsError` on any tensor it cannot
  place or any of our weights it leaves unset.

and a ``SOURCES`` list of its records, which :func:`entries` gathers (a publisher module that fails
to import only loses its own entries). Publisher modules import ``WeightsError`` from
``kerascnn.errors``: the package ``kerascnn.weights`` imports this module, never the reverse.

``get_model(name, weights=...)`` reaches this module through :mod:`kerascnn.weights` with:

* ``"imagenet"``: the network's default publisher, the first of :data:`DEFAULT_ORDER` that has it:
  keras.applications for ResNet-50/101/152 (v1: ``stride_on="1x1"``) and VGG-16/19, because its
  files need nothing beyond Keras (torchvision's ``.pth`` files need torch to read), torchvision
  for the others;
* ``"imagenet:keras"`` (or ``"imagenet:keras.applications"``), ``"imagenet:torchvision"``: that one;
* a path to a publisher's file (``.h5``: keras.applications, ``.pth``/``.pt``: torchvision).

On first use the publisher's file is downloaded to ``$KERAS_HOME/kerascnn/downloads`` (a copy in
keras.applications' or torch hub's own cache is used when its hash is right), its published hash is
checked, it is converted once into a full model at the publisher's input size, and the converted
weights are cached as ``$KERAS_HOME/kerascnn/imagenet/NETWORK_PUBLISHER_HASH.weights.h5``; later
calls load that file. ``$KERASCNN_WEIGHTS_URL`` (or ``fetch(..., base_url=)``) replaces the
publisher's address by a mirror (``file://`` works) holding the same file names.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import urllib.error
import urllib.request
import warnings
from pathlib import Path

from ..errors import WeightsError
from ..files import atomic_path
from .record import PublishedWeights

__all__ = ["PublishedWeights", "NoPublishedWeights", "PUBLISHERS", "DEFAULT_ORDER", "URL_ENV", "entries", "entry",
           "is_published", "class_names", "manifest", "fetch", "converted_path", "home", "load",
           "unavailable"]

#: publisher -> the module (relative to this package) with its ``read`` and ``convert``.
PUBLISHERS = {
    "keras.applications": ".keras_h5",
    "torchvision": ".torchvision",
}
#: ``weights="imagenet"``: the first of these publishers that has the network (keras.applications'
#: files read with h5py alone; torchvision's v1.5 ResNets are ``weights="imagenet:torchvision"``).
DEFAULT_ORDER = ("keras.applications", "torchvision")
#: what may follow ``imagenet:``
ALIASES = {"keras": "keras.applications", "keras.applications": "keras.applications",
           "torchvision": "torchvision"}
#: a local publisher file, by its suffix
SUFFIXES = {".h5": "keras.applications", ".pth": "torchvision", ".pt": "torchvision"}
#: a mirror of the publishers' files (same file names), e.g. file:///srv/weights
URL_ENV = "KERASCNN_WEIGHTS_URL"
CLASS_NAMES_FILE = Path(__file__).with_name("imagenet_classes.json")
_CHUNK = 1 << 20


class NoPublishedWeights(WeightsError):
    """No publisher has ImageNet weights for the network (or not the one asked for)."""


# ------------------------------------------------------------------------------ the table
_UNAVAILABLE: dict[str, str] = {}


def _module(publisher: str):
    """The publisher's module, or None (the reason kept in :func:`unavailable`) when it is missing
    or fails to import: the other publishers' weights keep working."""
    try:
        return importlib.import_module(PUBLISHERS[publisher], __package__)
    except Exception as exc:  # a missing or broken publisher module must not break the others
        _UNAVAILABLE[publisher] = f"{type(exc).__name__}: {exc}"
        return None


def unavailable() -> dict[str, str]:
    """``{publisher: why}`` of the publisher modules that could not be imported."""
    entries()
    return dict(_UNAVAILABLE)


def entries(network: str | None = None) -> list[PublishedWeights]:
    """Every publisher's records (``network``'s only when given), in :data:`DEFAULT_ORDER`."""
    found = []
    for publisher in sorted(PUBLISHERS, key=lambda p: (DEFAULT_ORDER + (p,)).index(p)):
        module = _module(publisher)
        for record in getattr(module, "SOURCES", ()) if module is not None else ():
            if network is None or record.network == network:
                found.append(record)
    return found


def is_published(tag) -> bool:
    """Whether a ``weights=`` value names published weights (``imagenet``, ``imagenet:P``, or a
    publisher's file) rather than shipped weights (``cifar10``)."""
    if isinstance(tag, os.PathLike):
        return True
    return isinstance(tag, str) and (tag == "imagenet" or tag.startswith("imagenet:")
                                     or tag.lower().endswith(tuple(SUFFIXES)))


def _local(tag) -> Path | None:
    return Path(tag) if isinstance(tag, os.PathLike) or not str(tag).startswith("imagenet") \
        else None


def _listing() -> str:
    return ", ".join(f"{e.network} ({e.publisher})" for e in entries()) or "none"


def entry(network: str, tag) -> PublishedWeights:
    """The record ``tag`` names for ``network`` (see the module docstring)."""
    local = _local(tag)
    if local is not None:
        name = local.name.lower()
        publisher = next((p for s, p in SUFFIXES.items() if name.endswith(s)), None)
        if name.endswith(".weights.h5") or publisher is None:
            raise WeightsError(f"{local} is not a publisher's weights file (.h5 of "
                               f"keras.applications, .pth of torchvision); a Keras .weights.h5 "
                               f"loads with model.load_weights(path)")
        if not local.is_file():
            raise WeightsError(f"{local} does not exist; pass the path of {publisher}'s file")
    else:
        choice = str(tag).partition(":")[2]
        publisher = ALIASES.get(choice) if choice else None
        if choice and publisher is None:
            raise WeightsError(f"unknown publisher {choice!r} in weights={tag!r}; use 'imagenet', "
                               f"'imagenet:keras' or 'imagenet:torchvision'")
    own = entries(network)
    if publisher is not None:
        own = [e for e in own if e.publisher == publisher]
    if not own:
        why = f" ({publisher} weights are unavailable here: {_UNAVAILABLE[publisher]})" \
            if publisher in _UNAVAILABLE else ""
        others = [e.publisher for e in entries(network)]
        hint = f"; {network} has them from {', '.join(others)}: weights='imagenet:" \
               f"{others[0].split('.')[0]}'" if others else ""
        origin = f" from {publisher}" if publisher else ""
        raise NoPublishedWeights(f"no ImageNet weights{origin} for {network} (weights={tag!r})"
                                 f"{why}{hint}; published ImageNet weights: {_listing()}")
    return own[0]


def class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in the publishers' output order."""
    return json.loads(CLASS_NAMES_FILE.read_text(encoding="utf-8"))["class_names"]


def manifest(network: str, tag) -> dict:
    """The weights' manifest in the shape of a shipped one (:mod:`kerascnn.weights`): build
    arguments, class names, the publisher's accuracy and a ``run`` record (RunConfig) whose
    evaluation transform is the publisher's (resize the shorter side to 256, centre crop 224)."""
    e = entry(network, tag)
    size = e.input_size
    shape = [size, size, 3]
    names = class_names()
    source = {"publisher": e.publisher, "source_name": e.source_name, "url": e.url,
              "file_hash": e.file_hash, "hash_kind": e.hash_kind, "licence": e.licence}
    run = {"arch": network, "num_classes": len(names), "class_names": names, "input_shape": shape,
           "preprocessing": dict(e.preprocessing), "model_options": dict(e.options),
           "dataset": "imagenet", "data": {"name": "imagenet"},
           "eval_transform": {"style": "photos", "resize": e.resize or round(size / 0.875),
                              "crop": [size, size], "channels": 3},
           "weights": f"{network}:{tag}" if _local(tag) is None else str(tag),
           "weights_source": source}
    return {"model": network, "tag": str(tag), "num_classes": len(names), "input_shape": shape,
            "preprocessing": dict(e.preprocessing), "model_options": dict(e.options),
            "class_names": names, "val_top1": e.top1 / 100,
            "val_top5": None if e.top5 is None else e.top5 / 100, "val_loss": None,
            "epochs": None, "wall_time_s": None, "dataset": "imagenet", **source, "run": run}


# ------------------------------------------------------------------------------ files
def _keras_home() -> Path:
    """``$KERAS_HOME`` (``~/.keras`` by default), where Keras keeps its files."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")


def home() -> Path:
    """``$KERAS_HOME/kerascnn``: this package's downloads and converted weights."""
    return _keras_home() / "kerascnn"


def _download_path(e: PublishedWeights) -> Path:
    return home() / "downloads" / e.file_name


def _other_caches(e: PublishedWeights) -> list[Path]:
    """Where the publisher's own library keeps the same file (keras.applications' get_file,
    torch hub)."""
    if e.publisher == "keras.applications":
        return [_keras_home() / "models" / e.file_name]
    torch_home = os.environ.get("TORCH_HOME") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch"
    return [Path(torch_home) / "hub" / "checkpoints" / e.file_name]


def converted_path(e: PublishedWeights) -> Path:
    """The converted weights' cache: one file per network, publisher and published file."""
    return home() / "imagenet" / \
        f"{e.network}_{e.publisher.replace('.', '-')}_{e.file_hash[:8]}.weights.h5"


def _hasher(kind: str):
    if kind == "md5":
        return hashlib.md5()
    if kind in ("sha256", "sha256-prefix"):
        return hashlib.sha256()
    raise WeightsError(f"unknown hash kind {kind!r}: use md5, sha256 or sha256-prefix")


def _digest(path: Path, kind: str) -> str:
    digest = _hasher(kind)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _matches(digest: str, e: PublishedWeights) -> bool:
    expected = e.file_hash.lower()
    return digest.startswith(expected) if e.hash_kind == "sha256-prefix" else digest == expected


def _url(e: PublishedWeights, base_url: str | None) -> str:
    base = base_url or os.environ.get(URL_ENV)
    return f"{base.rstrip('/')}/{e.file_name}" if base else e.url


def fetch(e: PublishedWeights, *, base_url: str | None = None, timeout: float = 60) -> Path:
    """The publisher's file, checked against its published hash: a verified copy already here,
    or a download (to a temporary sibling, renamed once its hash is right; a wrong file is never
    kept). Offline, a :class:`WeightsError` that names the URL and where to put the file by hand."""
    target = _download_path(e)
    for candidate in (target, *_other_caches(e)):
        if candidate.is_file():
            if _matches(_digest(candidate, e.hash_kind), e):
                return candidate
            if candidate == target:  # a damaged copy of ours (one of Keras' own is left alone)
                candidate.unlink()
    url = _url(e, base_url)
    print(f"downloading {e.source_name} ({e.publisher}) from {url} to {target}", file=sys.stderr)
    by_hand = (f"on a machine without internet access download {e.url} elsewhere and put it at "
               f"{target} (or point ${URL_ENV} at a folder or mirror holding {e.file_name})")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            digest = _hasher(e.hash_kind)
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
            if not _matches(digest.hexdigest(), e):
                raise WeightsError(
                    f"{e.file_name} from {url} has {e.hash_kind.split('-')[0]} "
                    f"{digest.hexdigest()}, but {e.publisher} publishes {e.file_hash}: the "
                    f"download is damaged or not the published file, and was not kept; try again, "
                    f"or {by_hand}")
    except WeightsError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise WeightsError(f"cannot download {e.file_name} from {url} ({reason}); {by_hand}") \
            from None
    return target


# ------------------------------------------------------------------------------ loading
def load(model, network: str, tag, *, build, skip_mismatch: bool = False) -> None:
    """Load the published weights ``tag`` of ``network`` into ``model`` (the full network, built
    with the manifest's arguments). ``build(input_shape)`` builds another such model: the
    conversion runs on one at the publisher's input size when ``model`` has another.
    ``skip_mismatch`` leaves out layers whose shapes differ (the classifier of a headless model at
    another input size). The publisher's own file is converted once and cached; another file of
    its layout (a path whose hash is not the published one) is converted on every call."""
    e = entry(network, tag)
    local = _local(tag)
    cache = converted_path(e)
    if local is not None and not _matches(_digest(local, e.hash_kind), e):
        cache = cache.with_name(f".{cache.stem}.local-{os.getpid()}.weights.h5")
        try:
            _convert_into_cache(model, e, local, build, cache)
            _load_file(model, cache, network, tag, skip_mismatch)
        finally:
            cache.unlink(missing_ok=True)
        return
    if cache.is_file():
        try:
            _load_file(model, cache, network, tag, skip_mismatch)
            return
        except OSError:  # a damaged cache (h5py cannot read it): convert again
            cache.unlink(missing_ok=True)
    source = local if local is not None else fetch(e)
    if _convert_into_cache(model, e, source, build, cache) is not model:
        _load_file(model, cache, network, tag, skip_mismatch)


def _convert_into_cache(model, e: PublishedWeights, source: Path, build, cache: Path):
    """Convert ``source`` into ``model`` (or into a model at the publisher's input size), save the
    result atomically at ``cache``; returns the model converted into."""
    publisher = _module(e.publisher)
    if publisher is None:
        raise WeightsError(f"{e.publisher} weights are unavailable here "
                           f"({_UNAVAILABLE[e.publisher]}); reinstall kerascnn")
    size = (e.input_size, e.input_size)
    target = model if tuple(model.input.shape[1:3]) == size else build((*size, 3))
    publisher.convert(target, publisher.read(source), e)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as tmp:
        staged = tmp.with_name(tmp.name + ".weights.h5")  # Keras insists on the suffix
        try:
            target.save_weights(staged)
            os.replace(staged, tmp)
        finally:
            staged.unlink(missing_ok=True)
    return target


def _load_file(model, path: Path, network: str, tag, skip_mismatch: bool) -> None:
    try:
        with warnings.catch_warnings():  # skipped layers are expected where skip_mismatch asks
            if skip_mismatch:
                warnings.simplefilter("ignore")
            model.load_weights(path, skip_mismatch=skip_mismatch)
    except ValueError as exc:  # a Flatten-fed classifier at another input size
        first = str(exc).splitlines()[0][:200]
        raise WeightsError(f"the ImageNet weights {tag!r} of {network} do not fit this model "
                           f"({first}); build it at the publisher's input size, or pass "
                           f"include_top=False") from None
