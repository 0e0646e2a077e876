#!/usr/bin/env python3
"""Serving benchmark: requests/s and p50/p99 latency of ``python -m kerascnn serve``.

    python bench/serving_bench.py                       # LeNet-5 and ResNet-50, c = 1, 8, 32
    python bench/serving_bench.py --models lenet5 --seconds 5 --api rest

Each model is built with the zoo's builder (random weights: throughput does not depend on them),
exported with ``kerascnn.export.export_model`` and registered with ``upsert_model_config`` in a
temporary folder. Two servers run as their own processes, side by side: one without batching,
one with ``serving/batching_parameters.txt``. For each point a ``grpc.aio`` (or ``httpx``) client
keeps ``c`` requests of one real image each in flight for a fixed time after a warm-up, recording
every latency, in ``--rounds`` rounds that alternate between the two servers, so a shared machine's
load falls on both alike; requests/s is the median over the rounds. Inputs are
uint8 arrays: MNIST digits padded to 32x32 for LeNet-5, Imagenette photos at 224x224 for ResNet-50
(``../shared/data``). The exported model is also timed alone, in-process, at batch 1 and 32: the
ceiling each mode can reach. Prints a Markdown table (``--output`` also writes JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED_DATA = Path(os.environ.get("KERASCNN_SHARED_DATA", ROOT.parent / "shared" / "data"))
#: name -> (classes, preprocessing, images loader)
MODELS = {"lenet5": (10, "unit"), "resnet50": (1000, "imagenet")}
SECONDS = {"lenet5": 4.0, "resnet50": 8.0}
WARMUP = {"lenet5": 1.0, "resnet50": 3.0}


def _images(name: str, count: int = 32) -> np.ndarray:
    """Real images as the model's uint8 input batch."""
    if name == "lenet5":
        from kerascnn.data import read_idx
        digits = read_idx(SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz")[:count]
        return np.pad(digits, ((0, 0), (2, 2), (2, 2)))[..., None].astype(np.uint8)  # 28 -> 32
    from kerascnn.transforms import EvalTransform, load_images
    files = sorted((SHARED_DATA / "imagenette" / "train").glob("*/*.JPEG"))[::300][:count]
    return load_images(files, EvalTransform.default((224, 224, 3)))


def _export(models, workdir: Path) -> Path:
    import kerascnn
    from kerascnn.export import ExportSource, export_model
    from kerascnn.serving.config import upsert_model_config
    config = workdir / "models.config"
    for name in models:
        classes, preprocessing = MODELS[name]
        model = kerascnn.get_model(name, num_classes=classes, preprocessing=preprocessing)
        started = time.perf_counter()
        export_model(ExportSource(name, model, [f"class_{i}" for i in range(classes)]), name,
                     workdir / "export", 1, formats=("savedmodel",), images=_images(name, 4))
        upsert_model_config(config, name)
        print(f"exported {name} ({model.count_params():,} parameters) in "
              f"{time.perf_counter() - started:.0f} s", flush=True)
    return config


def _model_alone(export_dir: Path, name: str, images: np.ndarray, seconds: float) -> dict:
    """Images/s of the exported signature called in-process at batch 1 and 32: no server at all."""
    from kerascnn.serving.manager import Servable
    sig = Servable(name, 1, export_dir / name / "1").signatures["serving_default"]
    rates = {}
    for batch in (1, 32):
        x = {"image": np.resize(images, (batch,) + images.shape[1:])}
        sig(x)
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            sig(x)
            calls += 1
        rates[batch] = calls * batch / (time.perf_counter() - started)
    return rates


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m kerascnn serve`` in its own process, stopped with SIGTERM."""

    def __init__(self, config: Path, batching: Path | None):
        self.rest, self.grpc = _free_port(), _free_port()
        command = [sys.executable, "-m", "kerascnn", "serve", "--model-config", str(config),
                   "--model-base-dir", str(config.parent / "export"), "--rest-port",
                   str(self.rest), "--grpc-port", str(self.grpc), "--log-level", "warning"]
        if batching is not None:
            command += ["--batching-parameters", str(batching)]
        self.proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                                     env={**os.environ, "PYTHONPATH": str(ROOT)})

    def wait_ready(self, names, timeout: float = 300.0) -> None:
        import httpx
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.proc.returncode}")
            try:
                if all(httpx.get(f"http://127.0.0.1:{self.rest}/v1/models/{n}", timeout=5)
                       .status_code == 200 for n in names):
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise TimeoutError("the server did not become ready")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _load(server: Server, name: str, images: np.ndarray, concurrency: int, warmup: float,
                seconds: float, api: str) -> dict:
    """Keep ``concurrency`` one-image requests in flight; time those ending in the window."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    window = (start + warmup, start + warmup + seconds)
    done, errors = [], []

    if api == "grpc":
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
        requests = []
        for image in images:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = name
            request.inputs["image"].CopyFrom(tf.make_tensor_proto(image[None]))
            requests.append(request)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        async def call(i):
            await stub.Predict(requests[i], timeout=300)
    else:
        import httpx
        bodies = [json.dumps({"instances": image[None].tolist()}).encode() for image in images]
        channel = httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.rest}", timeout=300,
                                    limits=httpx.Limits(max_connections=concurrency))

        async def call(i):
            r = await channel.post(f"/v1/models/{name}:predict", content=bodies[i],
                                   headers={"content-type": "application/json"})
            r.raise_for_status()

    async def worker(k):
        i = k
        while loop.time() < window[1]:
            sent = loop.time()
            try:
                await call(i % len(images))
            except Exception as exc:  # noqa: BLE001 (counted and reported)
                errors.append(repr(exc))
            else:
                done.append((loop.time(), loop.time() - sent))
            i += concurrency

    try:
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
    finally:
        await (channel.close() if api == "grpc" else channel.aclose())
    latencies = np.array([lat for end, lat in done if window[0] <= end <= window[1]]) * 1000
    return {"model": name, "concurrency": concurrency, "requests": int(latencies.size),
            "rps": latencies.size / seconds, "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)), "errors": len(errors),
            "first_error": errors[0] if errors else None, "latencies_ms": latencies}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lenet5,resnet50")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=None,
                        help="measured seconds per round (default: 4 LeNet, 8 ResNet-50)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds before measuring (default: 1 LeNet, 3 ResNet-50)")
    parser.add_argument("--api", choices=["grpc", "rest"], default="grpc")
    parser.add_argument("--batching-parameters", default=str(ROOT / "serving" /
                                                              "batching_parameters.txt"))
    parser.add_argument("--modes", default="off,on", help="batching off, on, or both (off,on)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measurements per point and mode, alternating the modes (3)")
    parser.add_argument("--output", metavar="FILE", help="also write the numbers as JSON")
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    levels = [int(c) for c in args.concurrency.split(",")]

    import tensorflow as tf
    results = []
    load_before, started = os.getloadavg(), time.time()
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as tmp:
        config = _export(models, Path(tmp))
        images = {name: _images(name) for name in models}
        alone = {}
        for name in models:
            alone[name] = _model_alone(Path(tmp) / "export", name, images[name],
                                       args.seconds or SECONDS[name] / 2)
            print(f"{name:9} model alone: " + ", ".join(f"batch {b}: {r:.1f} images/s"
                                                      for b, r in alone[name].items()), flush=True)
        # Both servers run side by side and the rounds alternate between them, so the load of a
        # shared machine falls on both modes alike; rates are the median over rounds.
        modes = [m.strip() for m in args.modes.split(",")]
        servers = {m: Server(config, None if m == "off" else Path(args.batching_parameters))
                   for m in modes}
        try:
            for server in servers.values():
                server.wait_ready(models)
            for name in models:
                for c in levels:
                    rounds = {m: [] for m in modes}
                    for _ in range(args.rounds):
                        for mode, server in servers.items():
                            seconds = args.seconds or SECONDS[name]
                            warmup = WARMUP[name] if args.warmup is None else args.warmup
                            row = asyncio.run(_load(server, name, images[name], c, warmup,
                                                    seconds, args.api))
                            rounds[mode].append(row)
                            print(f"{name:9} batching={mode:3} c={c:<3} {row['rps']:8.1f} req/s  "
                                  f"p50 {row['p50_ms']:8.1f} ms  p99 {row['p99_ms']:8.1f} ms  "
                                  f"errors {row['errors']}", flush=True)
                    for mode, rows in rounds.items():
                        latencies = np.concatenate([r.pop("latencies_ms") for r in rows])
                        results.append({
                            "model": name, "concurrency": c, "batching": mode == "on",
                            "rps": float(np.median([r["rps"] for r in rows])),
                            "rps_rounds": [round(r["rps"], 1) for r in rows],
                            "requests": int(latencies.size),
                            "p50_ms": float(np.percentile(latencies, 50)),
                            "p99_ms": float(np.percentile(latencies, 99)),
                            "errors": sum(r["errors"] for r in rows)})
        finally:
            for server in servers.values():
                server.stop()

    table = ["| model | batching | concurrency | requests/s (median) | per round | p50 ms | p99 ms "
             "| errors |", "|---|---|---:|---:|---|---:|---:|---:|"]
    for r in results:
        table.append(f"| {r['model']} | {'on' if r['batching'] else 'off'} | {r['concurrency']} | "
                     f"{r['rps']:.1f} | {', '.join(map(str, r['rps_rounds']))} | "
                     f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |")
    ratios = {}
    top = max(levels)
    for name in models:
        rps = {r["batching"]: r["rps"] for r in results
               if r["model"] == name and r["concurrency"] == top}
        if len(rps) == 2:
            ratios[name] = rps[True] / rps[False]
    print("\n".join(table))
    for name, rates in alone.items():
        print(f"{name}: model alone, no server: " + ", ".join(
            f"batch {b} {r:.1f} images/s" for b, r in rates.items()))
    for name, ratio in ratios.items():
        print(f"{name}: batching / no batching at concurrency {top} = {ratio:.2f}x")
    print(f"load average (1, 5, 15 min) at start {load_before}, at end {os.getloadavg()}; the "
          f"machine has {os.cpu_count()} CPUs")
    report = {"date": time.strftime("%Y-%m-%d"), "api": args.api, "cpus": os.cpu_count(),
              "machine": platform.platform(), "tensorflow": tf.__version__,
              "batching_parameters": Path(args.batching_parameters).read_text(),
              "results": results, "ratio_at_max_concurrency": ratios,
              "model_alone_images_per_s": alone,
              "load_average_1_5_15min": {"start": load_before, "end": os.getloadavg()},
              "wall_s": round(time.time() - started),
              "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(r["errors"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
