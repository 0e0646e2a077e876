#!/usr/bin/env python3
"""GPU training images/s: our ResNet-50 and GoogLeNet (Keras on JAX, bf16) against torchvision's.

    python3 bench/gpu_resnet50.py                        # on an NVIDIA H100/H200: both networks
    python3 bench/gpu_resnet50.py --models resnet50 --batch 256 --steps 50 --rounds 3
    python3 bench/gpu_resnet50.py --smoke                # tiny CPU run: checks the script only
                                                         # (minutes: XLA compiles the full steps)

Issue 7, part 3. In one process, on the same GPU, interleaved round by round (ours, torchvision,
ours from the host pipeline; the order reversed every round) after a compile/warm-up window:

* **ours, device data**: ``kerascnn.get_model`` (uint8 ``image`` input, ImageNet preprocessing
  inside, as ``train.py`` builds it) under the ``mixed_bfloat16`` policy, trained by one
  ``jax.jit``-compiled step (``model.stateless_call`` + ``optimizer.stateless_apply``, buffers
  donated) on a synthetic uint8 batch already on the GPU;
* **torchvision, device data**: ``torchvision.models.resnet50()`` / ``googlenet()`` in
  ``channels_last`` with PyTorch AMP (``torch.autocast``, bf16 by default: no GradScaler needed),
  SGD with momentum, on a synthetic float batch already on the GPU;
* **ours, uint8 host pipeline**: the same Keras model trained with ``model.fit`` from uint8 batches
  in host memory (a ``keras.utils.PyDataset``; Keras prefetches batches to the device): what
  training from real data costs on top, with the uint8 transfer 4x smaller than float32. No
  TensorFlow is needed (``bench/input_pipeline.py`` measures decoding separately).

Both sides use SGD (momentum 0.9) and softmax cross-entropy; GoogLeNet runs with both auxiliary
classifiers (loss weights 1, 0.3, 0.3) on both sides, ours as the BN variant (``batch_norm=True``)
to match torchvision's, whose "5x5" branch is a 3x3 conv (anchors-zoo.md: pytorch/vision#906), so
ours does more work there. Goal: ours >= 1.0x torchvision's images/s.

Reference numbers measured earlier on an H200 (other scripts): torchvision resnet50 4,685
images/s; keras.applications.ResNet50 on JAX 2,975 images/s from float32 host input and 4,540
from uint8 host input; torchvision googlenet 6,689 images/s.

Needs JAX with CUDA and Keras (pure Python: its wheel and ``namex``/``optree`` can be carried to a
machine without network); the torchvision side needs CUDA builds of torch and torchvision. Where
those are missing the script still measures ours and compares with the H200 reference numbers
above, labelled as such (not the same run). JAX does not preallocate GPU memory here, so that
PyTorch fits beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: images/s measured on an H200 before this script (see the docstring)
REFERENCE_H200 = {"torchvision resnet50": 4685,
                  "keras.applications ResNet50 jax float32 host": 2975,
                  "keras.applications ResNet50 jax uint8 host": 4540,
                  "torchvision googlenet": 6689}
AUX_WEIGHT = 0.3


def _setup_environment():
    # Both must be set before jax/keras are imported.
    os.environ["KERAS_BACKEND"] = "jax"
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave room for PyTorch
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------------------------ ours

class OursDevice:
    """Our network, one jitted training step on a batch that stays on the device."""

    def __init__(self, name: str, batch: int, size: int):
        import jax
        import keras
        import numpy as np

        import kerascnn
        self.aux = name == "googlenet"
        options = {"aux_logits": True, "batch_norm": True} if self.aux else {}
        self.model = kerascnn.get_model(name, 1000, (size, size, 3), preprocessing="imagenet",
                                        **options)
        self.optimizer = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
        self.optimizer.build(self.model.trainable_variables)
        loss = keras.losses.SparseCategoricalCrossentropy()
        rng = np.random.default_rng(0)
        self.x = jax.device_put(rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8))
        self.y = jax.device_put(rng.integers(0, 1000, batch).astype("int32"))
        model, optimizer, aux = self.model, self.optimizer, self.aux

        def loss_fn(trainable, non_trainable, x, y):
            outputs, non_trainable = model.stateless_call(trainable, non_trainable, x,
                                                          training=True)
            if aux:
                main, aux1, aux2 = outputs
                value = loss(y, main) + AUX_WEIGHT * (loss(y, aux1) + loss(y, aux2))
            else:
                value = loss(y, outputs)
            return value, non_trainable

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def step(trainable, non_trainable, opt_vars, x, y):
            (value, non_trainable), grads = grad_fn(trainable, non_trainable, x, y)
            trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
            return trainable, non_trainable, opt_vars, value

        self._step = jax.jit(step, donate_argnums=(0, 1, 2))
        self.state = ([v.value for v in model.trainable_variables],
                      [v.value for v in model.non_trainable_variables],
                      [v.value for v in optimizer.variables])
        self.loss = None

    def run(self, steps: int) -> float:
        """Seconds for ``steps`` steps, synchronised at the end."""
        start = time.perf_counter()
        state = self.state
        for _ in range(steps):
            *state, self.loss = self._step(*state, self.x, self.y)
        self.loss.block_until_ready()
        self.state = tuple(state)
        return time.perf_counter() - start


class OursHost:
    """Our network trained with ``model.fit`` from uint8 batches in host memory."""

    def __init__(self, name: str, batch: int, size: int):
        import keras
        import numpy as np

        import kerascnn
        aux = name == "googlenet"
        options = {"aux_logits": True, "batch_norm": True} if aux else {}
        self.model = kerascnn.get_model(name, 1000, (size, size, 3), preprocessing="imagenet",
                                        **options)
        losses = ["sparse_categorical_crossentropy"] * (3 if aux else 1)
        self.model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1, momentum=0.9),
                           loss=losses if aux else losses[0],
                           loss_weights=[1.0, AUX_WEIGHT, AUX_WEIGHT] if aux else None,
                           jit_compile=True)
        rng = np.random.default_rng(0)
        # 8 distinct host batches, cycled: the cost is the host->device transfer, not decoding.
        images = rng.integers(0, 256, (8, batch, size, size, 3), dtype=np.uint8)
        labels = rng.integers(0, 1000, (8, batch)).astype("int32")

        class HostBatches(keras.utils.PyDataset):
            def __init__(self, steps):
                super().__init__(workers=2)
                self.steps = steps

            def __len__(self):
                return self.steps

            def __getitem__(self, i):
                y = labels[i % 8]
                return images[i % 8], ((y, y, y) if aux else y)

        self.batches = HostBatches

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        # fit converts the last logs to floats, which waits for the last step
        self.model.fit(self.batches(steps), epochs=1, shuffle=False, verbose=0)
        return time.perf_counter() - start


# ------------------------------------------------------------------------------------ torchvision

class Torchvision:
    """torchvision's network, channels_last, PyTorch AMP, on a batch that stays on the device."""

    def __init__(self, name: str, batch: int, size: int, device: str, amp_dtype: str,
                 compile_model: bool = False, stand_in: bool = False):
        import torch
        self.torch = torch
        self.aux = name == "googlenet"
        if stand_in:
            model = _stand_in(self.aux)
        elif self.aux:
            import torchvision
            model = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)
        else:
            import torchvision
            model = getattr(torchvision.models, name)(weights=None)
        self.device = device
        self.model = model.to(device).to(memory_format=torch.channels_last).train()
        if compile_model:
            self.model = torch.compile(self.model)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[amp_dtype]
        self.scaler = torch.amp.GradScaler(device, enabled=self.dtype == torch.float16)
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, 3, size, size, generator=gen).to(device).to(
            memory_format=torch.channels_last)
        self.y = torch.randint(0, 1000, (batch,), generator=gen).to(device)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        if device == "cuda":
            torch.backends.cudnn.benchmark = True

    def _step(self):
        torch = self.torch
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device, dtype=self.dtype):
            out = self.model(self.x)
            if self.aux:
                loss = self.loss_fn(out.logits, self.y) + AUX_WEIGHT * (
                    self.loss_fn(out.aux1, self.y) + self.loss_fn(out.aux2, self.y))
            else:
                loss = self.loss_fn(out, self.y)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss

    def run(self, steps: int) -> float:
        torch = self.torch
        if self.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            loss = self._step()
        loss.item()  # waits for the last step
        if self.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def _stand_in(aux: bool):
    """--smoke without torchvision: a two-layer torch CNN with torchvision's output types, so the
    AMP / channels_last training step still runs (its rate means nothing)."""
    import collections

    import torch
    outputs = collections.namedtuple("GoogLeNetOutputs", "logits aux2 aux1")

    class StandIn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
            self.fc = torch.nn.Linear(8, 1000)

        def forward(self, x):
            logits = self.fc(self.features(x))
            return outputs(logits, logits, logits) if aux else logits

    return StandIn()


