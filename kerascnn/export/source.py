"""What gets exported: a run directory's (or a ``.keras`` file's) inference model, its class names,
its run record, and the images the parity checks run on."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from ..errors import ExportError, UserError
from ..inference import inference_model
from ..runs import RunConfig, RunDir
from ..transforms import EvalTransform, image_files, load_images

__all__ = ["ExportSource", "load_source", "servable_model", "sample_images"]


@dataclasses.dataclass
class ExportSource:
    """A model ready to export and what its run directory says about it (``run`` is None for a
    model in memory or a bare ``.keras`` file)."""

    path: Path
    model: object                        # the inference keras.Model: uint8 `image` -> `predictions`
    class_names: list[str]
    run: RunConfig | None = None
    metrics: dict = dataclasses.field(default_factory=dict)
    run_dir: RunDir | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.model.input.shape[1:])

    @property
    def transform(self) -> EvalTransform:
        """The run's evaluation transform (the input size's plain fit without a run record)."""
        if self.run is not None:
            return self.run.eval_transform
        return EvalTransform.default(self.input_shape)


def load_source(source, class_names=None) -> ExportSource:
    """Load a run directory (``model.keras``, ``config.json``, ``metrics.json``) or a .keras file.

    A ``.keras`` file inside a run directory picks up that directory's record and metrics.
    ``class_names`` (a list, or a text file with one name per line) overrides the record's; without
    either the classes are named by their index.
    """
    from ..sources import resolve

    path = Path(source)
    if not path.exists():
        raise ExportError(f"{path} does not exist: pass a run directory written by "
                          f"`train.py --run-dir DIR` or a .keras model file")
    if path.is_dir() and not RunDir.is_run(path):
        raise ExportError(f"{path} is not a run directory: it has no model.keras (train.py "
                          f"writes one at the end of training); pass the run directory or a "
                          f".keras file")
    if path.is_file() and path.suffix != ".keras":
        raise ExportError(f"{path} is not a .keras file; pass a run directory or a model saved "
                          f"with model.save('model.keras')")
    ref = resolve(path)
    model_file = ref.path / "model.keras" if ref.kind == "run" else ref.path
    run_dir = ref.run_dir
    try:
        run = run_dir.read_config() if run_dir is not None and run_dir.has_config() else None
        metrics = run_dir.read_metrics() if run_dir is not None else {}
    except UserError as exc:
        raise ExportError(str(exc)) from None

    from ..registry import load_model
    try:
        model = load_model(model_file)
    except Exception as exc:  # a corrupt zip, a missing custom layer, a truncated file ...
        raise ExportError(f"cannot load {model_file}: {type(exc).__name__}: {exc}. It must be a "
                          f"complete .keras file (train.py writes model.keras); re-run training or "
                          f"save the model again") from None
    model = servable_model(model)

    names = class_names if class_names is not None else (run.class_names if run else None)
    if isinstance(names, (str, os.PathLike)):
        names = _read_class_names(Path(names))
    num_classes = int(model.output.shape[-1])
    if names is None:
        names = [str(i) for i in range(num_classes)]
    names = [str(n) for n in names]
    if len(names) != num_classes:
        raise ExportError(f"the model has {num_classes} outputs but {len(names)} class names were "
                          f"given; class_names in config.json (or --class-names) must list one "
                          f"name per output")
    bad = [n for n in names if not n.strip() or "\n" in n or "\r" in n]
    if bad:
        raise ExportError(f"class names must be non-empty single lines; got {bad[:3]!r}")
    return ExportSource(path, model, names, run, metrics, run_dir)


def _read_class_names(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise ExportError(f"cannot read class names from {path}: {exc}") from None


def servable_model(model):
    """The graph to serve: :func:`kerascnn.inference.inference_model` of a model that serving
    can take (functional, one fixed-size uint8 ``image`` input, ``[N, classes]`` out)."""
    import keras

    if not isinstance(model, keras.Model) or not hasattr(model, "inputs") or model.inputs is None:
        raise ExportError("only functional Keras models can be exported (kerascnn.get_model and "
                          "train.py build functional models)")
    if len(model.inputs) != 1:
        raise ExportError(f"the model has {len(model.inputs)} inputs; an image classifier for "
                          f"serving has exactly one, the uint8 `image`")
    inputs = model.inputs[0]
    if len(inputs.shape) != 4 or any(d is None for d in inputs.shape[1:]):
        raise ExportError(f"the model input must be a fixed-size image batch [N, H, W, C], got "
                          f"shape {tuple(inputs.shape)}; build the model with an input_shape")
    if str(inputs.dtype) != "uint8":
        raise ExportError(f"the model takes {inputs.dtype} input, but exported models take raw "
                          f"uint8 pixels with the preprocessing inside; build it with "
                          f"get_model(..., preprocessing='imagenet'|'unit'|{{...}}) as train.py "
                          f"does")
    if len(model.outputs) > 1:
        try:
            model.get_layer("predictions")
        except ValueError:
            raise ExportError(f"the model has {len(model.outputs)} outputs and none is the layer "
                              f"`predictions`; name the classifier's output layer `predictions`"
                              ) from None
    model = inference_model(model)
    if len(model.output.shape) != 2:
        raise ExportError(f"the model output must be [N, classes], got {tuple(model.output.shape)}")
    return model


def sample_images(source: ExportSource, images=None, count: int = 8) -> tuple[np.ndarray, str]:
    """The images the parity checks run on, and where they came from.

    ``images`` is a uint8 batch, or image files/directories; otherwise the first images of the
    run's validation split when its dataset is readable here (:meth:`RunDir.validation_data`),
    otherwise a fixed synthetic batch (gradients and noise), recorded as such in the model card.
    """
    shape = source.input_shape
    if images is not None and not isinstance(images, (str, os.PathLike, list, tuple)):
        batch = np.asarray(images)
        if batch.dtype != np.uint8 or batch.shape[1:] != shape:
            raise ExportError(f"sample images must be uint8 [N, {', '.join(map(str, shape))}], got "
                              f"{batch.dtype} {batch.shape}")
        return batch, "given array"
    if images is not None:
        files = image_files([images] if isinstance(images, (str, os.PathLike)) else images)
        if not files:
            raise ExportError(f"no JPEG/PNG images found in {images}")
        return load_images(files[:count], source.transform), f"{len(files[:count])} files"
    batch = None
    if source.run_dir is not None and source.run is not None and source.run.dataset:
        try:
            batch = validation_images(source.run_dir, count)
        except Exception:  # the dataset may live on another machine: fall back to synthetic
            batch = None
    if batch is not None and len(batch) and batch.shape[1:] == shape:
        return batch, f"dataset {source.run.dataset}"
    rng = np.random.default_rng(0)
    height, width, channels = shape
    ramp = np.linspace(0, 255, height * width).reshape(height, width, 1)
    batch = np.clip(ramp[None] * rng.uniform(0.2, 1.0, (count, 1, 1, channels))
                    + rng.normal(0, 40, (count, height, width, channels)), 0, 255)
    return batch.astype(np.uint8), "synthetic"


def validation_images(run_dir: RunDir, count: int, *, verbose: bool = False) -> np.ndarray:
    """The first ``count`` images of the run's validation split, as the model takes them."""
    _, batches, _ = run_dir.validation_data(batch_size=count, verbose=verbose)
    for x, _ in batches.take(1):
        return np.asarray(x)
    return np.zeros((0, *run_dir.read_config().input_shape), np.uint8)
