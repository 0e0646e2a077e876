"""Shipped pretrained weights: LeNet-5 (MNIST) and ResNet-20 (CIFAR-10) load through get_model and
classify real held-out images (the validation split their manifests name, never trained on) far
above chance; manifests carry provenance; unknown tags name the shipped ones; the data packer for
GPU machines round-trips a real subset."""

import hashlib
import importlib.util
import json
import shutil

import numpy as np
import pytest

from conftest import ROOT, SHARED_DATA

keras = pytest.importorskip("keras")
import kerascnn  # noqa: E402
from kerascnn import data, weights  # noqa: E402
from kerascnn.weights import packing  # noqa: E402
from kerascnn.cli import UserError  # noqa: E402

MNIST = SHARED_DATA / "mnist"
CIFAR = SHARED_DATA / "cifar10" / "train"
REQUIRED = ("model", "tag", "file", "sha256", "num_classes", "input_shape", "preprocessing",
            "class_names", "val_top1", "val_top5", "epochs", "wall_time_s", "machine", "dataset",
            "split", "command", "date", "versions", "data_licence", "reference")


def test_the_issue_weights_are_shipped_with_complete_manifests():
    shipped = weights.available()
    assert {"lenet5:mnist", "resnet20:cifar10"} <= set(shipped)
    for key, meta in shipped.items():
        missing = [f for f in REQUIRED if meta.get(f) in (None, "", [], {})]
        assert not missing, f"{key} manifest lacks {missing}"
        path = weights.HERE / meta["file"]
        assert path.stat().st_size < 2_000_000  # "each well under 2 MB" (issue 8)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == meta["sha256"]
        assert len(meta["class_names"]) == meta["num_classes"]
        assert meta["split"]["val_images"] > 0 and "held-out" in meta["split"]["val_source"]
    assert shipped["lenet5:mnist"]["val_top1"] >= 0.99  # 99.20% (BENCHMARKS.md)
    assert "CC BY-SA 3.0" in shipped["lenet5:mnist"]["data_licence"]
    cifar = shipped["resnet20:cifar10"]
    assert cifar["class_names"][:3] == ["airplane", "automobile", "bird"]
    assert cifar["split"]["train_images"] == 45000 and cifar["split"]["val_images"] == 5000
    assert cifar["val_top1"] >= 0.84  # 84.18% after 12 CPU epochs of --recipe budget
    assert cifar["run"]["eval_transform"] == {"style": "photos", "resize": 32, "crop": [32, 32],
                                              "channels": 3}  # the run's record travels along
    assert "research" in cifar["data_licence"]