# ------------------------------------------------------------------------------------ driver

def gpu_name() -> str:
    try:
        import torch
        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except ImportError:
        pass
    import jax
    device = jax.devices()[0]
    return getattr(device, "device_kind", str(device))


def measure(models, *, batch: int, size: int, steps: int, warmup: int, rounds: int,
            smoke: bool, amp_dtype: str, torch_compile: bool, host: bool, log=print) -> dict:
    import jax
    import keras
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    platform = jax.devices()[0].platform
    if platform != "gpu" and not smoke:
        raise SystemExit(f"error: JAX sees no GPU (platform {platform!r}); install jax[cuda12] "
                         f"on a GPU machine, or pass --smoke for a tiny CPU check of the script")
    torch_error, torch_device, stand_in = None, None, False
    try:
        import torch
        torch_device = "cuda" if torch.cuda.is_available() else "cpu"
        if platform == "gpu" and torch_device == "cpu":
            raise RuntimeError("this torch build sees no GPU")
        import torchvision  # noqa: F401
    except Exception as exc:  # also torchvision's C ops failing against another torch build
        torch_error = f"{type(exc).__name__}: {exc}"
        # --smoke on a CPU: a stand-in torch CNN exercises the torch step; otherwise ours only
        stand_in = smoke and torch_device == "cpu" and platform != "gpu"
        torch_device = "cpu" if stand_in else None
        log(f"  torchvision side: {torch_error}; "
            + ("a stand-in torch CNN runs it (--smoke)" if stand_in else
               "skipped, ours is compared with the H200 reference numbers instead"))
    rows = []
    for name in models:
        candidates = {"ours (device data)": OursDevice(name, batch, size)}
        if torch_device:
            candidates["torchvision (device data)"] = Torchvision(
                name, batch, size, torch_device, amp_dtype, torch_compile, stand_in)
        if host:
            candidates["ours (uint8 host pipeline)"] = OursHost(name, batch, size)
        for label, candidate in candidates.items():
            seconds = candidate.run(warmup)
            log(f"  {name} {label}: warm-up/compile {seconds:.1f} s")
        times = {label: [] for label in candidates}
        labels = list(candidates)
        for r in range(rounds):
            for label in (labels if r % 2 == 0 else labels[::-1]):
                times[label].append(candidates[label].run(steps))
        rates = {label: batch * steps / statistics.median(t) for label, t in times.items()}
        row = {"model": name, "batch": batch, "input": size, "steps": steps, "rounds": rounds,
               "images_per_s": rates}
        torch_rate = rates.get("torchvision (device data)")
        if not torch_rate and not smoke:  # not the same run: say so wherever it is shown
            torch_rate = REFERENCE_H200[f"torchvision {name}"]
            row["ratio_against"] = "the H200 reference numbers (not this run)"
        if torch_rate:
            row["ratio_device"] = rates["ours (device data)"] / torch_rate
            if host:
                row["ratio_host"] = rates["ours (uint8 host pipeline)"] / torch_rate
        log(f"  {name}: " + ", ".join(f"{k} {v:,.0f} images/s" for k, v in rates.items())
            + (f"; ours/torchvision {row['ratio_device']:.3f}x" if "ratio_device" in row else ""))
        rows.append(row)
        del candidates
        keras.backend.clear_session()
    versions = {"jax": jax.__version__, "keras": keras.__version__}
    if torch_device:
        import torch
        versions["torch"] = torch.__version__
        if not stand_in:
            versions["torchvision"] = sys.modules["torchvision"].__version__
    return {"device": gpu_name() if platform == "gpu" else f"CPU ({platform}, smoke run)",
            "amp_dtype": amp_dtype, "torch_compile": torch_compile, "versions": versions,
            "rows": rows, "reference_h200": REFERENCE_H200, "torch_error": torch_error,
            "torch_stand_in": stand_in,
            "date": time.strftime("%Y-%m-%d"), "smoke": smoke}


