"""Reproduce the papers' accuracy with the project's own ``train.py`` (issue 8): the runs as data.

    python bench/reproduce.py list                        # every run, its gate and its status
    python bench/reproduce.py commands cpu|gpu            # the exact shell lines, in order
    python bench/reproduce.py run resnet20-cifar10 --data-root /tmp/data --backend jax
    python bench/reproduce.py check runs/resnet20-cifar10 # gate + the BENCHMARKS.md table rows
    python bench/reproduce.py ship runs/resnet20-cifar10 --machine "1x NVIDIA H200"
    python bench/reproduce.py preflight                   # on the GPU machine: can train.py run?

``run`` is ``train.py`` with the run's arguments and ``--run-dir runs/NAME``; re-running the same
command after a kill or a time limit resumes at the first unfinished epoch (``BackupAndRestore``),
which is how a GPU lease of 10-minute commands finishes a 182-epoch run. The schedule (lr / 10 at
50% and 75% of the epochs) follows ``--epochs``, so shorter CPU runs keep the recipe's shape.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Run:
    """One accuracy run: what ``train.py`` gets, the gate it must pass, the paper's number."""

    name: str
    arch: str
    data: str                      # dataset folder under --data-root (or ../shared/data)
    spec: str                      # "folder" or "idx"
    machine: str                   # "cpu" or "gpu"
    epochs: int
    gate: float | None             # validation top-1 it must reach (None: recorded, not gated)
    reference: str
    args: tuple = ()
    ship: str | None = None        # tag under which its weights ship (kerascnn/weights)
    notes: str = ""
    extra: dict = field(default_factory=dict)

    def dataset(self, data_root) -> str:
        return f"{self.spec}:{Path(data_root) / self.data}"

    def train_args(self, data_root) -> list[str]:
        return ["--arch", self.arch, "--dataset", self.dataset(data_root), "--val-split", "0.1",
                "--epochs", str(self.epochs), *self.args, "--run-dir", f"runs/{self.name}"]


_RESNET_CIFAR = ("He et al. 2015, Table 6: {}% test top-1 (64k iterations of 128, ~182 epochs "
                 "on 45k images)")
_IMAGENETTE = ("Imagenette leaderboard, 128 px, 20 epochs: 91.6% (xresnet50 + modern tricks); "
               "issue 8's gate: 85%")

RUNS = {r.name: r for r in [
    Run("lenet5-mnist", "lenet5", "mnist", "idx", "cpu", 20, 0.99,
        "LeCun et al. 1998: 0.95% test error without distortions (99.05% top-1)", ship="mnist",
        notes="done as runs/bench-lenet5-mnist (bench/train_lenet_mnist.py): 99.20%"),
    Run("resnet20-cifar10-cpu", "resnet20", "cifar10/train", "folder", "cpu", 16, None,
        _RESNET_CIFAR.format(91.25), ship="cifar10",
        notes="the longest run 2 shared CPU cores allowed (~2.5 min an epoch); the paper's "
              "91.25% needs ~182 epochs (GPU)"),
    Run("resnet20-cifar10", "resnet20", "cifar10/train", "folder", "gpu", 182, 0.913,
        _RESNET_CIFAR.format(91.25), ship="cifar10"),
    Run("resnet56-cifar10", "resnet56", "cifar10/train", "folder", "gpu", 182, 0.927,
        _RESNET_CIFAR.format(93.03)),
    Run("googlenet-imagenette", "googlenet", "imagenette/train", "folder", "gpu", 20, 0.85,
        _IMAGENETTE, args=("--image-size", "128")),
    Run("resnet50-imagenette", "resnet50", "imagenette/train", "folder", "gpu", 20, 0.85,
        _IMAGENETTE, args=("--image-size", "128")),
]}

SHARED_DATA = ROOT.parent / "shared" / "data"
#: How each dataset travels to a GPU machine (bench/pack_data.py): parts < 60 MB, one dataset per
#: device call (a call carries 64 MiB at most). Imagenette is re-encoded at 146 px, the size
#: train.py resizes to before its 128 px crops, so training sees the same geometry.
PACKING = {
    "cifar10": [],  # the JPEG bytes travel unchanged (46 MB)
    "imagenette": ["--shorter-side", "146", "--quality", "85", "--max-mb", "40"],
}


