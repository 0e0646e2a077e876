#!/usr/bin/env python3
"""Training images/s on this machine: every network of the zoo, and ours against keras.applications.

    python3 bench/train_throughput.py                      # every model, then the two pairs
    python3 bench/train_throughput.py --models "resnet*" --no-pairs
    python3 bench/train_throughput.py --backend jax --models resnet50 --no-pairs

One training step = ``model.train_on_batch`` (the compiled step ``fit`` runs: forward, loss,
backward, SGD with momentum 0.9) on a fixed random batch already converted to a backend tensor, so
only the step is timed. Each network runs at its paper's input size; the batch is small on CPU
(8 at 224 px) because a few steps are enough for a rate. Models take float input here (the same
for ours and keras.applications); the in-model uint8 preprocessing costs well under 1%.

The pairs compare ours with keras.applications in one process, interleaved (ours, reference,
reference, ours ...) after two warm-up steps each: our ``resnet50`` built as v1
(``stride_on="1x1"``, as keras.applications' ResNet50) against ``keras.applications.ResNet50``, and
our ``vgg16`` against ``keras.applications.VGG16`` (``weights=None``). Ratio = our images/s over
theirs (medians); the target is >= 1.0.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

#: pair name -> (our model, our options, keras.applications builder, batch, rounds)
PAIRS = {
    "resnet50": ("resnet50", {"stride_on": "1x1"}, "ResNet50", 16, 4),
    "vgg16": ("vgg16", {}, "VGG16", 8, 3),
}
QUICK_MODELS = ("lenet5", "resnet20")
#: --quick: the pair code path for ResNet-50 only, at a 32x32 input, batch 2, one round.
QUICK_PAIRS = ("resnet50",)
QUICK_PAIR_SIZE = 32


def default_batch(input_shape) -> int:
    """Small batches for the CPU: 8 at ImageNet sizes, 32 for 32x32 networks."""
    return 8 if input_shape[0] >= 100 else 32


def compile_for_training(model, jit_compile="auto"):
    """The recipes' optimizer (SGD, momentum 0.9) and loss, the same for every candidate."""
    import keras
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(), jit_compile=jit_compile)
    return model


def training_step(model, batch: int, seed: int = 0):
    """A closure running one training step on a fixed batch (already a backend tensor)."""
    import numpy as np
    from keras import ops
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in model.input.shape[1:])
    classes = int(model.outputs[0].shape[-1])
    if str(model.input.dtype) == "uint8":
        x = rng.integers(0, 256, (batch, *shape), dtype=np.uint8)
    else:
        x = rng.uniform(-1, 1, (batch, *shape)).astype("float32")
    x = ops.convert_to_tensor(x)
    y = ops.convert_to_tensor(rng.integers(0, classes, batch).astype("int32"))
    return lambda: model.train_on_batch(x, y)


def measure_model(name: str, *, batch: int | None = None, steps: int = 3, warmup: int = 1,
                  input_shape=None, jit_compile="auto") -> dict:
    """Images/s of one zoo network (median over ``steps`` timed steps after ``warmup``)."""
    import keras

    import kerascnn
    info = kerascnn.model_info(name)
    shape = tuple(input_shape or info.input_shape)
    batch = batch or default_batch(shape)
    started = time.perf_counter()
    model = compile_for_training(kerascnn.get_model(name, 1000, shape), jit_compile)
    step = training_step(model, batch)
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(warmup):
        step()
    warmup_s = time.perf_counter() - started
    times = common.time_calls(step, steps)
    row = {"model": name, "input": "x".join(map(str, shape)), "batch": batch,
           "params": model.count_params(), "images_per_s": batch / common.median(times),
           "step_s": common.median(times), "build_s": build_s, "first_steps_s": warmup_s}
    del model, step
    keras.backend.clear_session()
    gc.collect()
    return row


