"""``model.int8.onnx``: onnxruntime's static int8 quantization of the float ONNX export, gated on
accuracy.

What is quantized (onnxruntime.quantization.quantize_static, QDQ format):

- convolution and fully connected weights: int8, symmetric, **per output channel**;
- activations: uint8, asymmetric, **per tensor**, their ranges calibrated (MinMax) on real images
  of the run's own *training* split (a seeded uniform sample through the run's evaluation
  transform, never augmented: :meth:`kerascnn.runs.RunDir.calibration_images`);
- the graph's ends stay float: the uint8 input and the preprocessing before the first
  convolution (it is exact in float and costs nothing), and the softmax that makes the
  ``probabilities`` output. The input and output are the float export's: uint8 ``image``
  ``[N, H, W, C]`` in, float32 ``probabilities`` out.

Like the float export's parity check, quantization has a gate: the int8 model's top-1 on the run's
whole validation split must stay within :data:`INT8_TOLERANCE_POINTS` of the float ONNX model's
on the same images, or the export fails and says by how much. Both numbers go into the model
card (``quantization``).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ExportError

__all__ = ["INT8_FILE", "INT8_TOLERANCE_POINTS", "CALIBRATION_IMAGES", "QUANTIZE_CHOICES",
           "QuantizationResult", "quantize_int8", "onnx_top1", "quantize_export"]

INT8_FILE = "model.int8.onnx"
#: The largest drop of validation top-1 (percentage points) the int8 model may show.
INT8_TOLERANCE_POINTS = 0.5
#: How many training images calibrate the activation ranges by default.
CALIBRATION_IMAGES = 256
QUANTIZE_CHOICES = ("int8",)
#: Ops whose inputs/outputs are quantized: the convolutions and matrix products and what lies
#: between them (residual adds, pools, concatenations), so that onnxruntime runs them as integer
#: kernels (QLinearConv, QLinearAdd, ... with VNNI where the CPU has it). Softmax is not listed.
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm", "Add", "MaxPool", "AveragePool",
                 "GlobalAveragePool", "Concat", "Relu", "Flatten", "Reshape", "Transpose")


@dataclasses.dataclass
class QuantizationResult:
    """What ``export --quantize int8`` measured; ``card()`` is the model card's section."""

    proto: object                 # the int8 onnx.ModelProto
    calibration_images: int
    calibration_seed: int
    calibration_source: str
    float_top1: float
    int8_top1: float
    validation_images: int
    tolerance_points: float
    excluded_nodes: list

    @property
    def drop_points(self) -> float:
        return 100 * (self.float_top1 - self.int8_top1)

    def card(self) -> dict:
        return {
            "file": INT8_FILE,
            "tool": "onnxruntime.quantization.quantize_static (QDQ)",
            "weights": "int8, symmetric, per output channel (Conv, MatMul/Gemm)",
            "activations": "uint8, asymmetric, per tensor, MinMax-calibrated",
            "float_ops": "the uint8 input and preprocessing before the first convolution "
                         f"({len(self.excluded_nodes)} nodes), the softmax",
            "calibration": {"images": self.calibration_images, "split": "training",
                            "seed": self.calibration_seed, "source": self.calibration_source,
                            "transform": "the run's evaluation transform (no augmentation)"},
            "validation_top1_float": round(self.float_top1, 6),
            "validation_top1_int8": round(self.int8_top1, 6),
            "top1_change_points": round(-self.drop_points, 3),
            "validation_images": self.validation_images,
            "gate": f"int8 top-1 within {self.tolerance_points:g} points of float ONNX",
        }


