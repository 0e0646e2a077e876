"""report.html as a person sees it: rendered by headless Chromium at a laptop's width.

Opt-in (``pytest -m browser``): it needs Debian's ``chromium`` (``apt-get install chromium``).
Every image the page references loads, nothing overflows the width horizontally, and a screenshot
is not blank.
"""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import mnist_subset

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LAPTOP = (1366, 768)
#: Run in the page once it has loaded: what a person would notice, as data in the DOM.
CHECK = """<script>
window.addEventListener('load', () => {
  const root = document.documentElement;
  const images = [...document.images].map(i => ({src: i.getAttribute('src'),
                                                  ok: i.complete && i.naturalWidth > 0}));
  const wide = [...document.querySelectorAll('body *')]
    .filter(e => e.getBoundingClientRect().right > root.clientWidth + 1
                 && getComputedStyle(e.parentElement).overflowX === 'visible')
    .map(e => e.tagName.toLowerCase() + (e.className ? '.' + e.className : '')).slice(0, 8);
  document.body.setAttribute('data-check', JSON.stringify(
    {images, wide, scrollWidth: root.scrollWidth, clientWidth: root.clientWidth}));
});
</script>"""


def chromium(*args, user_data):
    if CHROMIUM is None:
        pytest.skip("no chromium: apt-get install chromium")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--user-data-dir={user_data}",
             f"--window-size={LAPTOP[0]},{LAPTOP[1]}", "--virtual-time-budget=10000"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A real run's report: LeNet-5 for one epoch on 1,000 MNIST digits."""
    from kerascnn import training
    root = mnist_subset(tmp_path_factory.mktemp("digits"), 1000)
    run = tmp_path_factory.mktemp("runs") / "lenet5"
    training.train(training.TrainConfig(arch="lenet5", dataset=f"idx:{root}", epochs=1,
                                        run_dir=str(run), verbose=0))
    return run / "report.html"


def test_every_image_loads_and_nothing_overflows_a_laptop_width(report, tmp_path):
    page = report.with_name("report-checked.html")
    page.write_text(report.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"),
                    encoding="utf-8")
    out = chromium("--dump-dom", page.as_uri(), user_data=tmp_path / "profile")
    found = re.search(r'data-check="([^"]*)"', out.stdout)
    assert found, out.stderr[-2000:]
    check = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    referenced = set(re.findall(r'<img[^>]+src="([^"]+)"', report.read_text()))
    assert referenced and {i["src"] for i in check["images"]} == referenced
    assert [i["src"] for i in check["images"] if not i["ok"]] == []  # every image loads
    assert check["scrollWidth"] <= check["clientWidth"], check  # no sideways scrolling
    assert check["wide"] == [], check


def test_a_screenshot_of_the_report_is_not_blank(report, tmp_path):
    from PIL import Image
    shot = tmp_path / "report.png"
    out = chromium(f"--screenshot={shot}", report.as_uri(), user_data=tmp_path / "profile")
    assert shot.is_file(), out.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), np.float64)
    assert pixels.shape == (LAPTOP[1], LAPTOP[0])
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.01  # text and figures, not white
