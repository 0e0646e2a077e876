#!/usr/bin/env python3
"""Run every benchmark and append the results to ``BENCHMARKS.md``.

    python3 bench/run_all.py                       # the full CPU suite (about 20-30 min on 2 cores)
    python3 bench/run_all.py --quick --output /tmp/BENCH.md    # smoke test: small models, ~1 min
    python3 bench/run_all.py --only train,memory --backends tensorflow,jax,torch

Each benchmark runs in its own process (see ``bench/common.py``): training images/s of every
network and of ours against keras.applications (``train_throughput.py``), ``tf.data`` input
images/s (``input_pipeline.py``), inference latency and throughput of Keras, the SavedModel and
onnxruntime (``inference.py``), and the peak RSS of a ResNet-50 training step (``memory.py``). The
section appended to the output file records the command, date, machine (CPU model, cores,
versions), every table and the targets of issue 7 with the ratios measured in this run. The GPU
benchmark is separate: ``bench/gpu_resnet50.py``.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

BENCHMARKS = ("train", "input", "inference", "memory")
INPUT_TARGET = 5.0


def run(only=BENCHMARKS, *, quick: bool = False, backends=("tensorflow",),
        log=print) -> dict:
    """Run the benchmarks in ``only``; returns every result plus the targets' verdicts."""
    timeout = 900 if quick else 4 * 3600
    quick_args = ["--quick"] if quick else []
    results, timings = {}, {}

    def step(key, script, args, backend=None):
        log(f"[{key}] python3 bench/{script} {' '.join(args)}"
            + (f" (KERAS_BACKEND={backend})" if backend else ""), flush=True)
        started = time.perf_counter()
        results[key] = common.run_script(script, args, backend=backend, timeout=timeout)
        timings[key] = time.perf_counter() - started

    if "train" in only:
        step("train", "train_throughput.py", quick_args, "tensorflow")
        for backend in backends:
            if backend != "tensorflow":
                args = ["--models", "lenet5,resnet20" if quick else "resnet50,googlenet",
                        "--no-pairs", *(["--batch", "8"] if quick else [])]
                step(f"train_{backend}", "train_throughput.py", args, backend)
    if "input" in only:
        step("input", "input_pipeline.py", quick_args)
    if "inference" in only:
        step("inference", "inference.py", quick_args, "tensorflow")
    if "memory" in only:
        step("memory", "memory.py", [*quick_args, "--backends", ",".join(backends)])
    return {"results": results, "seconds": timings, "targets": targets(results, quick)}


def _resnet50_training_rate(train: dict) -> tuple[float, str] | None:
    """The fastest ResNet-50 training rate measured (the strictest bar for the input pipeline)."""
    rates = [(r["images_per_s"], f"resnet50 batch {r['batch']}") for r in train.get("models", [])
             if r["model"] == "resnet50"]
    rates += [(r["ours_images_per_s"], f"{r['ours']} batch {r['batch']}, input {r['input']}")
              for r in train.get("pairs", []) if r["pair"] == "resnet50"]
    return max(rates) if rates else None


def targets(results: dict, quick: bool = False) -> list[dict]:
    """Issue 7's CPU targets, each with the value measured in this run."""
    rows = []
    train = results.get("train", {})
    for pair in train.get("pairs", []):
        rows.append({"target": f"training images/s, {pair['ours']} / {pair['reference']}",
                     "measured": pair["ratio"], "goal": ">= 1.0", "met": pair["target_met"]})
    if "input" in results and train:
        best = _resnet50_training_rate(train)
        if best:
            ratio = results["input"]["cold_images_per_s"] / best[0]
            rows.append({"target": f"tf.data images/s (cold) / ResNet-50 training images/s "
                                   f"({best[1]}: {best[0]:.2f})",
                         "measured": ratio, "goal": f">= {INPUT_TARGET:g}",
                         "met": ratio >= INPUT_TARGET})
    for model in results.get("inference", {}).get("models", []):
        rows.append({"target": f"{model['model']}: onnxruntime / SavedModel batch-1 latency",
                     "measured": model["ort_vs_savedmodel_latency"], "goal": "<= 0.7",
                     "met": model["target_met"]})
    if quick:
        for row in rows:
            row["target"] += " (quick: not a measurement)"
    return rows


def markdown(report: dict) -> str:
    """The section appended to BENCHMARKS.md."""
    import inference
    import input_pipeline
    import memory
    import train_throughput

    m = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    title = "CPU benchmarks" + (" (--quick smoke run: not measurements)" if report["quick"] else "")
    lines = [f"## {title}: {report['date']} (`bench/run_all.py`, issue 7)", "",
             f"- Command: `{report['command']}`",
             f"- Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM ({m['os']}); "
             f"shared with other processes, so compare ratios measured in this run, not absolute "
             f"rates across runs",
             f"- Versions: {versions}",
             "- Wall time: " + ", ".join(f"{k} {v / 60:.1f} min"
                                          for k, v in report["seconds"].items()), ""]
    if report["targets"]:
        lines += ["### Targets (issue 7)", "",
                  common.table(["target", "measured", "goal", "met"],
                               [[t["target"], f"{t['measured']:.2f}", t["goal"],
                                 "yes" if t["met"] else "**no**"] for t in report["targets"]],
                               "lrll"), ""]
    results = report["results"]
    sections = [("train", "Training images/s (TensorFlow backend, CPU)", train_throughput)]
    sections += [(k, f"Training images/s ({k.split('_', 1)[1]} backend, CPU)", train_throughput)
                 for k in results if k.startswith("train_")]
    sections += [("input", "tf.data input images/s", input_pipeline),
                 ("inference", "Inference: Keras, SavedModel, onnxruntime (CPU)", inference),
                 ("memory", "Peak memory of training steps", memory)]
    for key, heading, module in sections:
        if key in results:
            lines += [f"### {heading}", "", f"`{results[key].get('command', '')}`", "",
                      module.markdown(results[key]), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small models and few steps: a smoke test of the whole suite")
    parser.add_argument("--only", default=",".join(BENCHMARKS),
                        help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--backends", default="tensorflow",
                        help="backends for the training and memory benchmarks (tensorflow,jax,"
                             "torch); training on the TensorFlow backend always runs")
    parser.add_argument("--output", default=str(common.ROOT / "BENCHMARKS.md"),
                        help="Markdown file the section is appended to (default BENCHMARKS.md)")
    parser.add_argument("--no-append", action="store_true", help="print only; write nothing")
    parser.add_argument("--json", metavar="FILE", help="also write every number as JSON to FILE")
    args = parser.parse_args(argv)
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in only if b not in BENCHMARKS] + [b for b in backends
                                                       if b not in common.BACKENDS]
    if bad:
        parser.error(f"unknown benchmark or backend {', '.join(bad)}: benchmarks are "
                     f"{', '.join(BENCHMARKS)}; backends {', '.join(common.BACKENDS)}")

    report = {"date": datetime.date.today().isoformat(), "command": common.command_line(),
              "quick": args.quick, "machine": common.machine()}
    try:
        report.update(run(only, quick=args.quick, backends=backends))
    except common.BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    section = markdown(report)
    print(section)
    if args.json:
        common.write_json(args.json, report)
    if not args.no_append:
        common.append_markdown(args.output, section)
        print(f"appended to {args.output}")
    missed = [t["target"] for t in report["targets"] if not t["met"]]
    if missed and not args.quick:
        print("targets missed: " + "; ".join(missed), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