def markdown(result: dict) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
    lines = [f"GPU: {result['device']}; bf16 mixed precision (Keras `mixed_bfloat16`, "
             f"torch.autocast {result['amp_dtype']}); versions: {versions}", "",
             "| model | batch | candidate | images/s | ours / torchvision |",
             "|---|---:|---|---:|---:|"]
    if result.get("torch_stand_in"):
        lines.insert(1, "torch side: a stand-in CNN (--smoke without torchvision); no ratio here "
                        "means anything")
    for row in result["rows"]:
        for label, rate in row["images_per_s"].items():
            ratio = ""
            if label == "ours (device data)" and "ratio_device" in row:
                ratio = f"**{row['ratio_device']:.3f}**"
            elif label == "ours (uint8 host pipeline)" and "ratio_host" in row:
                ratio = f"{row['ratio_host']:.3f}"
            lines.append(f"| {row['model']} | {row['batch']} | {label} | {rate:,.0f} | {ratio} |")
        if "ratio_against" in row:
            lines.append(f"| {row['model']} | | ratios against {row['ratio_against']} | | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,googlenet",
                        help="comma-separated: resnet50, googlenet")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 256)")
    parser.add_argument("--size", type=int, default=None, help="input size (default 224)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per window (50)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps (15)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (3)")
    parser.add_argument("--amp-dtype", choices=["bfloat16", "float16"], default="bfloat16",
                        help="PyTorch autocast dtype (float16 adds a GradScaler)")
    parser.add_argument("--torch-compile", action="store_true",
                        help="also torch.compile torchvision's model (default: eager, as the "
                             "reference numbers)")
    parser.add_argument("--no-host", action="store_true", help="skip the uint8 host pipeline run")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run (96 px, batch 2, 1 step) that also works on a CPU")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in ("resnet50", "googlenet")]
    if bad:
        parser.error(f"unknown model {', '.join(bad)}: choose resnet50 and/or googlenet")
    _setup_environment()
    small = args.smoke
    result = measure(models, batch=args.batch or (2 if small else 256),
                     size=args.size or (96 if small else 224),
                     steps=args.steps or (1 if small else 50),
                     warmup=args.warmup or (1 if small else 15),
                     rounds=args.rounds or (1 if small else 3), smoke=small,
                     amp_dtype=args.amp_dtype, torch_compile=args.torch_compile,
                     host=not args.no_host)
    print(markdown(result))
    if args.json:
        tmp = Path(args.json).with_name(f".{Path(args.json).name}.tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