def _accuracy(model, images, labels):
    probabilities = model.predict(images, batch_size=100, verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    return float(np.mean(probabilities.argmax(axis=1) == labels))


@pytest.mark.skipif(not MNIST.is_dir(), reason="../shared/data/mnist not present")
def test_lenet5_mnist_reads_raw_held_out_digits():
    model = kerascnn.get_model("lenet5", weights="mnist")  # no num_classes: the manifest's 10
    meta = weights.manifest("lenet5", "mnist")
    assert model.output.shape[-1] == 10 and tuple(model.input.shape[1:]) == (32, 32, 1)
    assert str(model.input.dtype) == "uint8"  # raw pixels: the scaling is inside
    images = data.read_idx(MNIST / "train-images-idx3-ubyte.gz")
    labels = data.read_idx(MNIST / "train-labels-idx1-ubyte.gz").astype(np.int64)
    _, val = data.stratified_split(labels, meta["split"]["val_split"], meta["split"]["seed"])
    assert len(val) == meta["split"]["val_images"]
    pick = val[::12]  # 500 held-out digits of every class
    digits = np.pad(images[pick], ((0, 0), (2, 2), (2, 2)))[..., None]  # 28 -> 32 as trained
    assert _accuracy(model, digits, labels[pick]) >= 0.97  # chance: 10%; the run: 99.2%


def _cifar_held_out(meta, every=10):
    class_dirs = sorted(d for d in CIFAR.iterdir() if d.is_dir())
    assert [d.name for d in class_dirs] == meta["class_names"]
    files, labels = data.list_images(class_dirs, CIFAR)
    _, val = data.stratified_split(labels, meta["split"]["val_split"], meta["split"]["seed"])
    assert len(val) == meta["split"]["val_images"]
    from PIL import Image
    pick = val[::every]
    images = np.stack([np.asarray(Image.open(files[i]).convert("RGB")) for i in pick])
    return images, labels[pick]


@pytest.mark.skipif(not CIFAR.is_dir(), reason="../shared/data/cifar10 not present")
def test_resnet20_cifar10_classifies_held_out_photos():
    model = kerascnn.get_model("resnet20", weights="cifar10")
    meta = weights.manifest("resnet20", "cifar10")
    assert model.output.shape[-1] == 10 and tuple(model.input.shape[1:]) == (32, 32, 3)
    images, labels = _cifar_held_out(meta)  # 500 of the 5,000 held-out images, all classes
    accuracy = _accuracy(model, images, labels)
    assert accuracy >= 0.75  # chance: 10%
    assert abs(accuracy - meta["val_top1"]) < 0.05  # the manifest tells the truth


def test_unknown_weights_name_the_shipped_ones():
    with pytest.raises(ValueError) as info:
        kerascnn.get_model("resnet20", weights="imagenet")
    message = str(info.value)
    assert "'imagenet'" in message and "resnet20 ships 'cifar10'" in message
    assert "get_model('lenet5', weights='mnist')" in message
    assert isinstance(info.value, UserError)  # the CLI prints one line, exit code 2
    with pytest.raises(ValueError, match="vgg16 ships none.*weights='cifar10'"):
        kerascnn.get_model("vgg16", weights="cifar10")


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # the refused 36x36 load
def test_weights_defaults_and_mismatches():
    assert kerascnn.get_model("lenet5").output.shape[-1] == 1000  # no weights: the default
    assert kerascnn.get_model("lenet5", 10, weights="mnist").output.shape[-1] == 10
    with pytest.raises(ValueError, match="have 10 classes, not 1000.*leave num_classes out"):
        kerascnn.get_model("lenet5", 1000, weights="mnist")  # an explicit 1000 is not the default
    with pytest.raises(ValueError, match="1-channel images, not 3"):
        kerascnn.get_model("lenet5", weights="mnist", input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="trained with preprocessing"):
        kerascnn.get_model("lenet5", weights="mnist", preprocessing="unit")
    with pytest.raises(ValueError, match="do not fit this model.*input_shape \\(32, 32, 1\\)"):
        kerascnn.get_model("lenet5", weights="mnist", input_shape=(36, 36, 1))  # Flatten-fed F6


def test_damaged_weights_are_refused(tmp_path, monkeypatch):
    for name in ("lenet5_mnist.json", "lenet5_mnist.weights.h5"):
        shutil.copy(weights.HERE / name, tmp_path / name)
    raw = bytearray((tmp_path / "lenet5_mnist.weights.h5").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "lenet5_mnist.weights.h5").write_bytes(bytes(raw))
    monkeypatch.setattr(weights, "HERE", tmp_path)
    with pytest.raises(ValueError, match="damaged.*reinstall"):
        kerascnn.get_model("lenet5", weights="mnist")


@pytest.mark.skipif(not MNIST.is_dir(), reason="../shared/data/mnist not present")
def test_shipped_model_exports_and_predicts_offline(tmp_path):
    """The documented path to `kerascnn predict` with shipped weights: save_run_dir, export."""
    from PIL import Image

    from kerascnn.export import export_model
    from kerascnn.predict import predict

    run_dir = packing.save_run_dir("lenet5", "mnist", tmp_path / "lenet5-mnist")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["class_names"] == [str(i) for i in range(10)]
    target = export_model(run_dir, "lenet5", tmp_path / "export", formats=("savedmodel",))
    images = data.read_idx(MNIST / "train-images-idx3-ubyte.gz")
    labels = data.read_idx(MNIST / "train-labels-idx1-ubyte.gz")
    _, val = data.stratified_split(labels, 0.1, 0)
    files = []
    for i in val[:6]:
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(images[i]).save(files[-1])  # a 28x28 digit: padded to 32 as in training
    results = predict(target, files, top_k=1)
    assert [r[0][0] for r in results] == [str(labels[i]) for i in val[:6]]


def _pack_module():
    spec = importlib.util.spec_from_file_location("pack_data", ROOT / "bench" / "pack_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not CIFAR.is_dir(), reason="../shared/data/cifar10 not present")
def test_packed_cifar_subset_round_trips_and_keeps_the_split(tmp_path):
    pack_data = _pack_module()
    index = pack_data.pack(CIFAR.parent, tmp_path / "packed" / "cifar10", limit_per_class=30,
                           max_mb=0.05)  # ~1 KB JPEGs: several parts of < 50 KB
    assert index["images"] == 300 and len(index["parts"]) > 1
    assert all(p["bytes"] < 50_000 for p in index["parts"])
    assert pack_data.unpack(tmp_path / "packed" / "cifar10", tmp_path / "out") == 300
    for class_dir in sorted(CIFAR.iterdir())[:2]:
        originals = sorted(class_dir.iterdir())[:30]
        copies = sorted((tmp_path / "out" / "train" / class_dir.name).iterdir())
        assert [p.name for p in copies] == [p.name for p in originals]
        assert copies[7].read_bytes() == originals[7].read_bytes()  # JPEG bytes travel unchanged
    loaded = data.load(f"folder:{tmp_path / 'out' / 'train'}", val_split=0.1, verbose=False)
    assert (loaded.train.count, loaded.val.count) == (270, 30)  # stratified: 3 of each class
    part = tmp_path / "packed" / index["parts"][0]["file"]
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(pack_data.PackError, match="damaged"):
        pack_data.unpack(tmp_path / "packed" / "cifar10", tmp_path / "again")


@pytest.mark.skipif(not CIFAR.is_dir(), reason="../shared/data/cifar10 not present")
def test_predict_takes_shipped_weights_by_name(tmp_path):
    """`python -m kerascnn predict resnet20:cifar10 photo.jpg`: no export needed."""
    from kerascnn.predict import predict

    meta = weights.manifest("resnet20", "cifar10")
    class_dirs = sorted(d for d in CIFAR.iterdir() if d.is_dir())
    files, labels = data.list_images(class_dirs, CIFAR)
    _, val = data.stratified_split(labels, meta["split"]["val_split"], meta["split"]["seed"])
    pick = val[::100]  # 50 held-out JPEGs, every class
    results = predict("resnet20:cifar10", [files[i] for i in pick], top_k=3)
    top1 = [r[0][0] for r in results]
    accuracy = np.mean([t == meta["class_names"][labels[i]] for t, i in zip(top1, pick)])
    assert accuracy >= 0.7  # chance: 10%; the manifest: 82%
    assert all(len(r) == 3 and r[0][1] >= r[1][1] >= r[2][1] for r in results)
