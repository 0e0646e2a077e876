#!/usr/bin/env python3
"""A real transfer, measured (issue 14, item 6): the shipped ``resnet20:cifar10`` fine-tuned on the
bundled Imagenette sample at 32x32 (the weights' resolution) against the same network trained from
scratch, with the same epochs, data split, batch, recipe and seed.

    python3 bench/transfer.py                      # ~10 min on 2 cores (two runs, sequentially)
    python3 bench/transfer.py --quick              # a smoke test (2 epochs each)

Both runs are what ``train.py`` runs (:func:`kerascnn.training.train`), on the sample's fixed split
(500 train / 100 validation images, 5 classes):

    scratch:     train.py --arch resnet20 --image-size 32 --batch-size B --epochs E
    transfer:    train.py --weights resnet20:cifar10 --batch-size B --freeze-epochs F
                          --fine-tune-epochs E-F
    transfer_bn: the same with --fine-tune-bn train (batch norm adapts in the fine-tune phase)

``--reuse`` reads a run whose directory is already finished (same command) instead of training it
again.

The held-out top-1 of every epoch comes from each run's history.csv; the figure of both curves goes
to ``bench/figures/transfer_resnet20_imagenette5.png``.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

FIGURE = common.BENCH / "figures" / "transfer_resnet20_imagenette5.png"
SOURCE = "resnet20:cifar10"


def measure(epochs: int, freeze: int, batch: int, seed: int, out: Path,
            reuse: bool = False) -> dict:
    from kerascnn import training
    from kerascnn.runs import RunDir

    runs = {
        "scratch": training.TrainConfig(arch="resnet20", image_size=32, batch_size=batch,
                                        epochs=epochs, seed=seed,
                                        run_dir=str(out / "scratch"), verbose=2),
        "transfer": training.TrainConfig(arch=None, weights=SOURCE, batch_size=batch,
                                         freeze_epochs=freeze, fine_tune_epochs=epochs - freeze,
                                         seed=seed, run_dir=str(out / "transfer"), verbose=2),
        "transfer_bn": training.TrainConfig(arch=None, weights=SOURCE, batch_size=batch,
                                            freeze_epochs=freeze, fine_tune_bn="train",
                                            fine_tune_epochs=epochs - freeze, seed=seed,
                                            run_dir=str(out / "transfer_bn"), verbose=2),
    }
    result = {"date": datetime.date.today().isoformat(), "machine": common.machine(),
              "epochs": epochs, "freeze_epochs": freeze, "batch_size": batch, "seed": seed,
              "runs": {}}
    for name, cfg in runs.items():
        run = RunDir(cfg.run_dir)
        if reuse and run.is_finished and len(run.read_history()) == epochs:
            metrics = run.read_metrics()
        else:
            shutil.rmtree(cfg.run_dir, ignore_errors=True)
            metrics = training.train(cfg)
        history = run.read_history()
        config = run.read_config()
        result["runs"][name] = {
            "val_top1": metrics["val_top1"], "best_val_top1": metrics.get("best_val_top1"),
            "best_epoch": metrics.get("best_epoch"), "wall_time_s": metrics["wall_time_s"],
            "val_images": metrics["val_images"], "train_images": config.data["train_images"],
            "per_epoch": [float(r["val_top1"]) for r in history],
            "phase": [int(float(r.get("phase") or 0)) for r in history],
            "lr": [float(r["learning_rate"]) for r in history],
            "phases": config.phases, "recipe": config.recipe.get("name")}
    return result


def figure(result: dict, path: Path) -> Path:
    from matplotlib.figure import Figure

    from kerascnn.plots import save_figure
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    for name, label in (("transfer", f"from {SOURCE} (head {result['freeze_epochs']} epochs, "
                                     f"then all)"),
                        ("transfer_bn", f"from {SOURCE}, batch norm trained when fine-tuning"),
                        ("scratch", "from scratch")):
        top1 = result["runs"][name]["per_epoch"]
        ax.plot(range(1, len(top1) + 1), [100 * v for v in top1], marker="o", ms=3, label=label)
    ax.axvline(result["freeze_epochs"] + 0.5, color="grey", ls=":", lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("held-out top-1 (%)")
    ax.set_title("ResNet-20 on the Imagenette sample at 32x32 (5 classes, 100 held-out)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def _avx512() -> str:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return ""
    return ", AVX-512" if "avx512f" in flags else ""


def render(result: dict) -> str:
    runs = result["runs"]
    scratch, transfer, bn = runs["scratch"], runs["transfer"], runs["transfer_bn"]
    m = result["machine"]
    e, f, b = result["epochs"], result["freeze_epochs"], result["batch_size"]
    noise = max((abs(a - c) for a, c in zip(transfer["per_epoch"][:f], bn["per_epoch"][:f])),
                default=0.0)
    rows = [[i + 1, {1: "freeze", 2: "fine-tune"}.get(transfer["phase"][i], "?"),
             f"{100 * transfer['per_epoch'][i]:.0f}%", f"{100 * bn['per_epoch'][i]:.0f}%",
             f"{100 * scratch['per_epoch'][i]:.0f}%"]
            for i in range(len(scratch["per_epoch"]))]
    return f"""
