"""Export a trained model for TF Serving: a versioned SavedModel with named signatures, plus ONNX.

``python -m kerascnn export RUN_DIR|MODEL.keras --name NAME`` writes ``export/NAME/VERSION/``, the
layout TF Serving watches (``base_path/<integer version>/``, serving-protocol.md §4.1):

- a SavedModel with two signatures built through ``keras.export.ExportArchive`` (§4.2-4.3):
  ``serving_default`` takes raw pixels (``image``, uint8 ``[N, H, W, C]``) and ``serving_bytes``
  encoded JPEG/PNG files (``image_bytes``, string ``[N]``, sent as ``{"b64": ...}``) that are
  decoded and fitted in the graph as the run's validation images were; both return
  ``probabilities``, ``top_k_indices``, ``top_k_scores`` and ``top_k_classes``;
- ``assets/class_names.txt`` (the lookup table behind ``top_k_classes`` reads it) and
  ``assets/model_card.json``;
- ``model.onnx`` converted by tf2onnx (opset 17, dynamic batch, the same uint8 input), checked with
  ``onnx.checker`` and run in onnxruntime: the export fails unless onnxruntime and Keras agree to
  within 1e-4 on real images (§5: a graph can "convert" and still not load).

A version is written into a dot-named temporary directory beside it and renamed into place, so TF
Serving (which ignores non-integer names) never sees half a version, and a failed export leaves
nothing behind.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .cli import UserError
from .files import write_json

__all__ = ["export_model", "load_source", "inference_model", "image_pipeline", "fit_image",
           "decode_image", "load_images", "sample_images", "write_savedmodel", "savedmodel_parity",
           "convert_to_onnx", "onnx_parity", "next_version", "model_card", "ExportError",
           "ExportSource", "FORMATS", "ONNX_OPSET", "PARITY_TOLERANCE", "TOP_K", "SIGNATURES",
           "OUTPUTS"]

FORMATS = ("savedmodel", "onnx")
ONNX_OPSET = 17             # tf2onnx 1.17 supports up to 18; 17 is the project's pin (§5)
PARITY_TOLERANCE = 1e-4     # max |p_onnx - p_keras| over the sample images
TOP_K = 5
CLASS_NAMES_FILE = "class_names.txt"
MODEL_CARD_FILE = "model_card.json"
ONNX_FILE = "model.onnx"
#: signature -> (input name, dtype); every signature returns the same four outputs.
SIGNATURES = {"serving_default": ("image", "uint8"), "serving_bytes": ("image_bytes", "string")}
OUTPUTS = ("probabilities", "top_k_indices", "top_k_scores", "top_k_classes")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TMP_PREFIX = ".tmp-"
#: Keras layers that only act in training (identity at inference) and that break ONNX conversion
#: (keras-team/keras#21346): the exported graph replaces them with Identity layers.
_AUGMENTATION = {"AugMix", "CutMix", "MixUp", "RandAugment"}


class ExportError(UserError):
    """The export cannot go on; the message names the problem and the fix. Nothing was written."""


@dataclasses.dataclass
class ExportSource:
    """A model ready to export and what its run directory says about it."""

    path: Path
    model: object                        # the inference keras.Model: uint8 `image` -> `predictions`
    class_names: list[str]
    config: dict = dataclasses.field(default_factory=dict)
    metrics: dict = dataclasses.field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.model.input.shape[1:])

    @property
    def pipeline(self) -> dict:
        return image_pipeline(self.config, self.input_shape)


# --------------------------------------------------------------------------- loading the source

def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read {path}: {exc}; it should be the JSON file that train.py "
                          f"writes into the run directory") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def load_source(source, class_names=None) -> ExportSource:
    """Load a run directory (``model.keras``, ``config.json``, ``metrics.json``) or a .keras file.

    A ``.keras`` file inside a run directory picks up that directory's config and metrics.
    ``class_names`` (a list, or a text file with one name per line) overrides the config's; without
    either the classes are named by their index.
    """
    path = Path(source)
    if not path.exists():
        raise ExportError(f"{path} does not exist: pass a run directory written by "
                          f"`train.py --run-dir DIR` or a .keras model file")
    if path.is_dir():
        run_dir, model_file = path, path / "model.keras"
        if not model_file.is_file():
            raise ExportError(f"{path} is not a run directory: it has no model.keras (train.py "
                              f"writes one at the end of training); pass the run directory or a "
                              f".keras file")
    else:
        if path.suffix != ".keras":
            raise ExportError(f"{path} is not a .keras file; pass a run directory or a model saved "
                              f"with model.save('model.keras')")
        run_dir, model_file = path.parent, path
    config = _read_json(run_dir / "config.json") if (run_dir / "config.json").is_file() else {}
    metrics = _read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}

    from .registry import load_model
    try:
        model = load_model(model_file)
    except Exception as exc:  # a corrupt zip, a missing custom layer, a truncated file ...
        raise ExportError(f"cannot load {model_file}: {type(exc).__name__}: {exc}. It must be a "
                          f"complete .keras file (train.py writes model.keras); re-run training or "
                          f"save the model again") from None
    model = inference_model(model)

    names = class_names if class_names is not None else config.get("class_names")
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
    return ExportSource(path, model, names, config, metrics)


def _read_class_names(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise ExportError(f"cannot read class names from {path}: {exc}") from None


def _is_augmentation(layer) -> bool:
    import keras

    name = type(layer).__name__
    if isinstance(layer, keras.layers.Pipeline):
        return all(map(_is_augmentation, layer.layers))
    return type(layer).__module__.startswith("keras.") and (name.startswith("Random")
                                                             or name in _AUGMENTATION)


def inference_model(model):
    """The graph to serve: one uint8 ``image`` input, the ``predictions`` output only.

    Auxiliary classifiers (GoogLeNet ``aux_logits``) are dropped, augmentation layers become
    Identity; dropout is inactive because every endpoint calls the model with ``training=False``.
    """
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
    outputs = model.outputs
    if len(outputs) > 1:
        try:
            output = model.get_layer("predictions").output
        except ValueError:
            raise ExportError(f"the model has {len(outputs)} outputs and none is the layer "
                              f"`predictions`; name the classifier's output layer `predictions`"
                              ) from None
        model = keras.Model(inputs, output, name=model.name)
    if len(model.output.shape) != 2:
        raise ExportError(f"the model output must be [N, classes], got {tuple(model.output.shape)}")
    if any(_is_augmentation(layer) for layer in model.layers):
        model = keras.models.clone_model(
            model, clone_function=lambda layer: (keras.layers.Identity(name=layer.name)
                                                 if _is_augmentation(layer) else layer))
    return model


# --------------------------------------------------------------------------- images

def image_pipeline(config: dict, input_shape) -> dict:
    """How an image of any size becomes the model's input: the run's *validation* transform.

    ``kerascnn.data`` fits photos by resizing the shorter side to ``resize`` (antialiased) and
    taking the centre ``crop``; ``resize`` is ``size/0.875`` after ``crop_flip`` training (the
    ImageNet evaluation crop), else the input size. Glyphs (MNIST) are centre-padded (28 -> 32).
    Read from the run's config (``dataset``, ``recipe.augment``); recorded in the model card.
    """
    height, width, _ = (int(d) for d in input_shape)
    style = config.get("style") or (config.get("data") or {}).get("style")
    if style not in ("glyphs", "photos"):
        style = _dataset_style(config)
    augment = config.get("augment") or (config.get("recipe") or {}).get("augment")
    size = max(height, width)
    resize = round(size / 0.875) if augment == "crop_flip" and style == "photos" else size
    return {"style": style, "resize": resize, "crop": [height, width]}


def _dataset_style(config: dict) -> str:
    """``glyphs`` for MNIST-like datasets (as ``kerascnn.data`` decides it), else ``photos``."""
    from . import data

    try:
        kind, value = data.parse_spec(config.get("dataset"))
    except UserError:
        kind, value = "", ""
    if kind == "idx":
        return "glyphs"
    name = (config.get("data") or {}).get("name")  # train.py records the dataset's name
    if not name:
        name = value.split("/")[0] if kind == "tfds" else \
            data._dataset_name(Path(value)) if kind == "folder" else ""
    return "glyphs" if str(name).lower().replace("-", "_") in data._GLYPH_DATASETS else "photos"


def fit_image(image, pipeline: dict):
    """A decoded uint8 ``[h, w, C]`` image -> the model's uint8 ``[H, W, C]`` input.

    The photo transform is ``kerascnn.data``'s own (one home with training); an image already of
    the input's size passes unchanged. Glyph images larger than the input, which training never
    saw, are first shrunk to fit inside it (aspect kept) so a photo of a digit still works.
    """
    import tensorflow as tf

    from .data import _fit

    height, width = pipeline["crop"]
    if pipeline["style"] == "glyphs":
        image = _shrink_to_fit(image, height, width)
        return tf.image.resize_with_crop_or_pad(image, height, width)
    image = _fit(image, pipeline["resize"], "photos")
    return tf.image.resize_with_crop_or_pad(image, height, width)


def _shrink_to_fit(image, height, width):
    import tensorflow as tf

    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.minimum(1.0, tf.reduce_min(tf.constant([height, width], tf.float32) / shape))

    def shrink():
        new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), 1)
        resized = tf.image.resize(image, new, antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

    return tf.cond(scale < 1.0, shrink, lambda: image)


def decode_image(data, input_shape, pipeline: dict | None = None):
    """Encoded JPEG/PNG/GIF/BMP bytes -> the model's uint8 ``[H, W, C]`` input.

    The one home of the serving-side image path: ``serving_bytes`` runs it in the graph and
    ``kerascnn predict`` runs it for ONNX, so both see the same pixels. It decodes to the model's
    channels (a colour JPEG becomes grayscale for LeNet), then :func:`fit_image`.
    """
    import tensorflow as tf

    pipeline = pipeline or image_pipeline({}, input_shape)
    channels = int(input_shape[-1])
    if channels == 1:  # GIF and BMP decoders only give colour: convert those as kerascnn.data does
        from .data import _to_channels

        magic = tf.strings.substr(data, 0, 3)
        image = tf.cond(
            tf.logical_or(tf.equal(magic, "GIF"), tf.strings.regex_full_match(magic, "BM.")),
            lambda: _to_channels(tf.io.decode_image(data, channels=3, expand_animations=False), 1),
            lambda: tf.io.decode_image(data, channels=1, expand_animations=False))
        image.set_shape([None, None, 1])
    else:
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
    return fit_image(image, pipeline)


def load_images(paths, input_shape, pipeline: dict | None = None) -> np.ndarray:
    """Read image files into a uint8 ``[N, H, W, C]`` batch through :func:`decode_image`."""
    import tensorflow as tf

    batch = []
    for path in map(Path, paths):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read image {path}: {exc.strerror or exc}") from None
        try:
            batch.append(decode_image(tf.constant(data), input_shape, pipeline).numpy())
        except (tf.errors.InvalidArgumentError, ValueError):
            raise UserError(f"cannot decode {path}: it is not a JPEG, PNG, GIF or BMP image"
                            ) from None
    return np.stack(batch) if batch else np.zeros((0, *input_shape), np.uint8)


_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp"}


def _image_files(paths) -> list[Path]:
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
        else:
            files.append(path)
    return files


def sample_images(source: ExportSource, images=None, count: int = 8) -> tuple[np.ndarray, str]:
    """The images the parity checks run on, and where they came from.

    ``images`` is a uint8 batch, or image files/directories; otherwise a few images of the run's
    dataset when it is readable here (a folder, IDX files or the bundled sample), otherwise a fixed
    synthetic batch (gradients and noise), recorded as such in the model card.
    """
    shape = source.input_shape
    if images is not None and not isinstance(images, (str, os.PathLike, list, tuple)):
        batch = np.asarray(images)
        if batch.dtype != np.uint8 or batch.shape[1:] != shape:
            raise ExportError(f"sample images must be uint8 [N, {', '.join(map(str, shape))}], got "
                              f"{batch.dtype} {batch.shape}")
        return batch, "given array"
    if images is not None:
        files = _image_files([images] if isinstance(images, (str, os.PathLike)) else images)
        if not files:
            raise ExportError(f"no JPEG/PNG images found in {images}")
        return load_images(files[:count], shape, source.pipeline), f"{len(files[:count])} files"
    try:
        batch = _dataset_images(source, count)
    except Exception:  # the dataset may live on another machine: fall back to synthetic images
        batch = None
    if batch is not None and len(batch):
        return batch, f"dataset {source.config.get('dataset')}"
    rng = np.random.default_rng(0)
    height, width, channels = shape
    ramp = np.linspace(0, 255, height * width).reshape(height, width, 1)
    batch = np.clip(ramp[None] * rng.uniform(0.2, 1.0, (count, 1, 1, channels))
                    + rng.normal(0, 40, (count, height, width, channels)), 0, 255)
    return batch.astype(np.uint8), "synthetic"


def _dataset_images(source: ExportSource, count: int):
    """The first image of each class of the run's dataset, in turn (None if it is not here)."""
    import tensorflow as tf

    from . import data

    spec = source.config.get("dataset")
    if not spec:
        return None
    kind, value = data.parse_spec(spec)
    if kind == "idx":
        path = Path(value)
        files = [path] if path.is_file() else sorted(  # t10k (the validation set) first
            path.glob("*images-idx3-ubyte*"), key=lambda p: not p.name.startswith("t10k"))
        if not files:
            return None
        digits = data.read_idx(files[0])[:count]
        images = tf.convert_to_tensor(digits.reshape(*digits.shape[:3], -1))
        if source.input_shape[-1] == 3:
            images = tf.image.grayscale_to_rgb(images)
        return np.stack([fit_image(image, source.pipeline).numpy() for image in images])
    if kind not in ("folder", "sample"):
        return None
    root = data.SAMPLE_DIR if kind == "sample" else Path(value)
    root = next((root / v for v in ("val", "validation", "test", "train") if (root / v).is_dir()),
                root)
    per_class = [sorted(p for p in d.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
                 for d in sorted(root.iterdir()) if d.is_dir()]
    files = [f for group in zip(*[c for c in per_class if c]) for f in group][:count] \
        if any(per_class) else []
    return load_images(files, source.input_shape, source.pipeline) if files else None


# --------------------------------------------------------------------------- SavedModel

def _top_k(probabilities, table, k):
    import tensorflow as tf

    scores, indices = tf.math.top_k(probabilities, k=k)
    return {"probabilities": probabilities, "top_k_indices": tf.cast(indices, tf.int32),
            "top_k_scores": scores, "top_k_classes": table.lookup(tf.cast(indices, tf.int64))}


def write_savedmodel(model, directory: Path, class_names_file: Path,
                     pipeline: dict | None = None) -> None:
    """Write the SavedModel with the ``serving_default`` and ``serving_bytes`` signatures.

    ``pipeline`` (:func:`image_pipeline`) is how ``serving_bytes`` fits decoded images.
    """
    import keras
    import tensorflow as tf

    shape = height, width, channels = tuple(int(d) for d in model.input.shape[1:])
    pipeline = pipeline or image_pipeline({}, shape)
    k = min(TOP_K, int(model.output.shape[-1]))
    archive = keras.export.ExportArchive()
    archive.track(model)
    # The table reads class_names.txt, which makes the file an asset copied into assets/.
    table = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
        str(class_names_file), tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER,
        tf.string, tf.lookup.TextFileIndex.WHOLE_LINE), default_value="")
    archive.track(table)

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.uint8,
                                                name="image")])
    def serving_default(image):
        return _top_k(model(image, training=False), table, k)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serving_bytes(image_bytes):
        images = tf.map_fn(lambda data: decode_image(data, shape, pipeline), image_bytes,
                           fn_output_signature=tf.TensorSpec(shape, tf.uint8))
        return _top_k(model(images, training=False), table, k)

    _trace(serving_default, model)  # a clear error before ExportArchive's own tracing
    archive.add_endpoint("serving_default", serving_default)
    archive.add_endpoint("serving_bytes", serving_bytes)
    archive.write_out(str(directory), verbose=False)


