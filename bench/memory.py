#!/usr/bin/env python3
"""Peak memory (RSS) of one ResNet-50 training step at batch 32, measured in a fresh process.

    python3 bench/memory.py                                  # tensorflow backend
    python3 bench/memory.py --backends tensorflow,jax,torch
    python3 bench/memory.py --model resnet20 --batch 8 --quick

The parent starts one child process per backend (``KERAS_BACKEND`` set before keras is imported);
the child builds the network as ``train.py`` does (uint8 input, ImageNet preprocessing inside),
compiles it with SGD + momentum, and reads its own peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``)
after importing the framework, after building and compiling, and after training steps. The peak
after the step is what a machine must have free to train at that batch; the increase over
"built" is the step's own memory (activations kept for the backward pass, gradients, optimizer
slots, the compiled step).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def child(model_name: str, batch: int, steps: int, input_size: int | None) -> dict:
    """Run in the measured process: build, compile, ``steps`` training steps; peak RSS at each."""
    started = common.peak_rss_mib()
    import keras

    import kerascnn
    from train_throughput import compile_for_training, training_step
    imported = common.peak_rss_mib()
    info = kerascnn.model_info(model_name)
    shape = (input_size, input_size, info.input_shape[2]) if input_size else info.input_shape
    model = kerascnn.get_model(model_name, 1000, shape, preprocessing="imagenet"
                               if shape[2] == 3 else "unit")
    compile_for_training(model)
    step = training_step(model, batch)
    built = common.peak_rss_mib()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {"backend": keras.backend.backend(), "model": model_name,
            "input": "x".join(map(str, shape)), "batch": batch, "steps": steps,
            "python_mib": started, "imported_mib": imported, "built_mib": built,
            "peak_mib": common.peak_rss_mib(), "step_increase_mib": common.peak_rss_mib() - built,
            "params": model.count_params(), "first_step_s": times[0], "last_step_s": times[-1]}


def measure(backends=("tensorflow",), *, model: str = "resnet50", batch: int = 32, steps: int = 2,
            input_size: int | None = None, log=print) -> dict:
    rows = []
    for backend in backends:
        args = ["--child", "--model", model, "--batch", str(batch), "--steps", str(steps)]
        if input_size:
            args += ["--input-size", str(input_size)]
        row = common.run_script("memory.py", args, backend=backend, quiet=True)
        log(f"  {backend:10} {row['model']} batch {row['batch']}: peak RSS {row['peak_mib']:,.0f} "
            f"MiB (built {row['built_mib']:,.0f} MiB, step +{row['step_increase_mib']:,.0f} MiB)")
        rows.append(row)
    return {"rows": rows}


def markdown(result: dict) -> str:
    rows = [[r["backend"], r["model"], r["input"], r["batch"], r["imported_mib"], r["built_mib"],
             r["peak_mib"], r["step_increase_mib"]] for r in result["rows"]]
    return common.table(["backend", "model", "input", "batch", "after import (MiB)",
                         "built + compiled (MiB)", "peak after training steps (MiB)",
                         "step's increase (MiB)"], rows, "lllrrrrr")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="network (default resnet50; resnet20 with "
                                                       "--quick)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 32)")
    parser.add_argument("--steps", type=int, default=2,
                        help="training steps (the first one also traces/compiles)")
    parser.add_argument("--input-size", type=int, default=None,
                        help="square input size (default: the paper's)")
    parser.add_argument("--backends", default=None,
                        help="comma-separated backends, one process each (default: --backend)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    common.standard_arguments(parser, "ResNet-20 at batch 8, for a smoke test")
    args = parser.parse_args(argv)
    model = args.model or ("resnet20" if args.quick else "resnet50")
    batch = args.batch or (8 if args.quick else 32)
    if args.child:
        common.set_backend(args.backend)
        result = child(model, batch, args.steps, args.input_size)
        if args.json:
            common.write_json(args.json, result)
        return 0
    backends = ([b.strip() for b in args.backends.split(",") if b.strip()] if args.backends
                else [common.set_backend(args.backend)])
    bad = [b for b in backends if b not in common.BACKENDS]
    if bad:
        parser.error(f"unknown backend {', '.join(bad)}; use {', '.join(common.BACKENDS)}")
    result = measure(backends, model=model, batch=batch, steps=args.steps,
                     input_size=args.input_size)
    return common.emit(result, markdown, args.json)


if __name__ == "__main__":
    sys.exit(main())
