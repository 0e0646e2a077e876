"""The model card: ``assets/model_card.json``, everything a consumer of an export needs."""

from __future__ import annotations

import datetime

import numpy as np

from .onnx import ONNX_OPSET
from .savedmodel import TOP_K

__all__ = ["model_card", "CLASS_NAMES_FILE", "MODEL_CARD_FILE"]

CLASS_NAMES_FILE = "class_names.txt"
MODEL_CARD_FILE = "model_card.json"


def _preprocessing(model, run) -> dict:
    if run is not None and isinstance(run.preprocessing, dict):
        return run.preprocessing
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
        from ..inspect import layer_table, table_totals
        return int(table_totals(layer_table(model)).macs)
    except Exception:  # the card is still useful without MACs; inspect owns that arithmetic
        return None


def model_card(source, name: str, version: int, formats, checks: dict) -> dict:
    """Everything a consumer of the export needs to know, as JSON (assets/model_card.json), for
    an :class:`~kerascnn.export.source.ExportSource`. ``input.image_pipeline`` is the run's
    evaluation transform (the record ``predict`` reads back for ONNX)."""
    import keras
    import tensorflow as tf

    from .. import __version__

    model, run = source.model, source.run
    transform = source.transform
    height, width, channels = source.input_shape
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    total = int(model.count_params())
    k = min(TOP_K, len(source.class_names))
    return {
        "name": name,
        "version": version,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "architecture": run.arch if run else model.name,
        "model_options": run.model_options if run else {},
        "parameters": {"trainable": trainable, "total": total, "non_trainable": total - trainable},
        "macs": _macs(model),
        "num_classes": len(source.class_names),
        "class_names": f"assets/{CLASS_NAMES_FILE}",
        "dataset": run.dataset if run else None,
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
            "image_pipeline": {**transform.to_dict(), "description": transform.describe()},
        },
        "outputs": {"probabilities": f"float32 [N, {len(source.class_names)}]",
                    "top_k_indices": f"int32 [N, {k}]", "top_k_scores": f"float32 [N, {k}]",
                    "top_k_classes": f"string [N, {k}]"},
        "preprocessing": _preprocessing(model, run),
        "training": {"recipe": run.recipe, "epochs": run.epochs, "batch_size": run.batch_size,
                     "seed": run.seed} if run else {},
        "formats": list(formats),
        "checks": {k_: v for k_, v in checks.items() if k_ != "int8"},
        "quantization": checks.get("int8"),   # model.int8.onnx (export --quantize int8), or None
        "source": str(source.path),
        "versions": {"kerascnn": __version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__, **_onnx_versions(formats),
                     "trained_with": run.versions if run else {}},
    }


def _onnx_versions(formats) -> dict:
    if "onnx" not in formats:
        return {}
    import onnx
    import onnxruntime
    import tf2onnx
    return {"tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "onnx_opset": ONNX_OPSET}