def _nodes_before_first_conv(proto) -> list[str]:
    """The preprocessing nodes: everything that runs before the first Conv in graph order."""
    names = []
    for node in proto.graph.node:
        if node.op_type == "Conv":
            break
        names.append(node.name)
    return names


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a uint8 batch, a few images per call."""

    def __init__(self, images: np.ndarray, batch: int = 8):
        self._batches = iter([images[i:i + batch] for i in range(0, len(images), batch)])

    def get_next(self):
        batch = next(self._batches, None)
        return None if batch is None else {"image": np.ascontiguousarray(batch)}


def quantize_int8(proto, calibration: np.ndarray):
    """The int8 ``ModelProto`` of the float export ``proto``, activations calibrated on
    ``calibration`` (uint8 ``[N, H, W, C]``, real images). Returns ``(proto, excluded_nodes)``."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ExportError("int8 calibration needs images and got none; pass "
                          "--calibration-images N with N > 0")
    with tempfile.TemporaryDirectory(prefix="kerascnn-int8-") as scratch:
        float_file, prepared, int8_file = (Path(scratch) / n for n in
                                           ("float.onnx", "prepared.onnx", "int8.onnx"))
        float_file.write_bytes(proto.SerializeToString())
        quant_pre_process(str(float_file), str(prepared), skip_symbolic_shape=True)
        excluded = _nodes_before_first_conv(onnx.load(str(prepared)))
        try:
            quantize_static(str(prepared), str(int8_file), _Reader(calibration),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=excluded,
                            calibrate_method=CalibrationMethod.MinMax)
        except Exception as exc:
            raise ExportError(f"onnxruntime could not quantize the model: {type(exc).__name__}: "
                              f"{exc}; export without --quantize") from None
        return onnx.load(str(int8_file)), excluded


def onnx_top1(proto, batches, label_map=None, *, progress: str | None = None,
              steps: int | None = None) -> tuple[float, int]:
    """Top-1 accuracy of an ONNX model over ``batches`` of ``(uint8 images, labels)``; and the
    number of images. ``label_map`` maps the dataset's labels to the model's classes;
    ``progress`` titles a progress bar of ``steps`` batches."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(proto.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    correct = total = 0
    bar = None
    if progress:
        import keras
        bar = keras.utils.Progbar(steps, unit_name="batch")
        print(progress)
    for images, labels in batches:
        (probabilities,) = session.run(["probabilities"],
                                       {"image": np.ascontiguousarray(np.asarray(images))})
        labels = np.asarray(labels)
        if label_map is not None:
            labels = label_map[labels]
        correct += int(np.sum(np.argmax(probabilities, axis=1) == labels))
        total += len(labels)
        if bar is not None:
            bar.add(1)
    return (correct / total if total else float("nan")), total


def quantize_export(float_proto, run_dir, *, calibration_images: int = CALIBRATION_IMAGES,
                    seed: int = 0, tolerance_points: float = INT8_TOLERANCE_POINTS,
                    verbose: bool = True) -> QuantizationResult:
    """Quantize ``float_proto`` for the run ``run_dir`` (a :class:`kerascnn.runs.RunDir`):
    calibrate on its training images, gate on its validation split. Raises :class:`ExportError`
    (nothing written) when the run's data is not readable here or the gate fails."""
    if run_dir is None or not run_dir.has_config():
        raise ExportError("--quantize int8 needs a run directory (train.py's, or `python -m "
                          "kerascnn.weights save MODEL:TAG DIR`): int8 calibration uses the run's "
                          "training images and the accuracy gate its validation split")
    config = run_dir.read_config()
    try:
        calibration = run_dir.calibration_images(calibration_images, seed=seed)
        loaded, batches, label_map = run_dir.validation_data(batch_size=64)
    except Exception as exc:
        raise ExportError(f"--quantize int8 needs the run's dataset {config.dataset} readable "
                          f"here (calibration and the accuracy gate use it): "
                          f"{type(exc).__name__}: {exc}") from None
    if verbose:
        print(f"int8: calibrating on {len(calibration)} training images of {config.dataset} "
              f"(seed {seed})")
    int8, excluded = quantize_int8(float_proto, calibration)
    steps = -(-loaded.val.count // 64)
    float_top1, count = onnx_top1(float_proto, batches, label_map, steps=steps,
                                  progress="int8 gate: float ONNX on the validation split"
                                  if verbose else None)
    int8_top1, _ = onnx_top1(int8, batches, label_map, steps=steps,
                             progress="int8 gate: int8 ONNX on the validation split"
                             if verbose else None)
    result = QuantizationResult(int8, len(calibration), seed, config.dataset, float_top1,
                                int8_top1, count, tolerance_points, excluded)
    if not count:
        raise ExportError(f"the run's validation split of {config.dataset} is empty: the int8 "
                          f"accuracy gate has nothing to measure")
    if result.drop_points > tolerance_points:
        raise ExportError(f"int8 accuracy gate failed: top-1 {int8_top1:.2%} vs {float_top1:.2%} "
                          f"for the float ONNX model on {count} validation images, "
                          f"{result.drop_points:.2f} points lower (allowed "
                          f"{tolerance_points:g}); nothing was exported. Calibrate on more "
                          f"images (--calibration-images), or export without --quantize")
    return result