def train_command(run: Run, data_root) -> list[str]:
    return [sys.executable, "train.py", *run.train_args(data_root)]


def _shell(run: Run, data_root, backend=None, prefix="") -> str:
    env = f"KERAS_BACKEND={backend} " if backend else ""
    return (env + prefix + "python train.py "
            + " ".join(map(shlex.quote, run.train_args(data_root))))


def commands(machine: str) -> list[str]:
    """The shell lines of a CPU session (here) or a GPU session, in order."""
    if machine == "cpu":
        lines = [f"{_shell(r, '../shared/data')}" for r in RUNS.values() if r.machine == "cpu"]
        lines += ["python bench/reproduce.py check runs/resnet20-cifar10-cpu",
                  "python bench/reproduce.py ship runs/resnet20-cifar10-cpu --machine '2-core CPU'"]
        return lines
    lines = ["# here: pack each dataset into an ignored folder that a device call carries",
             "echo /packed/ >> .git/info/exclude"]
    for name, extra in PACKING.items():
        lines.append(" ".join(["python bench/pack_data.py pack", f"../shared/data/{name}",
                               f"packed/{name}", *extra]))
    lines += ["# on the GPU machine (carry packed/cifar10.* in one call, packed/imagenette.* "
              "in another: 64 MiB a call), per run, re-run until it writes metrics.json (each "
              "call resumes where the last one stopped):",
              "python bench/reproduce.py preflight",
              "python bench/pack_data.py unpack packed/cifar10 /tmp/data/cifar10"]
    unpacked = {"cifar10"}
    for r in RUNS.values():
        data = r.data.split("/")[0]
        if r.machine == "gpu":
            if data not in unpacked:
                unpacked.add(data)
                lines.append(f"python bench/pack_data.py unpack packed/{data} /tmp/data/{data}")
            lines.append(_shell(r, "/tmp/data", "jax", prefix="timeout 540 "))
    lines += ["# then bring back what check and ship read (8 files at most come back from $OUT):",
              "tar czf $OUT/runs.tgz runs/*/config.json runs/*/metrics.json runs/*/history.csv "
              "runs/resnet20-cifar10/model.keras",
              "# back here, with runs.tgz unpacked:",
              "python bench/reproduce.py check runs/NAME   # for each run",
              "python bench/reproduce.py ship runs/resnet20-cifar10 --machine '1x NVIDIA H200'"]
    return lines


