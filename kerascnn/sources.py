"""What a MODEL argument names, decided in one place, and the newest version of an export.

Every command that takes a model (``inspect``, ``visualize``, ``export``, ``predict``) passes it to
:func:`resolve`, which says what it is; the command then loads it (or says which kinds it takes):

==============  ====================================================================
``name``        a registered network (``resnet50``): built, untrained
``weights``     shipped weights ``MODEL:TAG`` (``resnet20:cifar10``)
``run``         a run directory written by ``train.py`` (``model.keras`` + ``config.json``)
``keras``       a ``.keras`` file (its folder's ``config.json`` is used when there is one)
``savedmodel``  an export version folder ``export/NAME/VERSION`` (``saved_model.pb``)
``onnx``        a ``model.onnx`` file, or a version folder holding only one
==============  ====================================================================

A model folder ``export/NAME`` resolves to its newest version (:func:`latest_version`, the one
finder of "the newest integer version folder", which TF Serving's own policy also uses).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

__all__ = ["ModelRef", "resolve", "versions", "latest_version", "KINDS", "ONNX_FILE",
           "SAVED_MODEL_FILE"]

KINDS = ("name", "weights", "run", "keras", "savedmodel", "onnx")
ONNX_FILE = "model.onnx"
SAVED_MODEL_FILE = "saved_model.pb"
#: What each kind is, for error messages.
_FORMS = {
    "name": "a registered network name (python -m kerascnn inspect --list)",
    "weights": "shipped weights as MODEL:TAG (e.g. resnet20:cifar10)",
    "run": "a run directory written by train.py",
    "keras": "a .keras file",
    "savedmodel": "an export folder export/NAME or export/NAME/VERSION",
    "onnx": "a model.onnx file",
}


@dataclass(frozen=True)
class ModelRef:
    """A resolved MODEL argument: its kind, the path it points at (None for names and shipped
    weights) and the text it was given as."""

    kind: str
    spec: str
    path: Path | None = None

    @property
    def run_dir(self):
        """The :class:`kerascnn.runs.RunDir` of a run, or of a ``.keras`` file's folder when
        that holds a config.json; None otherwise."""
        from .runs import CONFIG_FILE, RunDir
        if self.kind == "run":
            return RunDir(self.path)
        if self.kind == "keras" and (self.path.parent / CONFIG_FILE).is_file():
            return RunDir(self.path.parent)
        return None

    @property
    def display_name(self) -> str:
        """A short name for files and titles: the run's folder, the export's NAME-vVERSION."""
        if self.kind in ("name", "weights"):
            return self.spec.replace(":", "-")
        if self.kind == "savedmodel" or (self.kind == "onnx" and self.path.name == ONNX_FILE):
            folder = self.path if self.kind == "savedmodel" else self.path.parent
            return f"{folder.parent.name}-v{folder.name}" if folder.name.isdigit() else folder.name
        if self.kind == "keras" and self.path.stem != "model":
            return self.path.stem
        return (self.path if self.kind == "run" else self.path.parent).name

    def require(self, *kinds: str, command: str = "this command") -> "ModelRef":
        """``self`` when its kind is one of ``kinds``, else a UserError listing what works."""
        if self.kind in kinds:
            return self
        forms = "; ".join(_FORMS[k] for k in kinds)
        raise UserError(f"{self.spec} is {_FORMS[self.kind]}, which {command} does not take; "
                        f"pass {forms}")


def versions(base, require: str | None = None) -> dict[int, Path]:
    """``{version: folder}`` of the integer-named folders of ``base`` (holding ``require`` when
    given); temporary and other folders are ignored, as TF Serving ignores them."""
    base = Path(base)
    if not base.is_dir():
        return {}
    found = {}
    for entry in base.iterdir():
        if entry.name.isdigit() and entry.is_dir() and \
                (require is None or (entry / require).is_file()):
            found[int(entry.name)] = entry
    return dict(sorted(found.items()))


def latest_version(base, require: str | None = None) -> Path | None:
    """The newest integer version folder of ``base`` (None when there is none)."""
    found = versions(base, require)
    return found[max(found)] if found else None


def _looks_like_path(spec: str) -> bool:
    return spec.endswith((".keras", ".onnx")) or "/" in spec or "\\" in spec


def resolve(spec) -> ModelRef:
    """What ``spec`` names (see the module docstring). A registered name wins over a folder of
    the same name; an unknown name raises :class:`kerascnn.registry.UnknownModelError` with the
    closest names; a path that does not exist or holds no model is a :class:`UserError`."""
    from .registry import list_models, model_info

    text = str(spec)
    path = Path(text)
    if ":" in text and not path.exists() and not _looks_like_path(text):
        from .weights import available
        from .weights.published import is_published
        if text in available() or is_published(text.split(":", 1)[1]):  # resnet50:imagenet
            return ModelRef("weights", text)
        name = text.split(":")[0]
        shipped = ", ".join(available()) or "none"
        raise UserError(f"no shipped weights {text!r} (shipped: {shipped}); "
                        f"`python -m kerascnn.weights` lists them"
                        + ("" if name in list_models() else f", and {name!r} is no network"))
    if not path.exists():
        if _looks_like_path(text):
            raise FileNotFoundError(f"no such model file or run directory: {path}")
        model_info(text)  # an unknown name: UnknownModelError with close names
        return ModelRef("name", model_info(text).name)
    if path.is_file():
        if path.suffix == ".keras":
            return ModelRef("keras", text, path)
        if path.suffix == ".onnx":
            return ModelRef("onnx", text, path)
        raise UserError(f"{path} is not a model file: pass {_FORMS['keras']}, "
                        f"{_FORMS['onnx']}, {_FORMS['run']} or {_FORMS['savedmodel']}")
    if not _looks_like_path(text) and text.lower() in list_models():
        return ModelRef("name", text.lower())
    from .runs import MODEL_FILE
    if (path / MODEL_FILE).is_file():
        return ModelRef("run", text, path)
    if (path / SAVED_MODEL_FILE).is_file():
        return ModelRef("savedmodel", text, path)
    if (path / ONNX_FILE).is_file():
        return ModelRef("onnx", text, path / ONNX_FILE)
    newest = latest_version(path)
    if newest is not None:
        return resolve(newest)
    raise FileNotFoundError(f"{path} holds no model: no {MODEL_FILE} (a run directory), "
                            f"{SAVED_MODEL_FILE}, {ONNX_FILE} or integer version folders "
                            f"(an export); train one with train.py --run-dir {path}, or export "
                            f"with `python -m kerascnn export RUN_DIR --name NAME`")
