"""Every network builds and trains on the TensorFlow, JAX and PyTorch backends (-m backends).

    python3 -m pytest -q -m backends tests/test_backends.py

Keras picks its backend once, at import, from ``KERAS_BACKEND``, so each backend runs in a child
process (this file with ``--worker``) that builds every registered network at a small input (uint8
pixels, preprocessing inside, as ``train.py`` builds them), trains one step and reports what it saw.
The tests then check, per backend and network: the parameter count equals the TensorFlow build's,
the loss is finite and the step changed the weights. One network per family also loads the
weights of a TensorFlow build and must compute the same logits (to 2e-5 of their scale: logits,
not probabilities, which a saturated softmax would make equal by accident), GoogLeNet trains with
its auxiliary classifiers, and LeNet-5 trains from ``kerascnn.data``'s ``tf.data`` pipeline on
every backend, and ``train.py --backend jax|torch`` trains a run directory end to end.

``KERASCNN_BACKEND_MODELS=lenet5,resnet20`` restricts the run to those networks (a quick check).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("tensorflow", "jax", "torch")
#: One network per family for the forward-parity check: LRN and grouped convs (AlexNet,
#: GoogLeNet), BN and projection shortcuts (ResNet-18), option A zero-pad shortcuts (ResNet-20),
#: LeNet's C3 connection table.
PARITY = ("lenet5", "alexnet", "zfnet", "vgg11_bn", "googlenet", "resnet18", "resnet20")
CLASSES = 3
BATCH = 2
#: alexnet_owt's registered minimum (63, torchvision's) leaves pool5 at 1x1, and Keras'
#: AdaptiveAveragePooling2D cannot spread 1x1 over 6x6 on TensorFlow (it can on JAX); from 95 px
#: pool5 is 2x2 and every backend agrees.
INPUT_OVERRIDES = {"alexnet_owt": 95}


def input_size(info) -> int:
    """The smallest square input the network takes, at least 32 (LeNet's own size)."""
    return INPUT_OVERRIDES.get(info.name, max(info.min_size, 32))


def build(name: str, logits: bool = False):
    import kerascnn
    info = kerascnn.model_info(name)
    size, channels = input_size(info), info.input_shape[2]
    # "linear", not None: get_model treats None as "the paper's default" (softmax)
    options = {"classifier_activation": "linear"} if logits else {}
    return kerascnn.get_model(name, CLASSES, (size, size, channels),
                              preprocessing="imagenet" if channels == 3 else "unit", **options)


def batch_for(model, seed: int = 0):
    import numpy as np
    rng = np.random.default_rng(seed)
    shape = tuple(int(d) for d in model.input.shape[1:])
    return (rng.integers(0, 256, (BATCH, *shape), dtype=np.uint8),
            rng.integers(0, CLASSES, BATCH).astype("int32"))


# ------------------------------------------------------------------------------- child process

def _train_one_step(name: str) -> dict:
    import keras
    import numpy as np
    model = build(name)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy")
    before = [np.array(w) for w in model.trainable_weights]
    x, y = batch_for(model)
    history = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    changed = any(not np.array_equal(b, np.array(w))
                  for b, w in zip(before, model.trainable_weights))
    row = {"params": int(model.count_params()), "loss": float(history.history["loss"][-1]),
           "changed": bool(changed)}
    del model
    keras.backend.clear_session()
    return row


def _predict_tf_weights(name: str, parity_dir: Path) -> dict:
    """Logits of the TensorFlow build's weights on this backend: max difference and scale."""
    import numpy as np
    model = build(name, logits=True)
    model.load_weights(parity_dir / f"{name}.weights.h5")
    ref = np.load(parity_dir / f"{name}.npz")
    got = np.asarray(model.predict(ref["x"], verbose=0))
    return {"parity_max_abs_diff": float(np.max(np.abs(got - ref["logits"]))),
            "parity_logit_scale": float(np.max(np.abs(ref["logits"])))}


def _train_googlenet_aux() -> dict:
    """GoogLeNet with both auxiliary classifiers (three outputs, losses weighted 1, 0.3, 0.3), as
    its recipe trains it; the aux heads need a 79x79 input."""
    import keras

    import kerascnn
    from kerascnn.models.googlenet import AUX_LOSS_WEIGHT, AUX_MIN_SIZE
    model = kerascnn.get_model("googlenet", CLASSES, (AUX_MIN_SIZE, AUX_MIN_SIZE, 3),
                               preprocessing="imagenet", aux_logits=True)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=["sparse_categorical_crossentropy"] * 3,
                  loss_weights=[1.0, AUX_LOSS_WEIGHT, AUX_LOSS_WEIGHT])
    x, y = batch_for(model)
    history = model.fit(x, (y, y, y), batch_size=BATCH, epochs=1, verbose=0)
    return {"outputs": len(model.outputs), "loss": float(history.history["loss"][-1]),
            "params": int(model.count_params())}


