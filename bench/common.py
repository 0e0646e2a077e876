"""Shared helpers of the benchmark suite: backend selection, timing, machine facts, reporting.

Every benchmark module is a script with a ``measure(...)`` function that returns plain data and a
``main(argv)`` that prints a table and, with ``--json FILE``, writes the numbers for
``bench/run_all.py``, which runs each module in its own process (its own backend, thread pools and
peak memory) and appends the tables to ``BENCHMARKS.md``.

Timing rules, because the CPU is small and shared: every candidate is warmed up first (tracing,
compilation and oneDNN primitive caches are not what we measure); compared candidates run
*interleaved* (ours, reference, ours, reference ...) so that load from other processes hits both
alike; results are medians.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
#: ../shared/data beside the checkout, as tests/conftest.py; KERASCNN_SHARED_DATA overrides it.
SHARED_DATA = Path(os.environ.get("KERASCNN_SHARED_DATA", ROOT.parent / "shared" / "data"))
BACKENDS = ("tensorflow", "jax", "torch")

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kerascnn.files import atomic_write  # noqa: E402  (light: imports no TensorFlow)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class BenchError(RuntimeError):
    """A benchmark could not run; the message says which one and why."""


def set_backend(backend: str | None) -> str:
    """Select the Keras backend; it must happen before ``keras`` is first imported."""
    backend = backend or os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend not in BACKENDS:
        raise BenchError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if "keras" in sys.modules:
        import keras
        if keras.backend.backend() != backend:
            raise BenchError(f"keras was already imported with the {keras.backend.backend()} "
                             f"backend; select {backend!r} before importing keras")
    os.environ["KERAS_BACKEND"] = backend
    return backend


# ------------------------------------------------------------------------------------ timing

def median(values) -> float:
    return float(statistics.median(values))


def time_calls(fn: Callable[[], object], calls: int) -> list[float]:
    """Seconds of each of ``calls`` calls of ``fn`` (each call must block until its result)."""
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def interleaved(candidates: dict[str, Callable[[], object]], rounds: int, calls: int = 1,
                warmup: int = 1) -> dict[str, list[float]]:
    """Per-call seconds of each candidate, run in turn ``rounds`` times (``calls`` calls each).

    All candidates are warmed up before the first timed call. The order alternates every round
    (A B, B A, A B ...) so that neither one always runs right after the other.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in candidates}
    names = list(candidates)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name] += time_calls(candidates[name], calls)
    return times


def ratio_of_medians(a: list[float], b: list[float]) -> float:
    """``median(b) / median(a)`` for per-call times: > 1 when ``a`` is faster."""
    return median(b) / median(a)


# ------------------------------------------------------------------------------------ machine

def cpu_model() -> str:
    """``lscpu``'s model name (``/proc/cpuinfo`` as a fallback)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def versions(packages=("kerascnn", "tensorflow", "keras", "onnxruntime", "tf2onnx", "onnx",
                       "jax", "jaxlib", "torch", "torchvision", "numpy")) -> dict[str, str]:
    """Installed versions (from package metadata: importing TF, JAX and torch here would cost
    seconds and memory in the parent process)."""
    found = {"python": platform.python_version()}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "kerascnn":
                from kerascnn import __version__
                found[name] = __version__
    return found


def machine() -> dict:
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        memory = float("nan")
    return {"cpu": cpu_model(), "cores": cpu_count(), "memory_gib": round(memory, 1),
            "os": platform.platform(), "versions": versions()}


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (``ru_maxrss`` is KiB on Linux)."""
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


# ------------------------------------------------------------------------------------ processes

def run_script(script: str, args: list[str], *, backend: str | None = None,
               timeout: float | None = None, quiet: bool = False) -> dict:
    """Run ``bench/<script>`` in a fresh Python process and return the JSON it writes.

    A fresh process per benchmark gives each its own backend (``KERAS_BACKEND`` must be set before
    keras is imported), its own thread pools and an honest peak RSS.
    """
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    if backend:
        env["KERAS_BACKEND"] = backend
    with tempfile.TemporaryDirectory(prefix="kerascnn-bench-") as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, str(BENCH / script), *args, "--json", str(out)]
        try:
            proc = subprocess.run(command, cwd=ROOT, env=env, timeout=timeout, text=True,
                                  stdout=subprocess.PIPE if quiet else None,
                                  stderr=subprocess.PIPE)
        except subprocess.TimeoutExpired:
            raise BenchError(f"{script} {' '.join(args)} did not finish in {timeout:.0f} s"
                             ) from None
        if proc.returncode != 0 or not out.is_file():
            tail = "\n".join((proc.stderr or "").strip().splitlines()[-15:])
            raise BenchError(f"{script} {' '.join(args)} failed (exit code {proc.returncode}):\n"
                             f"{tail}")
        return json.loads(out.read_text(encoding="utf-8"))


def write_json(path, data) -> None:
    """Write JSON to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def emit(result: dict, render, json_path=None) -> int:
    """A benchmark script's ending: stamp the command, print ``render(result)`` (Markdown), and
    write the numbers as JSON when asked (run_all.py collects them)."""
    result["command"] = command_line()
    print(render(result))
    if json_path:
        write_json(json_path, result)
    return 0


def _jsonable(value):
    try:
        return float(value)  # numpy scalars
    except (TypeError, ValueError):
        return str(value)


def append_markdown(path, section: str) -> None:
    """Append ``section`` to the Markdown file ``path`` without ever leaving it half-written:
    the whole new file is written beside it and renamed into place."""
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    atomic_write(path, old + ("\n" if old else "") + section.rstrip("\n") + "\n")


# ------------------------------------------------------------------------------------ tables

def table(headers: list[str], rows: list[list], align: str | None = None) -> str:
    """A Markdown table; ``align`` has one ``l`` or ``r`` per column (numbers right by default)."""
    align = align or "".join("r" if rows and isinstance(rows[0][i], (int, float)) else "l"
                             for i in range(len(headers)))
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "–"}[value]
    if isinstance(value, float):
        if value != value:
            return "–"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 10 \
            else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def command_line() -> str:
    """How this script was invoked, relative to the repository root (without ``--json FILE``,
    which only says where run_all.py collected the numbers)."""
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    args, skip = [], False
    for arg in sys.argv[1:]:
        if skip or arg == "--json":
            skip = not skip
            continue
        if not arg.startswith("--json="):
            args.append(arg)
    return " ".join(["python3", script.as_posix(), *args])


def standard_arguments(parser, quick_help: str) -> None:
    """``--quick`` and ``--json`` for every benchmark script."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--backend", choices=BACKENDS, default=None,
                        help="Keras backend (default: $KERAS_BACKEND or tensorflow)")
