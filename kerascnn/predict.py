"""``python -m kerascnn predict MODEL_PATH IMAGE...``: top-5 classes of an exported model, locally.

``MODEL_PATH`` is a version directory written by ``kerascnn export`` (``export/NAME/3``), the model
directory (its newest version is used), a ``model.onnx`` file, or shipped weights named
``MODEL:TAG`` (``resnet20:cifar10``, see :mod:`kerascnn.weights`), which need no export. A SavedModel gets the encoded
files through its ``serving_bytes`` signature, exactly as TF Serving would; an ONNX model gets the
pixels that graph would make (:func:`kerascnn.export.decode_image` with the image pipeline the model
card records), and its class names from ``assets/class_names.txt`` beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import UserError
from .export import CLASS_NAMES_FILE, MODEL_CARD_FILE, TOP_K
from .transforms import EvalTransform, load_images

__all__ = ["Prediction", "Predictions", "load_predictor", "predict", "resolve_model_path"]

_BATCH = 32


class Prediction(list):
    """The top-k ``(class name, score)`` pairs of one image, best first; ``.path`` is the image."""

    def __init__(self, path, pairs):
        super().__init__(pairs)
        self.path = str(path)


def resolve_model_path(path) -> tuple[str, Path]:
    """``("savedmodel" | "onnx" | "weights", path)`` for a version directory, model directory,
    .onnx file, or ``MODEL:TAG`` of shipped weights (:func:`kerascnn.sources.resolve`)."""
    from .sources import resolve
    from .weights import available

    try:
        ref = resolve(path)
    except FileNotFoundError:
        if not Path(str(path)).exists():
            shipped = ", ".join(available()) or "none"
            raise UserError(f"{path} does not exist: pass export/NAME, export/NAME/VERSION, a "
                            f"model.onnx file written by `python -m kerascnn export`, or shipped "
                            f"weights as MODEL:TAG ({shipped})") from None
        raise UserError(f"{path} holds no exported model (no saved_model.pb, model.onnx or "
                        f"version directories); export one with "
                        f"`python -m kerascnn export RUN_DIR --name NAME`") from None
    if ref.kind == "run":
        raise UserError(f"{path} is a run directory: export it first with `python -m kerascnn "
                        f"export {path} --name NAME`, then predict with export/NAME")
    ref.require("savedmodel", "onnx", "weights", command="predict")
    return ref.kind, (ref.path if ref.path is not None else Path(ref.spec))


class _SavedModel:
    def __init__(self, path: Path):
        import tensorflow as tf

        try:
            signatures = tf.saved_model.load(str(path)).signatures
        except Exception as exc:  # a truncated or foreign SavedModel
            raise UserError(f"cannot load the SavedModel in {path}: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        if not {"serving_bytes", "serving_default"} <= set(signatures):
            raise UserError(f"{path} lacks the serving_default/serving_bytes signatures; export it "
                            f"with `python -m kerascnn export`")
        self._fn = signatures["serving_bytes"]
        self.num_classes = int(self._fn.structured_outputs["probabilities"].shape[-1])
        image = signatures["serving_default"].structured_input_signature[1]["image"]
        self.input_shape = tuple(int(d) for d in image.shape[1:])

    def __call__(self, files, k):
        import tensorflow as tf

        out = self._fn(image_bytes=tf.constant([Path(f).read_bytes() for f in files]))
        scores = out["top_k_scores"].numpy()[:, :k]
        names = [[c.decode("utf-8") for c in row[:k]] for row in out["top_k_classes"].numpy()]
        return scores, names


class _Onnx:
    def __init__(self, path: Path, class_names=None):
        import onnxruntime as ort

        try:
            options = ort.SessionOptions()
            # no busy-waiting threads between calls: halves batch-1 latency (BENCHMARKS.md)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._session = ort.InferenceSession(str(path), options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise UserError(f"onnxruntime cannot load {path}: {exc}") from None
        (inp,) = self._session.get_inputs()
        self._input = inp.name
        self.input_shape = tuple(int(d) for d in inp.shape[1:])
        names_file = Path(class_names) if class_names else path.parent / "assets" / CLASS_NAMES_FILE
        if not names_file.is_file():
            raise UserError(f"class names not found at {names_file}: keep the export's assets/ "
                            f"folder beside {path.name}, or pass --class-names FILE")
        self.class_names = [line for line in names_file.read_text(encoding="utf-8").splitlines()
                            if line.strip()]
        self.num_classes = int(self._session.get_outputs()[0].shape[-1])
        self.transform = _card_transform(path.parent / "assets" / MODEL_CARD_FILE,
                                         self.input_shape)
        if len(self.class_names) != self.num_classes:
            raise UserError(f"{names_file} lists {len(self.class_names)} classes but the model has "
                            f"{self.num_classes} outputs")

    def __call__(self, files, k):
        pixels = load_images(files, self.transform)
        (probabilities,) = self._session.run(None, {self._input: pixels})
        top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(probabilities, top, axis=1)
        return scores, [[self.class_names[i] for i in row] for row in top]


class _Shipped:
    """Shipped weights (``MODEL:TAG``): the Keras model and the pixels its training saw."""

    def __init__(self, spec: str):
        from .registry import get_model
        from .weights import run_record

        name, tag = spec.split(":", 1)  # resnet50:imagenet:keras has two colons
        run = run_record(name, tag)
        self._model = get_model(name, weights=tag)
        self.num_classes = run.num_classes
        self.class_names = run.class_names
        self.input_shape = run.input_shape
        self.transform = run.eval_transform

    def __call__(self, files, k):
        probabilities = self._model.predict_on_batch(
            load_images(files, self.transform))
        probabilities = np.asarray(probabilities)
        top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        scores = np.take_along_axis(probabilities, top, axis=1)
        return scores, [[self.class_names[i] for i in row] for row in top]


def _card_transform(card: Path, input_shape) -> EvalTransform:
    """The evaluation transform the export recorded (the plain fit when there is no card)."""
    try:
        pipeline = json.loads(card.read_text(encoding="utf-8"))["input"]["image_pipeline"]
        return EvalTransform.from_dict(pipeline, input_shape)
    except (OSError, ValueError, KeyError, TypeError, UserError):
        return EvalTransform.default(input_shape)


def load_predictor(model_path, class_names=None):
    """A callable ``(image files, k) -> (scores [N, k], class names [N][k])`` for an export."""
    kind, path = resolve_model_path(model_path)
    if kind == "weights":
        return _Shipped(str(model_path))
    return _SavedModel(path) if kind == "savedmodel" else _Onnx(path, class_names)


class Predictions(list):
    """The :class:`Prediction` of each readable image, in order; ``skipped`` holds
    ``(path, reason)`` of the files that could not be read (reported, not predicted)."""

    def __init__(self, predictions, skipped):
        super().__init__(predictions)
        self.skipped = list(skipped)


def predict(model_path, images, top_k: int = TOP_K, class_names=None) -> Predictions:
    """Top-``top_k`` ``(class, score)`` pairs for each image file, in order. A folder stands for
    its images (searched recursively, as ``export --images`` does); a file that cannot be read is
    skipped and reported in ``.skipped``, unless no image at all can be read (an error)."""
    from .transforms import image_files
    named = [Path(p) for p in images]
    missing = [str(p) for p in named if not p.exists()]
    if missing:
        raise UserError(f"image not found: {', '.join(missing)}")
    files = image_files(named)
    if not files:
        raise UserError(f"no JPEG, PNG, GIF or BMP images in {', '.join(map(str, named))}")
    predictor = load_predictor(model_path, class_names)
    k = min(TOP_K, predictor.num_classes)
    if not isinstance(top_k, int) or not 1 <= top_k <= k:
        raise UserError(f"--top must be between 1 and {k} (the model exports its top {k})")
    readable, skipped = [], []
    for path in files:
        try:  # decoded once here to find the bad files; the predictor decodes its own way
            load_images([path], EvalTransform.default(predictor.input_shape))
            readable.append(path)
        except UserError as exc:
            skipped.append((str(path), str(exc)))
    if not readable:
        raise UserError("no image could be read: " + "; ".join(r for _, r in skipped[:3]))
    results = []
    for start in range(0, len(readable), _BATCH):
        chunk = readable[start:start + _BATCH]
        scores, names = predictor(chunk, top_k)
        results += [Prediction(path, [(n, float(s)) for n, s in zip(row_names, row_scores)])
                    for path, row_names, row_scores in zip(chunk, names, scores)]
    return Predictions(results, skipped)


def add_arguments(parser) -> None:
    parser.add_argument("model", metavar="MODEL_PATH",
                        help="export/NAME, export/NAME/VERSION, a model.onnx file, or shipped "
                             "weights as MODEL:TAG (e.g. resnet20:cifar10)")
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="JPEG/PNG/GIF/BMP files, or folders of them")
    parser.add_argument("--top", type=int, default=TOP_K,
                        help=f"classes per image (default {TOP_K})")
    parser.add_argument("--class-names", default=None, metavar="FILE",
                        help="class names for an .onnx file without its assets/ folder")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> int:
    import sys
    results = predict(args.model, args.images, args.top, args.class_names)
    for path, reason in results.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps([{"image": r.path, "top_k": [{"class": c, "score": s} for c, s in r]}
                          for r in results], indent=2))
        return 0
    for result in results:
        print(result.path)
        width = max(len(c) for c, _ in result)
        for rank, (name, score) in enumerate(result, 1):
            print(f"  {rank}. {name:<{width}}  {score:.4f}")
    return 0