def _fit_from_tf_data() -> dict:
    """LeNet-5 trained for one step from kerascnn.data's tf.data pipeline (the bundled sample)."""
    import kerascnn
    from kerascnn import data
    ds = data.load("sample", verbose=False, channels=1)
    pipe = data.pipeline(ds.train, image_size=32, channels=1, style=ds.style, training=True,
                         augment="none", batch_size=8, native_size=ds.native_size)
    model = kerascnn.get_model("lenet5", ds.num_classes, preprocessing="unit")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    history = model.fit(pipe.take(2), epochs=1, verbose=0)
    return {"loss": float(history.history["loss"][-1]), "classes": ds.num_classes}


def worker(argv=None) -> int:
    """Child process: ``KERAS_BACKEND`` is set by the parent; one JSON line per network."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--models", required=True)
    parser.add_argument("--parity-dir", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import keras
    with args.out.open("w") as out:
        def emit(row):
            out.write(json.dumps({"backend": keras.backend.backend(), **row}) + "\n")
            out.flush()  # a crash later still leaves the rows before it
        for name in filter(None, args.models.split(",")):
            try:
                row = {"model": name, **_train_one_step(name)}
                if args.parity_dir and (args.parity_dir / f"{name}.npz").exists():
                    row.update(_predict_tf_weights(name, args.parity_dir))
            except Exception as exc:  # noqa: BLE001 (reported per network by the tests)
                row = {"model": name, "error": f"{type(exc).__name__}: {exc}"[:2000]}
            emit(row)
        for key, fn in (("googlenet+aux", _train_googlenet_aux), ("tf.data", _fit_from_tf_data)):
            try:
                emit({"model": key, **fn()})
            except Exception as exc:  # noqa: BLE001
                emit({"model": key, "error": f"{type(exc).__name__}: {exc}"[:2000]})
    return 0


if __name__ == "__main__":
    sys.exit(worker())


# ------------------------------------------------------------------------------- tests

import pytest  # noqa: E402

import kerascnn  # noqa: E402

MODELS = [m for m in os.environ.get("KERASCNN_BACKEND_MODELS", "").split(",") if m] \
    or kerascnn.list_models()
_RUNS: dict[str, tuple[dict, str]] = {}


@pytest.fixture(scope="module")
def parity_dir():
    """Weights and expected logits of TensorFlow builds, for the parity networks.

    A folder of its own rather than ``tmp_path_factory``: the workers run for many minutes, and
    pytest runs started meanwhile (other suites on the same machine) prune old base temp dirs.
    """
    import shutil
    import tempfile

    import keras
    import numpy as np
    folder = Path(tempfile.mkdtemp(prefix="kerascnn-backends-"))
    for name in PARITY:
        if name not in MODELS:
            continue
        model = build(name, logits=True)
        x, _ = batch_for(model, seed=1)
        model.save_weights(folder / f"{name}.weights.h5")
        np.savez(folder / f"{name}.npz", x=x, logits=np.asarray(model.predict(x, verbose=0)))
        del model
        keras.backend.clear_session()
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _run(backend: str, parity: Path) -> tuple[dict, str]:
    """Run the worker once per backend (all networks); rows by network, and stderr's tail."""
    if backend not in _RUNS:
        module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the {backend} backend is not installed (pip install "
                        f"{'jax[cpu]' if backend == 'jax' else backend})")
        out = parity / f"{backend}.jsonl"
        env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([sys.executable, __file__, "--worker", "--models", ",".join(MODELS),
                               "--parity-dir", str(parity), "--out", str(out)],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=3600)
        rows = {}
        if out.exists():
            for line in out.read_text().splitlines():
                row = json.loads(line)
                rows[row["model"]] = row
        _RUNS[backend] = rows, f"exit code {proc.returncode}: " + "\n".join(
            proc.stderr.strip().splitlines()[-20:])
    return _RUNS[backend]


