import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow 2.21's oneDNN kernels crash the process now and then on this AVX-512 CPU
# (SIGSEGV/SIGBUS in test_explain's gradients: ~1 run in 3 of those four tests with oneDNN,
# 0 in 6 without; the code of the previous landing crashes the same way). Tests run on
# TensorFlow's own kernels; users keep oneDNN (set TF_ENABLE_ONEDNN_OPTS=1 to test with it).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

ROOT = Path(__file__).resolve().parents[1]
#: ../shared/data beside the checkout (CI lays it there); KERASCNN_SHARED_DATA overrides it.
SHARED_DATA = Path(os.environ.get("KERASCNN_SHARED_DATA", ROOT.parent / "shared" / "data"))

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def mnist_subset(root, count: int, classes=None) -> Path:
    """The first ``count`` real MNIST training digits (of ``classes`` only, when given) written
    as IDX files into ``root``: a small real dataset, ``idx:ROOT``, for tests that train. Skips
    the test when ../shared/data/mnist is not there."""
    import numpy as np
    import pytest

    from kerascnn import data

    mnist = SHARED_DATA / "mnist"
    if not mnist.is_dir():
        pytest.skip("../shared/data/mnist not present")
    images = data.read_idx(mnist / "train-images-idx3-ubyte.gz")
    labels = data.read_idx(mnist / "train-labels-idx1-ubyte.gz")
    if classes is not None:
        keep = np.isin(labels, list(classes))
        images, labels = images[keep], labels[keep]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    data.write_idx(root / "train-images-idx3-ubyte.gz", images[:count])
    data.write_idx(root / "train-labels-idx1-ubyte.gz", labels[:count])
    return root


def train_main(argv, capsys):
    """Run train.py's ``main`` in-process, as ``python train.py ARGV`` does; returns
    ``(exit code, stdout, stderr)``."""
    sys.path.insert(0, str(ROOT))
    try:
        import train as train_script
    finally:
        sys.path.remove(str(ROOT))
    rc = train_script.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err
