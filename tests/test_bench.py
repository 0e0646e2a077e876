"""The benchmark suite: its helpers, its verdicts, a smoke run of ``bench/run_all.py --quick``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402
import run_all  # noqa: E402


def test_interleaved_warms_up_then_alternates_the_order():
    calls = []
    candidates = {"ours": lambda: calls.append("ours"), "ref": lambda: calls.append("ref")}
    times = common.interleaved(candidates, rounds=3, calls=2, warmup=1)
    assert calls == ["ours", "ref",                      # warm-up
                     "ours", "ours", "ref", "ref",       # round 1
                     "ref", "ref", "ours", "ours",       # round 2: reversed
                     "ours", "ours", "ref", "ref"]
    assert {k: len(v) for k, v in times.items()} == {"ours": 6, "ref": 6}


def test_ratio_of_medians_is_faster_over_slower():
    # per-call seconds: ours takes 2 s (median), the reference 3 s -> ours is 1.5x as fast
    assert common.ratio_of_medians([2.0, 9.0, 1.0], [3.0, 3.0, 30.0]) == pytest.approx(1.5)
    assert common.median([5, 1, 3, 100]) == 4.0


def test_table_formats_numbers_and_alignment():
    text = common.table(["model", "images/s", "params"], [["resnet50", 3.3123, 25_557_032],
                                                          ["lenet5", 1949.3, 61_706]])
    assert text.splitlines() == ["| model | images/s | params |", "|---|---:|---:|",
                                 "| resnet50 | 3.31 | 25,557,032 |",
                                 "| lenet5 | 1,949 | 61,706 |"]


def test_append_markdown_keeps_what_is_there(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## Training section of another helper\ntext")
    common.append_markdown(path, "## CPU benchmarks\n\n| a |\n")
    text = path.read_text()
    assert text.startswith("# Benchmarks\n\n## Training section of another helper\ntext\n\n")
    assert text.endswith("## CPU benchmarks\n\n| a |\n")
    assert [p.name for p in tmp_path.iterdir()] == ["BENCHMARKS.md"]  # no temporary left


def test_targets_use_the_numbers_of_the_same_run():
    results = {
        "train": {"models": [{"model": "resnet50", "batch": 8, "images_per_s": 2.96}],
                  "pairs": [{"pair": "resnet50", "ours": "kerascnn resnet50 stride_on=1x1",
                             "reference": "keras.applications.ResNet50", "batch": 16,
                             "input": "224x224x3", "ours_images_per_s": 3.31, "ratio": 1.081,
                             "target_met": True},
                            {"pair": "vgg16", "ours": "kerascnn vgg16", "batch": 8,
                             "reference": "keras.applications.VGG16", "input": "224x224x3",
                             "ours_images_per_s": 0.9, "ratio": 0.95, "target_met": False}]},
        "input": {"cold_images_per_s": 547.1},
        "inference": {"models": [{"model": "resnet50", "ort_vs_savedmodel_latency": 0.74,
                                  "target_met": False}]},
    }
    rows = run_all.targets(results)
    assert [r["met"] for r in rows] == [True, False, True, False]
    # the input pipeline is held against the fastest ResNet-50 rate of the run (3.31, the pair's)
    assert rows[2]["measured"] == pytest.approx(547.1 / 3.31)
    assert "3.31" in rows[2]["target"]


def test_gpu_script_parses_without_importing_jax_or_torch():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_resnet50.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--smoke" in out.stdout and "torchvision" in out.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_resnet50.py"),
                          "--models", "vgg16"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "choose resnet50 and/or googlenet" in bad.stderr


def test_run_all_quick_appends_a_complete_section(tmp_path):
    """The whole suite end to end on small models (the numbers are not measurements)."""
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# Benchmarks\n")
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "run_all.py"), "--quick",
                           "--output", str(output), "--json", str(report)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = output.read_text()
    assert text.startswith("# Benchmarks\n\n## CPU benchmarks (--quick smoke run: not "
                           "measurements)")
    for heading in ("### Targets (issue 7)", "### Training images/s", "### tf.data input images/s",
                    "### Inference: Keras, SavedModel, onnxruntime", "### Peak memory"):
        assert heading in text
    assert f"{common.cpu_count()} cores" in text
    data = json.loads(report.read_text())
    results = data["results"]
    assert [r["model"] for r in results["train"]["models"]] == ["lenet5", "resnet20"]
    # LeNet-5 at 1000 classes: 61,706 (anchors-zoo.md, 10 classes) + 990 * 85 for the F6 -> output
    assert results["train"]["models"][0]["params"] == 61_706 + 990 * 85
    assert all(r["images_per_s"] > 0 for r in results["train"]["models"])
    assert {p["pair"] for p in results["train"]["pairs"]} == {"resnet50"}
    assert results["input"]["cold_images_per_s"] > 0 and results["input"]["warm_images_per_s"] > 0
    engines = results["inference"]["models"][0]
    assert engines["model"] == "lenet5"
    assert all(engines[f"{e}_latency_ms"] > 0 for e in ("keras", "savedmodel", "onnxruntime"))
    memory = results["memory"]["rows"][0]
    assert memory["backend"] == "tensorflow" and memory["peak_mib"] >= memory["built_mib"] > 100
    assert len(data["targets"]) == 3  # pair ratio, input / training, onnxruntime / SavedModel