def savedmodel_parity(directory: Path, model, images: np.ndarray) -> float:
    """Max |serving_default - Keras| over ``images`` for the SavedModel in ``directory``."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(directory))
    got = loaded.signatures["serving_default"](image=tf.constant(images))["probabilities"].numpy()
    return float(np.max(np.abs(got - _keras_probabilities(model, images))))


def _keras_probabilities(model, images: np.ndarray) -> np.ndarray:
    return np.asarray(model(images, training=False), dtype=np.float32)


# --------------------------------------------------------------------------- ONNX

def convert_to_onnx(model, opset: int = ONNX_OPSET):
    """The uint8 ``image`` -> ``probabilities`` graph as a checked ONNX ModelProto (batch ``N``).

    Only the tensor path: the string decoder has no ONNX equivalent (§5). ``from_keras`` breaks on
    Keras 3 and ``from_function`` turns captured constants (the mean and variance of
    ``preprocess_normalize``) into extra graph inputs, so the function is frozen here and handed
    to ``from_graph_def``.

    tf2onnx needs some 40 bytes of memory per byte of constants it converts (it copies the graph
    around each of its optimizers): ~23 GB for VGG-16. So the convolution and dense kernels are
    traced as graph inputs instead (``keras.StatelessScope``) and put in as initializers after the
    conversion (:func:`_weights_as_initializers`): ResNet-50 converts in 1 GB and seconds.
    """
    import logging

    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)

    tf2onnx.logging.set_level(logging.ERROR)
    height, width, channels = (int(d) for d in model.input.shape[1:])
    kernels = [w for w in model.weights if len(w.shape) >= 2]
    specs = [tf.TensorSpec([None, height, width, channels], tf.uint8, name="image"),
             *(tf.TensorSpec(w.shape, w.dtype, name=f"kernel_{i}") for i, w in enumerate(kernels))]

    @tf.function(input_signature=specs)
    def probabilities(image, *values):
        with keras.StatelessScope(state_mapping=list(zip(kernels, values))):
            return model(image, training=False)

    concrete = _trace(probabilities, model)
    names = ["image"]
    for w in kernels:  # the Keras weight paths, made unique (nested models may repeat them)
        names.append(w.path if w.path not in names else f"{w.path}_{len(names)}")
    try:
        frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=False,
                                                   aggressive_inlining=True)
        inputs, (out,) = [t.name for t in frozen.inputs], frozen.outputs
        proto, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(add_shapes=True), name=model.name, input_names=inputs,
            output_names=[out.name], opset=opset,
            tensors_to_rename={**dict(zip(inputs, names)), out.name: "probabilities"})
    except Exception as exc:
        raise ExportError(f"tf2onnx could not convert the model to ONNX (opset {opset}): "
                          f"{type(exc).__name__}: {exc}; export with --formats savedmodel"
                          ) from None
    _weights_as_initializers(proto, {name: np.asarray(w.numpy())
                                     for name, w in zip(names[1:], kernels)})
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the converted ONNX model is invalid: {exc}") from None
    return proto


def _weights_as_initializers(proto, weights: dict) -> None:
    """Turn the graph inputs named in ``weights`` into initializers holding their values.

    tf2onnx transposes each convolution kernel (HWIO -> OIHW) with a Transpose node on the input;
    those are applied here, so the file holds ready kernels as a normal conversion would.
    """
    from onnx import helper, numpy_helper

    uses = {}
    for node in proto.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    folded, renamed, kept = {}, {}, []
    for node in proto.graph.node:
        source = node.input[0] if node.input else None
        if node.op_type == "Transpose" and source in weights and uses[source] == 1:
            perm = next(helper.get_attribute_value(a) for a in node.attribute if a.name == "perm")
            folded[source] = np.ascontiguousarray(np.transpose(weights[source], perm))
            renamed[node.output[0]] = source  # the kernel keeps its Keras name, now in OIHW
        else:
            kept.append(node)
    for node in kept:
        node.input[:] = [renamed.get(name, name) for name in node.input]
    used = {name for node in kept for name in node.input}
    values = {name: folded.get(name, value) for name, value in weights.items() if name in used}
    del proto.graph.node[:]
    proto.graph.node.extend(kept)
    image = [value for value in proto.graph.input if value.name not in weights]
    del proto.graph.input[:]
    proto.graph.input.extend(image)
    proto.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in values.items())


def _trace(function, model):
    """The concrete graph of a serving function; a model that cannot run as a graph is an error."""
    try:
        return function.get_concrete_function()
    except Exception as exc:  # e.g. a layer whose graph-mode kernel rejects this input size
        raise ExportError(f"{model.name} cannot run as a TensorFlow graph with input "
                          f"{tuple(model.input.shape)}: {_essence(exc)}") from None


def _essence(exc) -> str:
    """The lines of a Keras/autograph error that say what went wrong (not its traceback)."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines()
             if line.strip()]
    for i, line in enumerate(lines):
        if "Exception encountered when calling" in line:
            return " ".join([line[line.index("Exception encountered"):], *lines[i + 1:i + 2]])
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"