def summary(run_dir) -> dict:
    """What BENCHMARKS.md records about a finished run, from its run directory."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    times, best = [], (0.0, 0)
    with (run_dir / "history.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            times.append(float(row.get("epoch_time_s") or 0))
            top1 = float(row.get("val_top1") or row.get("val_predictions_top1") or 0)
            best = max(best, (top1, int(float(row["epoch"])) + 1))
    return {"arch": config["arch"], "dataset": config["dataset"], "epochs": config["epochs"],
            "train_images": config["data"]["train_images"],
            "val_images": config["data"]["val_images"], "val_source": config["data"]["val_source"],
            "val_top1": metrics["val_top1"], "val_top5": metrics["val_top5"],
            "val_loss": metrics["val_loss"], "best": best,
            "training_s": sum(times), "resumed_from_epoch": metrics.get("resumed_from_epoch"),
            "backend": config.get("versions", {}).get("backend", "tensorflow"),
            "images_per_s": metrics.get("images_per_s")}


def check(run_dir) -> int:
    s = summary(run_dir)
    run = RUNS.get(Path(run_dir).name)
    gate = run.gate if run else None
    print(f"| command | `{_shell(run, '../shared/data') if run else '?'}` |")
    print(f"| data | {s['dataset']}: {s['train_images']:,} train, {s['val_images']:,} validation "
          f"({s['val_source']}) |")
    print(f"| epochs | {s['epochs']}" + (f" (resumed at epoch {s['resumed_from_epoch']})"
                                         if s["resumed_from_epoch"] else "") + " |")
    print(f"| wall time | {s['training_s'] / 60:.1f} min of training (sum of the epochs) |")
    print(f"| validation top-1 | **{s['val_top1']:.2%}** (top-5 {s['val_top5']:.2%}, loss "
          f"{s['val_loss']:.4f}; best epoch {s['best'][1]}: {s['best'][0]:.2%}) |")
    if run:
        print(f"| reference | {run.reference} |")
    if gate is None:
        print("| gate | none (recorded) |")
        return 0
    met = s["val_top1"] >= gate
    print(f"| gate | >= {gate:.1%}: {'met' if met else 'NOT met'} |")
    return 0 if met else 1


def preflight() -> int:
    """On a GPU machine: which of train.py's needs are there (the device image holds JAX with
    CUDA, but not TensorFlow or Keras: see the report in BENCHMARKS.md)."""
    found = {}
    for module in ("keras", "jax", "tensorflow", "h5py", "PIL", "numpy"):
        try:
            mod = __import__(module)
            found[module] = getattr(mod, "__version__", "present")
        except Exception as exc:  # ImportError, or a broken install
            found[module] = f"MISSING ({type(exc).__name__})"
    for module, version in found.items():
        print(f"{module:<11} {version}")
    if not str(found["jax"]).startswith("MISSING"):
        import jax
        print("jax devices:", jax.devices())
    blocked = [m for m in ("keras", "tensorflow") if str(found[m]).startswith("MISSING")]
    if blocked:
        print(f"train.py cannot run here: {', '.join(blocked)} missing (kerascnn.data builds its "
              f"pipelines with tf.data); carry keras as wheels and use a loader without TensorFlow")
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    c = sub.add_parser("commands")
    c.add_argument("machine", choices=["cpu", "gpu"])
    r = sub.add_parser("run")
    r.add_argument("name", choices=sorted(RUNS))
    r.add_argument("--data-root", default=str(SHARED_DATA))
    r.add_argument("--backend", choices=["tensorflow", "jax", "torch"], default=None)
    k = sub.add_parser("check")
    k.add_argument("run_dir")
    s = sub.add_parser("ship")
    s.add_argument("run_dir")
    s.add_argument("--tag", default=None, help="default: the run's (see list)")
    s.add_argument("--machine", required=True, help="what it trained on, for the manifest")
    sub.add_parser("preflight")
    args = parser.parse_args(argv)

    if args.command == "list":
        for run in RUNS.values():
            done = (ROOT / "runs" / run.name / "metrics.json").exists()
            gate = f">= {run.gate:.1%}" if run.gate else "recorded"
            print(f"{run.name:<22} {run.machine}  {run.epochs:>3} epochs  gate {gate:<9} "
                  f"{'done' if done else 'to run'}  {run.notes}")
        return 0
    if args.command == "commands":
        print("\n".join(commands(args.machine)))
        return 0
    if args.command == "run":
        run = RUNS[args.name]
        env = dict(os.environ, **({"KERAS_BACKEND": args.backend} if args.backend else {}))
        return subprocess.call(train_command(run, args.data_root), cwd=ROOT, env=env)
    if args.command == "check":
        return check(args.run_dir)
    if args.command == "ship":
        sys.path.insert(0, str(ROOT))
        from kerascnn.weights import packing
        name = Path(args.run_dir).name
        run = RUNS.get(name)
        tag = args.tag or (run.ship if run else None)
        if not tag:
            print(f"error: {name} has no shipping tag; pass --tag", file=sys.stderr)
            return 2
        s_ = summary(args.run_dir)
        path = packing.ship(
            args.run_dir, tag, machine=args.machine,
            command=_shell(run, "../shared/data") if run else f"train.py (run {name})",
            reference=run.reference if run else "",
            notes=(f"{s_['epochs']} epochs, {s_['training_s'] / 60:.1f} min of training; "
                   f"final-epoch weights; validation = {s_['val_source']}, never trained on"
                   + (f"; {run.notes}" if run and run.machine == "cpu" else "")))
        print(f"shipped {path} and its weights")
        return 0
    return preflight()


if __name__ == "__main__":
    sys.exit(main())
