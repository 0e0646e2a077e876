"""The README's ten-line tour, run exactly as written in a fresh clone (issue 17.6).

The run is opt-in (``pytest -m tour``, ~10 minutes on 2 cores): it clones the committed checkout into a
temporary folder, takes the lines between ``<!-- tour -->`` and ``<!-- /tour -->`` from the clone's
README and runs them in one bash shell from the clone's root, offline, with the installed
dependencies (the install itself is the README's first command). The clone's own ``kerascnn`` is
what runs: ``python3 -m`` and scripts put the clone first on ``sys.path``. A recording "browser"
(``BROWSER``) stands in for the newcomer's, and the server uses TF Serving's default ports.
"""

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

TOUR_MINUTES = 15


def tour_lines(readme: str) -> list[str]:
    block = re.search(r"<!-- tour -->\s*```bash\n(.*?)```\s*<!-- /tour -->", readme, re.S)
    assert block, "README.md has no <!-- tour --> ```bash ... ``` <!-- /tour --> block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_tour_is_ten_lines():
    lines = tour_lines((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(lines) == 10
    assert lines[0].startswith("python3 train.py --arch googlenet")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.tour
def test_the_tour_runs_in_a_fresh_clone_in_under_fifteen_minutes(tmp_path):
    if not (_port_free(8500) and _port_free(8501)):
        pytest.skip("ports 8500/8501 are taken: the tour's server needs TF Serving's defaults")
    clone = tmp_path / "kerascnn"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    lines = tour_lines((clone / "README.md").read_text(encoding="utf-8"))
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser"
    browser.write_text(f"#!/bin/sh\necho \"$1\" >> {opened}\n")
    browser.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERASCNN_VERBOSE")}
    env.update(BROWSER=str(browser), KERAS_HOME=str(tmp_path / "keras-home"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    script = "set -e\n" + "\n".join(lines) + "\nwait || true\n"  # the killed server
    start = time.monotonic()
    proc = subprocess.run(["bash", "-c", script], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=60 * TOUR_MINUTES + 120)
    minutes = (time.monotonic() - start) / 60
    out = proc.stdout
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert minutes < TOUR_MINUTES, f"the tour took {minutes:.1f} minutes"

    run = clone / "runs" / "tour"
    assert (run / "metrics.json").is_file() and (run / "report.html").is_file()
    assert "next:" in out and "python -m kerascnn export runs/tour --name googlenet" in out
    assert "| inception_3a" in out or "inception_3a" in out             # the lecture's table
    assert opened.read_text().strip().endswith("runs/tour/report.html")
    version = clone / "export" / "googlenet" / "1"
    assert (version / "saved_model.pb").is_file() and (version / "model.onnx").is_file()
    # both client calls print the image and its top-5 (the sample has 5 classes)
    for image in ("golf_ball/", "church/"):
        shown = [i for i, line in enumerate(out.splitlines()) if image in line
                 and line.endswith(".jpg")]
        assert shown, f"no client answer for {image}"
    ranks = re.findall(r"^\s+1\. (\S+)", out, re.M)
    assert len(ranks) >= 2
    # predict with the shipped CIFAR-10 ResNet-20: most garbage trucks are CIFAR's "truck"
    trucks = re.findall(r"garbage_truck/\S+\.jpg\n\s+1\.\s+(\S+)", out)
    assert len(trucks) == 20 and trucks.count("truck") >= 10, trucks
    assert (clone / "visualizations" / "resnet20-cifar10-gradcam-n03417042_11095.png").is_file()