## Transfer learning: ResNet-20 from CIFAR-10 onto the Imagenette sample (issue 14)

`{result['command']}`, {result['date']}, {m['cpu']} ({m['cores']} cores{_avx512()}, shared), TensorFlow
{m['versions'].get('tensorflow')}, Keras {m['versions'].get('keras')}. The bundled sample
(`kerascnn/samples/imagenette5`: {scratch['train_images']} train / {scratch['val_images']}
held-out images, 5 classes, its fixed val/ split) at 32x32, the paper's CIFAR recipe (SGD momentum
0.9, lr 0.1 with its steps schedule, weight decay 1e-4, pad-4 crop + flip), batch {b}, seed
{result['seed']}, {e} epochs each, the same split and seed:

- scratch: `python train.py --arch resnet20 --image-size 32 --batch-size {b} --epochs {e}`
- transfer: `python train.py --weights {SOURCE} --batch-size {b} --freeze-epochs {f}
  --fine-tune-epochs {e - f}` (the CIFAR-10 model's layers, its CIFAR preprocessing; a new
  5-class `fc`; {f} epochs head only at lr {transfer['phases'][0]['lr']:g}, then every conv layer
  at lr {transfer['phases'][-1]['lr']:g}, batch norm kept in inference mode)
- transfer, BN trained: the same with `--fine-tune-bn train` (batch norm's statistics and scale
  adapt to the new images in the fine-tune phase)

| | final top-1 | best top-1 (epoch) | wall time (shared CPU) |
|---|---:|---:|---:|
| transfer | **{transfer['val_top1']:.0%}** | {transfer['best_val_top1']:.0%} ({transfer['best_epoch']}) | {transfer['wall_time_s'] / 60:.1f} min |
| transfer, BN trained | **{bn['val_top1']:.0%}** | {bn['best_val_top1']:.0%} ({bn['best_epoch']}) | {bn['wall_time_s'] / 60:.1f} min |
| scratch | **{scratch['val_top1']:.0%}** | {scratch['best_val_top1']:.0%} ({scratch['best_epoch']}) | {scratch['wall_time_s'] / 60:.1f} min |

The two transfer runs are configured alike for their first {f} epochs; they differ there by up to
{100 * noise:.0f} points (one held-out image is one point): the run-to-run variation of these
numbers.

![held-out top-1 per epoch](bench/figures/{FIGURE.name})

<details><summary>held-out top-1 per epoch</summary>

{common.table(["epoch", "transfer phase", "transfer", "transfer, BN trained", "scratch"], rows,
               align="rlrrr")}

</details>
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.standard_arguments(parser, "2 epochs each (1 frozen), a smoke test")
    parser.add_argument("--epochs", type=int, default=40, help="epochs of each run")
    parser.add_argument("--freeze-epochs", type=int, default=5,
                        help="of them, the transfer run's head-only epochs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=str(common.ROOT / "runs" / "bench-transfer"))
    parser.add_argument("--figure", default=str(FIGURE))
    parser.add_argument("--reuse", action="store_true",
                        help="read runs already finished in --out-dir instead of training them")
    args = parser.parse_args(argv)
    common.set_backend(args.backend)
    epochs, freeze = (2, 1) if args.quick else (args.epochs, args.freeze_epochs)
    if not 0 <= freeze < epochs:
        raise SystemExit("--freeze-epochs must be in [0, --epochs)")
    result = measure(epochs, freeze, args.batch_size, args.seed, Path(args.out_dir), args.reuse)
    figure(result, Path(args.figure))
    return common.emit(result, render, args.json)


if __name__ == "__main__":
    sys.exit(main())
