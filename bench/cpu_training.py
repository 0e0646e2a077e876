#!/usr/bin/env python3
"""CIFAR ResNet-20 training speed on this CPU: train.py end to end, the in-memory step, bfloat16,
and PyTorch's eager training of the same network, side by side in one run.

    python3 bench/cpu_training.py                  # ~6 min on 2 cores
    python3 bench/cpu_training.py --quick          # a smoke test (tiny numbers)

Rows (batch 128, 32x32x3 uint8 input, SGD momentum 0.9, the budget recipe's loss and L2 penalty):

1. ``train.py`` end to end: :func:`kerascnn.training.train` on a class-balanced subset of
   ``../shared/data/cifar10/train`` (decode once, uint8 cache, pad-4 crop + flip, validation
   included); its steady-state images/s is the second epoch's (the first traces the step).
2. ``train_on_batch`` of the same compiled model on a fixed in-memory batch: the ceiling of (1);
   target (1) >= 0.9 x (2).
3. the same step under ``mixed_bfloat16`` (what ``--mixed-precision`` would pick on a CPU with
   native bfloat16), as a ratio to float32; ``cpu_has_bfloat16`` says whether this CPU has it.
4. PyTorch eager (when ``torch`` is installed): the same ResNet-20 (option A shortcuts) written in
   plain ``torch.nn`` here, in float32 NCHW, float32 channels_last, and bfloat16 autocast with
   channels_last: the reference of issue 13 ("our fastest CPU path >= 1.0x PyTorch's best").

Steps (2)-(4) run interleaved after warm-up, medians of per-call times.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

BATCH = 128


def cifar_subset(root: Path, per_class: int) -> Path:
    """``per_class`` images of each CIFAR-10 class copied into ``root`` (a folder dataset)."""
    source = common.SHARED_DATA / "cifar10" / "train"
    if not source.is_dir():
        raise common.BenchError(f"{source} is missing: the benchmark trains on real CIFAR-10")
    for klass in sorted(p for p in source.iterdir() if p.is_dir()):
        (root / klass.name).mkdir(parents=True)
        for f in sorted(klass.iterdir())[:per_class]:
            shutil.copyfile(f, root / klass.name / f.name)
    return root


def end_to_end(per_class: int, epochs: int) -> dict:
    from kerascnn import training
    with tempfile.TemporaryDirectory() as tmp:
        data = cifar_subset(Path(tmp) / "cifar", per_class)
        metrics = training.train(training.TrainConfig(
            arch="resnet20", dataset=f"folder:{data}", recipe="budget", epochs=epochs,
            batch_size=BATCH, run_dir=str(Path(tmp) / "run"), verbose=0))
        import csv
        with (Path(tmp) / "run" / "history.csv").open() as f:
            times = [float(r["epoch_time_s"]) for r in csv.DictReader(f)]
    steps = (per_class * 10 - round(per_class * 10 * 0.1)) // BATCH
    steady = times[1:] or times
    return {"images": per_class * 10, "epochs": epochs, "epoch_s": times,
            "images_per_s": steps * BATCH * len(steady) / sum(steady),
            "val_top1": metrics["val_top1"]}


def keras_step(policy: str):
    """A closure running one compiled training step of ResNet-20 under ``policy``."""
    import keras
    import numpy as np

    import kerascnn
    from kerascnn.recipes import recipe_for
    from kerascnn.training import compiling

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = kerascnn.get_model("resnet20", 10, (32, 32, 3), preprocessing={
            "scale": 1 / 255, "mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616]})
        recipe = recipe_for("resnet20", "budget")
        compiling.add_weight_decay(model, recipe.weight_decay)
        compiling.compile_model(model, recipe, 10, 351)
    finally:
        keras.config.set_dtype_policy(previous)
    rng = np.random.default_rng(0)
    x = keras.ops.convert_to_tensor(rng.integers(0, 256, (BATCH, 32, 32, 3), dtype=np.uint8))
    y = keras.ops.convert_to_tensor(rng.integers(0, 10, BATCH).astype("int32"))
    return lambda: model.train_on_batch(x, y)


def torch_steps() -> dict:
    """PyTorch eager ResNet-20 steps (fp32, channels_last, bf16 autocast + channels_last)."""
    try:
        import torch
        import torch.nn.functional as F
        from torch import nn
    except ImportError:
        return {}
    torch.set_num_threads(common.cpu_count())

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.stride, self.extra = stride, cout - cin

        def forward(self, x):
            out = self.b2(self.c2(F.relu(self.b1(self.c1(x)))))
            shortcut = x
            if self.stride != 1 or self.extra:  # option A: subsample, zero-pad the channels
                shortcut = F.pad(x[:, :, ::2, ::2],
                                 (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
            return F.relu(out + shortcut)

    def resnet20():
        layers, cin = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                layers.append(Block(cin, cout, stride if i == 0 else 1))
                cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
        return nn.Sequential(*layers)

    def step_fn(channels_last: bool, bf16: bool):
        torch.manual_seed(0)
        model = resnet20()
        opt = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, nesterov=True,
                              weight_decay=5e-4)
        x = torch.randint(0, 256, (BATCH, 3, 32, 32), dtype=torch.uint8)
        y = torch.randint(0, 10, (BATCH,))
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(model(x.float() / 255), y, label_smoothing=0.1)
            loss.backward()
            opt.step()
        return step

    return {"pytorch fp32": step_fn(False, False),
            "pytorch fp32 channels_last": step_fn(True, False),
            "pytorch bf16 autocast channels_last": step_fn(True, True)}


def measure(*, quick: bool = False, log=print) -> dict:
    import keras

    from kerascnn.training import cpu_has_bfloat16
    per_class, epochs, rounds = (40, 2, 2) if quick else (700, 2, 5)
    log(f"train.py end to end on {per_class * 10} CIFAR-10 images, {epochs} epochs ...")
    e2e = end_to_end(per_class, epochs)
    candidates = {"keras float32": keras_step("float32"),
                  "keras mixed_bfloat16": keras_step("mixed_bfloat16"), **torch_steps()}
    log(f"interleaved steps: {', '.join(candidates)} ...")
    times = common.interleaved(candidates, rounds=rounds, calls=1 if quick else 3, warmup=2)
    rates = {name: BATCH / common.median(t) for name, t in times.items()}
    fp32 = rates["keras float32"]
    torch_best = max((v for k, v in rates.items() if k.startswith("pytorch")), default=None)
    return {"backend": keras.backend.backend(), "batch": BATCH, "machine": common.machine(),
            "cpu_has_bfloat16": cpu_has_bfloat16(), "end_to_end": e2e, "steps": rates,
            "e2e_over_train_on_batch": e2e["images_per_s"] / fp32,
            "bf16_over_fp32": rates["keras mixed_bfloat16"] / fp32,
            "ours_over_pytorch_best": fp32 / torch_best if torch_best else None}


def markdown(result: dict) -> str:
    e2e = result["end_to_end"]
    rows = [["train.py end to end (data, augmentation, L2, validation)",
             f"{e2e['images_per_s']:.1f}", f"{result['e2e_over_train_on_batch']:.2f}x of "
             f"train_on_batch (target >= 0.9)"]]
    for name, rate in result["steps"].items():
        rows.append([f"{name} step", f"{rate:.1f}", ""])
    rows.append(["mixed_bfloat16 / float32 (Keras)", "", f"{result['bf16_over_fp32']:.2f}x "
                 f"(native bfloat16 on this CPU: {result['cpu_has_bfloat16']})"])
    if result["ours_over_pytorch_best"] is not None:
        rows.append(["ours (Keras float32) / PyTorch's best", "",
                     f"**{result['ours_over_pytorch_best']:.2f}x** (target >= 1.0)"])
    return common.table(["ResNet-20, batch 128, 32x32", "images/s", "ratio"], rows, "lrl")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.standard_arguments(parser, "a few hundred images and two rounds, for a smoke test")
    args = parser.parse_args(argv)
    common.set_backend(args.backend)
    started = time.perf_counter()
    result = measure(quick=args.quick)
    result["wall_s"] = time.perf_counter() - started
    return common.emit(result, markdown, args.json)


if __name__ == "__main__":
    sys.exit(main())