def onnx_parity(proto, model, images: np.ndarray) -> float:
    """Run the ONNX model in onnxruntime on ``images``: max |p_onnx - p_keras|.

    The whole batch goes through at once, which also proves the batch dimension is dynamic.
    """
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(proto.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        (got,) = session.run(["probabilities"], {"image": images})
    except Exception as exc:  # ORT refuses graphs that tf2onnx "converted" (§5)
        raise ExportError(f"onnxruntime cannot run the converted model: {type(exc).__name__}: "
                          f"{exc}; export with --formats savedmodel") from None
    return float(np.max(np.abs(got - _keras_probabilities(model, images))))


# --------------------------------------------------------------------------- versions

def _versions(base: Path) -> list[int]:
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def next_version(export_dir, name: str) -> int:
    """The next free version number of ``export_dir/name`` (1 for a new model)."""
    versions = _versions(Path(export_dir) / name)
    return versions[-1] + 1 if versions else 1


def _temporary_name(version: int) -> str:
    """``.tmp-VERSION-HOST-PID-RANDOM``: who is writing it, so that debris can be recognised."""
    return f"{_TMP_PREFIX}{version}-{_host()}-{os.getpid()}-{secrets.token_hex(4)}"


def _host() -> str:
    import socket
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname()) or "host"


