"""The SavedModel of an export: the ``serving_default`` and ``serving_bytes`` signatures.

Built through ``keras.export.ExportArchive`` (serving-protocol.md §4.2-4.3): ``serving_default``
takes raw pixels (``image``, uint8 ``[N, H, W, C]``) and ``serving_bytes`` encoded JPEG/PNG files
(``image_bytes``, string ``[N]``, sent as ``{"b64": ...}``) that are decoded and fitted in the graph
by the run's :class:`~kerascnn.transforms.EvalTransform`; both return ``probabilities``,
``top_k_indices``, ``top_k_scores`` and ``top_k_classes`` (names looked up in
``assets/class_names.txt``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import ExportError
from ..transforms import EvalTransform, decode_image

__all__ = ["write_savedmodel", "savedmodel_parity", "keras_probabilities", "trace", "TOP_K",
           "SIGNATURES", "OUTPUTS"]

TOP_K = 5
#: signature -> (input name, dtype); every signature returns the same four outputs.
SIGNATURES = {"serving_default": ("image", "uint8"), "serving_bytes": ("image_bytes", "string")}
OUTPUTS = ("probabilities", "top_k_indices", "top_k_scores", "top_k_classes")


def _top_k(probabilities, table, k):
    import tensorflow as tf

    scores, indices = tf.math.top_k(probabilities, k=k)
    return {"probabilities": probabilities, "top_k_indices": tf.cast(indices, tf.int32),
            "top_k_scores": scores, "top_k_classes": table.lookup(tf.cast(indices, tf.int64))}


def write_savedmodel(model, directory: Path, class_names_file: Path,
                     transform: EvalTransform | None = None) -> None:
    """Write the SavedModel with the ``serving_default`` and ``serving_bytes`` signatures.

    ``transform`` (the run's evaluation transform) is how ``serving_bytes`` fits decoded images.
    """
    import keras
    import tensorflow as tf

    shape = height, width, channels = tuple(int(d) for d in model.input.shape[1:])
    transform = transform or EvalTransform.default(shape)
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
        images = tf.map_fn(lambda data: decode_image(data, transform), image_bytes,
                           fn_output_signature=tf.TensorSpec(shape, tf.uint8))
        return _top_k(model(images, training=False), table, k)

    trace(serving_default, model)  # a clear error before ExportArchive's own tracing
    archive.add_endpoint("serving_default", serving_default)
    archive.add_endpoint("serving_bytes", serving_bytes)
    archive.write_out(str(directory), verbose=False)


def savedmodel_parity(directory: Path, model, images: np.ndarray) -> float:
    """Max |serving_default - Keras| over ``images`` for the SavedModel in ``directory``."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(directory))
    got = loaded.signatures["serving_default"](image=tf.constant(images))["probabilities"].numpy()
    return float(np.max(np.abs(got - keras_probabilities(model, images))))


def keras_probabilities(model, images: np.ndarray) -> np.ndarray:
    """What the parity checks compare against: the Keras model's own probabilities."""
    return np.asarray(model(images, training=False), dtype=np.float32)


def trace(function, model):
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