def measure_pair(pair: str, *, batch: int | None = None, rounds: int | None = None,
                 input_size: int | None = None, warmup: int = 2, jit_compile="auto") -> dict:
    """Ours vs keras.applications in one process, interleaved; ratio of median images/s."""
    import keras

    import kerascnn
    ours_name, options, reference, default_batch_, default_rounds = PAIRS[pair]
    batch, rounds = batch or default_batch_, rounds or default_rounds
    shape = (input_size or 224, input_size or 224, 3)
    ours = compile_for_training(kerascnn.get_model(ours_name, 1000, shape, **options), jit_compile)
    ref = compile_for_training(getattr(keras.applications, reference)(
        weights=None, input_shape=shape, classes=1000), jit_compile)
    steps = {"ours": training_step(ours, batch), "reference": training_step(ref, batch)}
    times = common.interleaved(steps, rounds=rounds, calls=1, warmup=warmup)
    ours_ips = batch / common.median(times["ours"])
    ref_ips = batch / common.median(times["reference"])
    per_round = [r / o for o, r in zip(times["ours"], times["reference"])]
    row = {"pair": pair, "ours": f"kerascnn {ours_name}"
           + "".join(f" {k}={v}" for k, v in options.items()),
           "reference": f"keras.applications.{reference}", "input": "x".join(map(str, shape)),
           "batch": batch, "rounds": rounds, "ours_params": ours.count_params(),
           "reference_params": ref.count_params(), "ours_images_per_s": ours_ips,
           "reference_images_per_s": ref_ips, "ratio": ours_ips / ref_ips,
           "ratio_per_round_median": common.median(per_round), "target": 1.0}
    row["target_met"] = row["ratio"] >= row["target"]
    del ours, ref, steps
    keras.backend.clear_session()
    gc.collect()
    return row


def measure(models=None, pairs=tuple(PAIRS), *, quick: bool = False, batch: int | None = None,
            steps: int | None = None, jit_compile="auto", log=print) -> dict:
    """Rates of ``models`` (names or patterns; all registered networks by default), ``pairs``."""
    import keras

    import kerascnn
    names = []
    for pattern in models or (QUICK_MODELS if quick else ["*"]):
        names += [n for n in kerascnn.list_models(pattern) if n not in names]
    rows = []
    for name in names:
        row = measure_model(name, batch=batch or (8 if quick else None),
                            steps=steps or (2 if quick else 3), jit_compile=jit_compile)
        log(f"  {name:16} {row['input']:>11} batch {row['batch']:3}  "
            f"{row['images_per_s']:9.1f} images/s")
        rows.append(row)
    pair_rows = []
    for pair in pairs:
        row = (measure_pair(pair, batch=2, rounds=1, input_size=QUICK_PAIR_SIZE, warmup=1,
                            jit_compile=jit_compile) if quick
               else measure_pair(pair, jit_compile=jit_compile))
        log(f"  {row['ours']} vs {row['reference']}: {row['ours_images_per_s']:.2f} vs "
            f"{row['reference_images_per_s']:.2f} images/s = {row['ratio']:.3f}x")
        pair_rows.append(row)
    return {"backend": keras.backend.backend(), "jit_compile": jit_compile, "models": rows,
            "pairs": pair_rows}


def markdown(result: dict) -> str:
    parts = []
    if result["models"]:
        parts.append(common.table(
            ["model", "input", "batch", "parameters", "images/s", "s/step"],
            [[r["model"], r["input"], r["batch"], r["params"], r["images_per_s"], r["step_s"]]
             for r in result["models"]], "llrrrr"))
    if result["pairs"]:
        parts.append(common.table(
            ["ours", "reference", "input", "batch", "ours images/s", "reference images/s",
             "ratio (target >= 1.0)", "median per-round ratio"],
            [[r["ours"], r["reference"], r["input"], r["batch"], r["ours_images_per_s"],
              r["reference_images_per_s"], f"**{r['ratio']:.3f}**"
              + ("" if r["target_met"] else " (missed)"), f"{r['ratio_per_round_median']:.3f}"]
             for r in result["pairs"]], "lllrrrrr"))
    return "\n\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None,
                        help="comma-separated names or patterns (default: every registered model)")
    parser.add_argument("--pairs", default=None,
                        help=f"comma-separated pairs to compare (default {','.join(PAIRS)}; "
                             f"{','.join(QUICK_PAIRS)} with --quick)")
    parser.add_argument("--no-pairs", action="store_true", help="skip the keras.applications pairs")
    parser.add_argument("--batch", type=int, default=None, help="batch size for every model")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per model (default 3)")
    parser.add_argument("--jit-compile", choices=["auto", "true", "false"], default="auto",
                        help="Model.compile(jit_compile=...) (auto: XLA on GPU/JAX only)")
    common.standard_arguments(parser, "two small models and the pairs at 32x32, for a smoke test")
    args = parser.parse_args(argv)
    common.set_backend(args.backend)
    pairs = (args.pairs.split(",") if args.pairs else QUICK_PAIRS if args.quick else PAIRS)
    pairs = [] if args.no_pairs else [p.strip() for p in pairs if p.strip()]
    unknown = [p for p in pairs if p not in PAIRS]
    if unknown:
        parser.error(f"unknown pair {', '.join(unknown)}; choose from {', '.join(PAIRS)}")
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    result = measure(models, pairs, quick=args.quick, batch=args.batch, steps=args.steps,
                     jit_compile=jit)
    return common.emit(result, markdown, args.json)


if __name__ == "__main__":
    sys.exit(main())
