"""What the PNG-writing commands share (``visualize``, its ``occlusion``/``gradcam``/``top-patches``
kinds in :mod:`kerascnn.explain.pngs`): MODEL as a :class:`ModelSource`, image files as the model
sees them, and a written PNG as a :class:`Saved` record (what the tests check).

MODEL is resolved by :func:`kerascnn.sources.resolve`: a run directory, a ``.keras`` file, shipped
weights ``MODEL:TAG``, an exported SavedModel or a registered name (untrained). A run and shipped
weights bring their class names and evaluation transform (:class:`kerascnn.runs.RunConfig`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import plots
from .arithmetic import SizeError
from .errors import UserError

__all__ = ["Saved", "ModelSource", "OUT_DIR", "read_image", "load_model_source", "model_image",
           "save_png", "slug", "choices"]

#: Where the PNGs go without ``--out``.
OUT_DIR = Path("visualizations")


@dataclass
class Saved:
    """A written PNG: its path, its size in pixels, the image panels it shows and its texts;
    ``details`` holds what was computed (filtered images, volumes, layer names ...)."""

    path: Path
    size: tuple[int, int]
    panels: list[plots.Panel]
    texts: list[str]
    details: dict = field(default_factory=dict)


@dataclass
class ModelSource:
    """What MODEL named: a Keras model, or the directory of an exported SavedModel."""

    name: str
    model: object | None = None
    saved_model: Path | None = None
    transform: object | None = None      # the run's EvalTransform (None: fit to the input size)
    trained: bool = True
    class_names: list[str] | None = None  # the run's or shipped weights' (None: unknown)

    def class_name(self, index: int) -> str:
        """Class ``index`` by name when the run recorded names, else ``class INDEX``."""
        names = self.class_names or []
        return str(names[index]) if 0 <= index < len(names) else f"class {index}"


def read_image(path, *, max_size: int | None = None) -> np.ndarray:
    """A JPEG/PNG/GIF/BMP file as uint8 ``(H, W)`` (grayscale files) or ``(H, W, 3)``.

    With ``max_size`` a larger image is shrunk (Lanczos, aspect kept) to that longest side.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image file: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            gray = im.mode in ("1", "L", "LA", "I", "I;16", "F")
            im = im.convert("L" if gray else "RGB")
            if max_size and max(im.size) > max_size:
                im.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
            return np.asarray(im, dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"cannot read {path} as an image ({exc}); pass a JPEG, PNG, GIF or BMP "
                        f"file") from None


def load_model_source(spec, *, preprocessing: str | None = None) -> ModelSource:
    """Resolve MODEL (:func:`kerascnn.sources.resolve`): a run directory, a ``.keras`` file,
    shipped weights ``MODEL:TAG``, an exported SavedModel or a registered name (built untrained;
    ``preprocessing`` then makes it take uint8 pixels, ``"auto"`` picks ImageNet's statistics for
    colour networks and [0, 1] for grayscale ones)."""
    from . import inspect
    from .sources import resolve

    ref = resolve(spec).require("name", "weights", "run", "keras", "savedmodel",
                                command="visualize")
    if ref.kind == "savedmodel":
        return ModelSource(ref.display_name, saved_model=ref.path)
    if ref.kind == "weights":
        from .registry import get_model
        from .weights import run_record
        name, tag = ref.spec.split(":", 1)
        record = run_record(name, tag)
        return ModelSource(ref.display_name, model=get_model(name, weights=tag),
                           transform=record.eval_transform, class_names=list(record.class_names))
    options = {}
    if ref.kind == "name" and preprocessing:
        from .registry import model_info
        channels = model_info(ref.spec).input_shape[-1]
        options["preprocessing"] = preprocessing if preprocessing != "auto" else \
            "imagenet" if channels == 3 else "unit"
    try:
        model = inspect.resolve_model(ref.spec if ref.kind == "name" else ref.path, **options)
    except SizeError:
        raise
    except ValueError as exc:
        raise UserError(f"{exc} (MODEL is a run directory, a .keras file, shipped weights "
                        f"MODEL:TAG, an exported SavedModel folder export/NAME/VERSION or a "
                        f"registered model name)") from None
    if ref.kind == "name":
        return ModelSource(model.name, model=model, trained=False)
    run = ref.run_dir
    config = run.read_config() if run is not None else None
    return ModelSource(ref.display_name, model=model,
                       transform=config.eval_transform if config is not None else None,
                       class_names=list(config.class_names) if config is not None else None)


def model_image(source: ModelSource, path) -> np.ndarray:
    """The image file at ``path`` as ``source``'s model sees it: uint8 ``[H, W, C]`` fitted as the
    run's validation images were (kerascnn.export's image path, shared with serving)."""
    from .transforms import EvalTransform, load_images

    shape = tuple(int(d) for d in source.model.input.shape[1:])
    return load_images([path], source.transform or EvalTransform.default(shape))[0]


def save_png(fig, path, **details) -> Saved:
    """Write ``fig`` to ``path`` (a ``.png``, atomically) and say what it shows."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    plots.save_figure(fig, path)
    from PIL import Image
    with Image.open(path) as written:
        size = written.size
    return Saved(path, size, plots.panels(fig), plots.figure_texts(fig, draw=False), details)


def slug(text: str) -> str:
    """``text`` as a file-name part."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "model"


def choices(names, limit: int = 60) -> str:
    """At most ``limit`` names, comma separated, for error messages."""
    shown = ", ".join(names[:limit])
    return shown + (f" ... ({len(names) - limit} more)" if len(names) > limit else "")
