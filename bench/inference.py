#!/usr/bin/env python3
"""Inference latency (batch 1) and throughput (batch 32): Keras, the SavedModel and onnxruntime.

    python3 bench/inference.py                        # GoogLeNet and ResNet-50
    python3 bench/inference.py --models lenet5 --quick

Each network is built with uint8 input and ImageNet preprocessing inside (as ``train.py`` writes
``model.keras``) and exported with :func:`kerascnn.export.export_model` (SavedModel + ONNX, the
project's conversion settings) into a temporary folder. The engines, all in this process and fed
the same real Imagenette images:

* ``keras``: ``model.predict_on_batch`` (the compiled predict function);
* ``savedmodel``: the ``serving_default`` signature, what TF Serving runs (top-5 included);
* ``onnxruntime``: ``model.onnx`` in an ``InferenceSession`` on the CPU provider, tuned as
  :func:`tuned_session_options` says; ``onnxruntime (defaults)`` is the same file with default
  options, for reference.

Engines run interleaved (a few calls of each in turn, the order reversed every round) after a
warm-up; latency is the median per call, throughput the batch over the median call. Target:
onnxruntime's batch-1 latency at most 0.7x the SavedModel's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MODELS = ("googlenet", "resnet50")
ORT_TARGET = 0.7
#: engine keys in report order
ENGINES = ("keras", "savedmodel", "onnxruntime", "onnxruntime_defaults")


def tuned_session_options(threads: int | None = None):
    """The onnxruntime settings that measured fastest here at batch 1 (see BENCHMARKS.md).

    All graph optimisations (constant folding, Conv+BN+ReLU fusion, the NCHWc layout transform
    for AVX-512/AVX2 convolutions, already the default); one intra-op thread per core and none for
    inter-op parallelism (a CNN graph is a chain with nothing to overlap); sequential execution;
    and **no spinning**: by default idle pool threads busy-wait for the next parallel section, which
    on a small machine shared with other processes (or with TensorFlow's own pool in the same
    process) takes the cores the work needs; measured here it doubled ResNet-50's median batch-1
    latency (117 vs 65 ms beside a 63 ms SavedModel). Feeding NCHW (tf2onnx ``inputs_as_nchw``)
    made no measurable difference: tf2onnx already leaves a single Transpose at the input.
    """
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or common.cpu_count()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def ort_session(path, options=None):
    import onnxruntime as ort
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


def real_images(input_shape, count: int):
    """``count`` Imagenette photos (every few hundredth file) as a uint8 batch; synthetic pixels
    when the shared data is not there."""
    import numpy as np

    from kerascnn.transforms import EvalTransform, load_images
    files = sorted((common.SHARED_DATA / "imagenette" / "train").glob("*/*.JPEG"))
    if len(files) >= count:
        step = len(files) // count
        return load_images(files[::step][:count], EvalTransform.default(input_shape)), "imagenette"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, *input_shape), dtype=np.uint8), "synthetic"


def export(name: str, workdir: Path, images, num_classes: int = 1000) -> tuple[object, Path]:
    """Build ``name`` (uint8 in, ImageNet preprocessing inside) and export it; the version dir."""
    import kerascnn
    from kerascnn.export import ExportSource, export_model
    model = kerascnn.get_model(name, num_classes,
                               preprocessing="unit" if name.startswith("lenet") else "imagenet")
    source = ExportSource(Path(name), model, [f"class_{i}" for i in range(num_classes)])
    target = export_model(source, name, workdir, 1, images=images[:4])
    return model, target


def engines(model, version_dir: Path, batch) -> dict:
    """name -> a closure running one inference on ``batch`` (blocking until the result)."""
    import numpy as np
    import tensorflow as tf

    signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    tuned = ort_session(version_dir / "model.onnx", tuned_session_options())
    default = ort_session(version_dir / "model.onnx")
    feed = {"image": np.ascontiguousarray(batch)}
    return {
        "keras": lambda: model.predict_on_batch(batch),
        "savedmodel": lambda: signature(image=tf.constant(batch))["probabilities"].numpy(),
        "onnxruntime": lambda: tuned.run(["probabilities"], feed),
        "onnxruntime_defaults": lambda: default.run(["probabilities"], feed),
    }


def measure_model(name: str, workdir: Path, *, rounds1: int = 12, calls1: int = 3,
                  rounds32: int = 3, batch: int = 32) -> dict:
    """Batch-1 latency and batch-``batch`` throughput of every engine for one network."""
    import keras

    import kerascnn
    input_shape = kerascnn.model_info(name).input_shape
    images, origin = real_images(input_shape, batch)
    model, version_dir = export(name, workdir, images)
    result = {"model": name, "input": "x".join(map(str, input_shape)), "images": origin,
              "params": model.count_params(), "batch": batch}
    one = engines(model, version_dir, images[:1])
    times1 = common.interleaved(one, rounds=rounds1, calls=calls1, warmup=3)
    full = engines(model, version_dir, images)
    times32 = common.interleaved(full, rounds=rounds32, calls=1, warmup=1)
    for engine in ENGINES:
        result[f"{engine}_latency_ms"] = 1000 * common.median(times1[engine])
        result[f"{engine}_images_per_s"] = batch / common.median(times32[engine])
    result["ort_vs_savedmodel_latency"] = (result["onnxruntime_latency_ms"]
                                           / result["savedmodel_latency_ms"])
    result["target"] = ORT_TARGET
    result["target_met"] = result["ort_vs_savedmodel_latency"] <= ORT_TARGET
    del one, full, model
    keras.backend.clear_session()
    return result


def measure(models=MODELS, *, quick: bool = False, log=print) -> dict:
    import onnxruntime
    results = []
    with tempfile.TemporaryDirectory(prefix="kerascnn-inference-") as tmp:
        for name in models:
            row = (measure_model(name, Path(tmp), rounds1=2, calls1=2, rounds32=1, batch=8)
                   if quick else measure_model(name, Path(tmp)))
            log(f"  {name}: batch-1 latency keras {row['keras_latency_ms']:.1f} ms, savedmodel "
                f"{row['savedmodel_latency_ms']:.1f} ms, onnxruntime "
                f"{row['onnxruntime_latency_ms']:.1f} ms "
                f"({row['ort_vs_savedmodel_latency']:.2f}x the SavedModel)")
            results.append(row)
    return {"models": results, "ort_threads": common.cpu_count(),
            "onnxruntime_version": onnxruntime.__version__}


LABELS = {"keras": "Keras `predict_on_batch`", "savedmodel": "SavedModel `serving_default`",
          "onnxruntime": "onnxruntime (tuned)", "onnxruntime_defaults": "onnxruntime (defaults)"}


def markdown(result: dict) -> str:
    rows = []
    for r in result["models"]:
        for engine in ENGINES:
            rows.append([r["model"], LABELS[engine], r[f"{engine}_latency_ms"],
                         r[f"{engine}_images_per_s"]])
    batch = result["models"][0]["batch"] if result["models"] else 32
    parts = [common.table(["model", "engine", "batch-1 latency (ms)",
                           f"batch-{batch} images/s"], rows, "llrr")]
    parts.append(common.table(
        ["model", "onnxruntime / SavedModel batch-1 latency (target <= 0.7)"],
        [[r["model"], f"**{r['ort_vs_savedmodel_latency']:.2f}**"
          + ("" if r["target_met"] else " (missed)")] for r in result["models"]], "lr"))
    return "\n\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None,
                        help=f"comma-separated models (default: {','.join(MODELS)}; lenet5 "
                             f"with --quick)")
    common.standard_arguments(parser, "few calls and a batch of 8, for a smoke test")
    args = parser.parse_args(argv)
    backend = common.set_backend(args.backend)
    if backend != "tensorflow":
        parser.error("the SavedModel and ONNX export need the tensorflow backend")
    models = ([m.strip() for m in args.models.split(",") if m.strip()] if args.models
              else ["lenet5"] if args.quick else list(MODELS))
    result = measure(models, quick=args.quick)
    return common.emit(result, markdown, args.json)


if __name__ == "__main__":
    sys.exit(main())