def _remove_stale_temporaries(base: Path) -> None:
    """Delete temporary directories of exports on this host whose process died (killed)."""
    if not base.is_dir():
        return
    pattern = re.compile(rf"{re.escape(_TMP_PREFIX)}\d+-{re.escape(_host())}-(\d+)-[0-9a-f]+$")
    for path in base.glob(f"{_TMP_PREFIX}*"):
        match = pattern.match(path.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- model card

def _preprocessing(model, config: dict) -> dict:
    if isinstance(config.get("preprocessing"), dict):
        return config["preprocessing"]
    found = {}
    for layer in model.layers:
        if layer.name == "preprocess_rescale":
            found.update(scale=float(layer.scale), offset=float(layer.offset))
        elif layer.name == "preprocess_normalize":
            found.update(mean=np.ravel(layer.mean).tolist(),
                         std=np.sqrt(np.ravel(layer.variance)).tolist())
    return found


def _macs(model):
    """Multiply-accumulates per image, from the lecture table of ``kerascnn.inspect``."""
    try:
        from .inspect import layer_table, table_totals
        return int(table_totals(layer_table(model)).macs)
    except Exception:  # the card is still useful without MACs; inspect owns that arithmetic
        return None


def model_card(source: ExportSource, name: str, version: int, formats, checks: dict) -> dict:
    """Everything a consumer of the export needs to know, as JSON (assets/model_card.json)."""
    import keras
    import tensorflow as tf

    from . import __version__

    model, config = source.model, source.config
    height, width, channels = source.input_shape
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    total = int(model.count_params())
    k = min(TOP_K, len(source.class_names))
    return {
        "name": name,
        "version": version,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "architecture": config.get("arch", model.name),
        "model_options": config.get("model_options", {}),
        "parameters": {"trainable": trainable, "total": total, "non_trainable": total - trainable},
        "macs": _macs(model),
        "num_classes": len(source.class_names),
        "class_names": f"assets/{CLASS_NAMES_FILE}",
        "dataset": config.get("dataset"),
        "validation": {k_: v for k_, v in source.metrics.items() if k_.startswith("val_")},
        "metrics": source.metrics,
        "input": {
            "shape": [None, height, width, channels], "dtype": "uint8",
            "pixels": "raw 0-255, RGB" if channels == 3 else "raw 0-255",
            "signatures": {
                "serving_default": {"image": f"uint8 [N, {height}, {width}, {channels}]"},
                "serving_bytes": {"image_bytes": "string [N]: encoded JPEG/PNG files (REST: "
                                                 "{\"b64\": ...}), decoded and fitted in the "
                                                 "graph as image_pipeline says"}},
            "image_pipeline": {**source.pipeline, "description": _describe(source.pipeline)},
        },
        "outputs": {"probabilities": f"float32 [N, {len(source.class_names)}]",
                    "top_k_indices": f"int32 [N, {k}]", "top_k_scores": f"float32 [N, {k}]",
                    "top_k_classes": f"string [N, {k}]"},
        "preprocessing": _preprocessing(model, config),
        "training": {key: config[key] for key in ("recipe", "epochs", "batch_size", "seed")
                     if key in config},
        "formats": list(formats),
        "checks": checks,
        "source": str(source.path),
        "versions": {"kerascnn": __version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__, **_onnx_versions(formats),
                     "trained_with": config.get("versions", {})},
    }


def _describe(pipeline: dict) -> str:
    height, width = pipeline["crop"]
    if pipeline["style"] == "glyphs":
        return (f"centre-padded to {height}x{width} (larger images first shrunk to fit, aspect "
                f"kept), as training fitted its glyphs")
    return (f"shorter side resized to {pipeline['resize']} (bilinear, antialiased), centre "
            f"{height}x{width} crop: the run's validation transform")


def _onnx_versions(formats) -> dict:
    if "onnx" not in formats:
        return {}
    import onnx
    import onnxruntime
    import tf2onnx
    return {"tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "onnx_opset": ONNX_OPSET}


# --------------------------------------------------------------------------- export

def _check_arguments(name, version, formats, tolerance) -> tuple:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ExportError(f"invalid model name {name!r}: use letters, digits, '_', '-' and '.', "
                          f"starting with a letter or digit (it becomes a TF Serving model name "
                          f"and a directory)")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                or version < 1):
        raise ExportError(f"--version must be a positive integer (TF Serving reads version "
                          f"directories as integers), got {version!r}")
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = tuple(dict.fromkeys(f.lower() for f in formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"unknown export format {', '.join(unknown) or '(none)'}; choose from "
                          f"{', '.join(FORMATS)} (comma separated)")
    if not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1):
        raise ExportError(f"--tolerance must be a probability difference between 0 and 1, got "
                          f"{tolerance!r}")
    return formats


def export_model(source, name: str, export_dir="export", version: int | None = None,
                 formats=FORMATS, *, class_names=None, images=None,
                 tolerance: float = PARITY_TOLERANCE) -> Path:
    """Export a run directory or ``.keras`` file to ``export_dir/name/version``; returns that path.

    ``version`` defaults to the next free one; an existing version is never overwritten. ``images``
    (a uint8 batch or image files) are what the parity checks run on (see :func:`sample_images`).
    Raises :class:`ExportError` with nothing written when the source is missing or corrupt, or when
    a check fails (the ONNX parity error gives the measured difference).
    """
    formats = _check_arguments(name, version, formats, tolerance)
    if isinstance(source, ExportSource):  # a model in memory (tests, benchmarks)
        src = dataclasses.replace(source, model=inference_model(source.model))
    else:
        src = load_source(source, class_names)
    batch, origin = sample_images(src, images)

    base = Path(export_dir) / name
    _remove_stale_temporaries(base)
    version = next_version(export_dir, name) if version is None else version
    target = base / str(version)
    if target.exists():
        raise ExportError(f"{target} already exists and is never overwritten; pick another "
                          f"--version or leave it out for the next free one "
                          f"({next_version(export_dir, name)})")
    created = [d for d in (base, *base.parents) if not d.exists()]  # removed again on failure
    try:
        base.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ExportError(f"{base} exists but is not a directory; choose another --name or "
                          f"--export-dir") from None
    tmp = base / _temporary_name(version)
    checks = {"images": len(batch), "image_source": origin, "tolerance": tolerance}
    on_images = f"on {len(batch)} images ({origin})"
    try:
        with tempfile.TemporaryDirectory() as scratch:
            names_file = Path(scratch) / CLASS_NAMES_FILE
            names_file.write_text("\n".join(src.class_names) + "\n", encoding="utf-8")
            if "savedmodel" in formats:
                write_savedmodel(src.model, tmp, names_file, src.pipeline)
                diff = savedmodel_parity(tmp, src.model, batch)
                checks["savedmodel_max_abs_diff"] = diff
                if not diff <= tolerance:
                    raise ExportError(f"the SavedModel's serving_default differs from Keras by "
                                      f"{diff:.3g} (> {tolerance:g}) {on_images}")
            (tmp / "assets").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(names_file, tmp / "assets" / CLASS_NAMES_FILE)
        if "onnx" in formats:
            proto = convert_to_onnx(src.model)
            diff = onnx_parity(proto, src.model, batch)
            checks["onnx_max_abs_diff"] = diff
            if not diff <= tolerance:
                raise ExportError(f"ONNX parity failed: onnxruntime and Keras differ by up to "
                                  f"{diff:.3g} (max abs difference of probabilities; tolerance "
                                  f"{tolerance:g}) {on_images}; nothing was exported. Export "
                                  f"with --formats savedmodel to skip ONNX")
            (tmp / ONNX_FILE).write_bytes(proto.SerializeToString())
        write_json(tmp / "assets" / MODEL_CARD_FILE,
                    model_card(src, name, version, formats, checks))
        try:
            os.rename(tmp, target)  # atomic on one filesystem: the version appears complete
        except OSError:
            raise ExportError(f"{target} appeared while exporting (another export of {name}?); "
                              f"run the export again for the next free version") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for directory in created:
            if directory.is_dir() and not any(directory.iterdir()):
                directory.rmdir()
        raise
    return target


# --------------------------------------------------------------------------- CLI

def add_arguments(parser) -> None:
    parser.add_argument("source", metavar="RUN_DIR|MODEL.keras",
                        help="a run directory written by train.py, or a .keras model file")
    parser.add_argument("--name", required=True,
                        help="model name: the directory under --export-dir and TF Serving's name")
    parser.add_argument("--export-dir", default="export", help="base directory (default: export)")
    parser.add_argument("--version", type=int, default=None,
                        help="version number (default: the next free one); never overwritten")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help="comma-separated subset of savedmodel,onnx (default: both)")
    parser.add_argument("--class-names", default=None, metavar="FILE",
                        help="one class name per line (default: class_names in config.json)")
    parser.add_argument("--images", nargs="+", default=None, metavar="IMAGE",
                        help="JPEG/PNG files or folders for the parity checks (default: the run's "
                             "dataset, else synthetic images)")
    parser.add_argument("--tolerance", type=float, default=PARITY_TOLERANCE,
                        help="max abs difference of probabilities allowed (default "
                             f"{PARITY_TOLERANCE:g})")
    # --- serving (kerascnn.serving): register NAME in TF Serving's models.config ---
    parser.add_argument("--model-config", default=None, metavar="FILE",
                        help="TF Serving models.config to add NAME to, with base_path "
                             "/models/NAME (default: serving/models.config when it exists; "
                             "'' skips)")
    # --- end serving ---


def run(args) -> int:
    target = export_model(args.source, args.name, args.export_dir, args.version, args.formats,
                          class_names=args.class_names, images=args.images,
                          tolerance=args.tolerance)
    card = json.loads((target / "assets" / MODEL_CARD_FILE).read_text(encoding="utf-8"))
    checks = card["checks"]
    print(f"exported {card['architecture']} to {target}")
    for key in ("savedmodel", "onnx"):
        if f"{key}_max_abs_diff" in checks:
            print(f"  {key:<10} max |p - p_keras| = {checks[f'{key}_max_abs_diff']:.2e} "
                  f"on {checks['images']} images ({checks['image_source']})")
    # --- serving (kerascnn.serving): register NAME in TF Serving's models.config ---
    config = args.model_config
    if config is None and Path("serving/models.config").is_file():
        config = "serving/models.config"
    if config:
        from .serving.config import ConfigError, upsert_model_config
        try:
            entry = upsert_model_config(config, args.name)
        except ConfigError as exc:
            raise UserError(f"exported to {target}, but {config} was not updated: {exc}") from None
        print(f"  registered {args.name} in {config} (base_path {entry.base_path})")
    # --- end serving ---
    return 0