def _row(backend, name, parity):
    rows, tail = _run(backend, parity)
    if name not in rows:
        pytest.fail(f"the {backend} worker never reported {name} (it crashed?) {tail}")
    row = rows[name]
    assert row["backend"] == backend
    assert "error" not in row, f"{name} on {backend}: {row.get('error')}"
    return row


@pytest.mark.backends
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_builds_and_trains_one_step(backend, name, parity_dir):
    import keras
    row = _row(backend, name, parity_dir)
    reference = build(name)  # the TensorFlow build in this process
    expected = reference.count_params()
    del reference
    keras.backend.clear_session()
    assert row["params"] == expected
    assert math.isfinite(row["loss"]) and row["loss"] > 0
    assert row["changed"], f"one SGD step left every weight of {name} unchanged on {backend}"


@pytest.mark.backends
@pytest.mark.parametrize("name", [n for n in PARITY if n in MODELS])
@pytest.mark.parametrize("backend", BACKENDS)
def test_same_logits_as_tensorflow(backend, name, parity_dir):
    row = _row(backend, name, parity_dir)
    assert row["parity_logit_scale"] > 0
    # float32 through up to 18 layers on three conv libraries: measured 4e-8 to 9e-6 against
    # logits of 1e-4 to 15, i.e. within 2e-6 of the scale everywhere
    assert row["parity_max_abs_diff"] <= 2e-5 * max(row["parity_logit_scale"], 1e-3)


@pytest.mark.backends
@pytest.mark.parametrize("backend", BACKENDS)
def test_googlenet_trains_with_auxiliary_classifiers(backend, parity_dir):
    row = _row(backend, "googlenet+aux", parity_dir)
    assert row["outputs"] == 3
    # Main network at 3 classes: 6,998,552 - 997 * 1025 = 5,976,627 (global pooling: any size).
    # At 79x79 each aux head's 5x5/3 pool leaves 1x1x128, so its fc takes 128 inputs, not 2048:
    # 4a head 512*128+128 + 128*1024+1024 + 1024*3+3 = 200,835; 4d head (528 in) 202,883.
    assert row["params"] == 5_976_627 + 200_835 + 202_883
    assert math.isfinite(row["loss"]) and row["loss"] > 0


@pytest.mark.backends
@pytest.mark.parametrize("backend", BACKENDS)
def test_trains_from_the_tf_data_pipeline(backend, parity_dir):
    row = _row(backend, "tf.data", parity_dir)
    assert row["classes"] == 5  # the bundled sample's five Imagenette classes
    assert math.isfinite(row["loss"]) and row["loss"] > 0


@pytest.mark.backends
@pytest.mark.parametrize("backend", ("jax", "torch"))
def test_train_py_backend_flag_trains_a_run(backend, tmp_path):
    """``train.py --backend`` selects the backend before keras is imported and trains with the same
    recipe and tf.data input: a complete run directory whose model loads on TensorFlow."""
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"the {backend} backend is not installed")
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    proc = subprocess.run([sys.executable, "train.py", "--backend", backend, "--arch", "lenet5",
                           "--epochs", "1", "--image-size", "32", "--batch-size", "32",
                           "--run-dir", str(run_dir)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((run_dir / "config.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert config["arch"] == "lenet5" and config["input_shape"] == [32, 32, 3]
    assert config["recipe"]["optimizer"] == "sgd" and config["recipe"]["momentum"] == 0.9
    assert metrics["val_images"] == 100 and 0.0 <= metrics["val_top1"] <= 1.0
    import keras
    model = keras.models.load_model(run_dir / "model.keras")  # trained on another backend
    # LeNet-5's 61,706 (anchors-zoo.md: 1 channel, 10 classes) - 5 * 85 output weights + 300 for
    # C1's two extra input channels (6 * 5 * 5 * 2): the sample's photos are RGB
    assert model.output_shape == (None, 5) and model.count_params() == 61_706 - 425 + 300
