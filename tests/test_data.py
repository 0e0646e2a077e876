"""Datasets into tf.data: the three spec forms on small real samples, the bundled sample, errors."""

import shutil
import warnings

import numpy as np
import pytest

from conftest import SHARED_DATA

tf = pytest.importorskip("tensorflow")
from kerascnn import data  # noqa: E402

MNIST = SHARED_DATA / "mnist"
CIFAR = SHARED_DATA / "cifar10" / "train"
needs_mnist = pytest.mark.skipif(not MNIST.is_dir(), reason="../shared/data/mnist not present")
needs_cifar = pytest.mark.skipif(not CIFAR.is_dir(), reason="../shared/data/cifar10 not present")


def first(ds):
    return next(iter(ds))


# ---------------------------------------------------------------------------------------------
# specs


@pytest.mark.parametrize("spec", ["mnist", "tfds:", "hdf5:/x", "folder", "s3://bucket"])
def test_unknown_spec_names_the_forms(spec):
    with pytest.raises(data.DataError, match="tfds:NAME.*folder:PATH.*idx:PATH"):
        data.parse_spec(spec)


def test_spec_forms():
    assert data.parse_spec(None) == ("sample", "")
    assert data.parse_spec("tfds:imagenette/160px-v2") == ("tfds", "imagenette/160px-v2")
    assert data.parse_spec("folder:/a:b") == ("folder", "/a:b")


# ---------------------------------------------------------------------------------------------
# idx: MNIST's own format


@needs_mnist
def test_mnist_idx_is_read_exactly():
    images = data.read_idx(MNIST / "train-images-idx3-ubyte.gz")
    labels = data.read_idx(MNIST / "train-labels-idx1-ubyte.gz")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60000,)
    # LeCun's training set starts 5, 0, 4, 1, 9 and holds 5,923 zeros and 6,742 ones.
    assert labels[:5].tolist() == [5, 0, 4, 1, 9]
    assert np.bincount(labels)[:2].tolist() == [5923, 6742]


@needs_mnist
def test_mnist_split_is_stratified_and_padded_to_lenet_input():
    ds = data.load(f"idx:{MNIST}", val_split=0.1, seed=0)
    assert ds.name == "mnist" and ds.style == "glyphs" and ds.channels == 1
    assert ds.class_names == [str(i) for i in range(10)] and ds.native_size == (28, 28)
    assert ds.train.count + ds.val.count == 60000
    # round(10%) of each class (5,923 zeros -> 592, ..., 6,265 sevens -> 626, half to even)
    assert ds.val.count == 5999
    val_labels = np.concatenate([y.numpy() for _, y in ds.val.dataset.batch(8192)])
    counts = np.bincount(val_labels, minlength=10)
    assert counts.tolist() == [592, 674, 596, 613, 584, 542, 592, 626, 585, 595]
    assert data.augmentation_for(ds, 32) == "none"
    pipe = data.pipeline(ds.val, image_size=32, channels=1, style=ds.style, training=False,
                         batch_size=16)
    x, y = first(pipe)
    assert x.shape == (16, 32, 32, 1) and x.dtype == tf.uint8 and y.dtype == tf.int32
    raw, _ = first(ds.val.dataset.batch(16))
    # LeNet-5 (section III-A): the 28x28 digit centred in a 32x32 field, 2 pixels of background.
    np.testing.assert_array_equal(x.numpy()[:, 2:30, 2:30], raw.numpy())
    assert not x.numpy()[:, :2].any() and not x.numpy()[:, :, 30:].any()


def test_idx_roundtrip_and_t10k_validation(tmp_path):
    rng = np.random.RandomState(0)
    images = rng.randint(0, 256, (30, 28, 28)).astype(np.uint8)
    labels = np.arange(30) % 3
    data.write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    data.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    data.write_idx(tmp_path / "t10k-images-idx3-ubyte", images[:6])
    data.write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:6])
    np.testing.assert_array_equal(data.read_idx(tmp_path / "train-images-idx3-ubyte.gz"), images)
    ds = data.load(f"idx:{tmp_path}")
    assert (ds.train.count, ds.val.count) == (30, 6) and ds.val.source.startswith("t10k")
    assert ds.class_names == ["0", "1", "2"]


def test_idx_errors_name_the_file(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load(f"idx:{tmp_path / 'nope'}")
    with pytest.raises(data.DataError, match="lacks train-images-idx3-ubyte"):
        data.load(f"idx:{tmp_path}")
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(data.DataError, match="not an IDX file"):
        data.read_idx(tmp_path / "train-images-idx3-ubyte")
    data.write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8))
    raw = (tmp_path / "train-images-idx3-ubyte").read_bytes()
    (tmp_path / "train-images-idx3-ubyte").write_bytes(raw[:-100])
    with pytest.raises(data.DataError, match="truncated"):
        data.read_idx(tmp_path / "train-images-idx3-ubyte")
    data.write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((4, 28, 28), np.uint8))
    data.write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(data.DataError, match="4 images but .* 5 labels"):
        data.load(f"idx:{tmp_path}")


# ---------------------------------------------------------------------------------------------
# folder: and the bundled sample


def test_bundled_sample_is_small_real_and_split():
    files = [f for f in data.SAMPLE_DIR.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 10 * 2**20
    assert (data.SAMPLE_DIR / "README.md").read_text().count("Licence") == 1
    ds = data.load("sample")
    assert ds.class_names == ["church", "garbage_truck", "golf_ball", "parachute", "tench"]
    assert (ds.train.count, ds.val.count) == (500, 100) and ds.val.source == "val/"
    assert ds.native_size == (128, 128) and ds.channels == 3 and ds.style == "photos"
    assert data.preprocessing_for(ds.name, 3)["mean"] == [0.485, 0.456, 0.406]
    assert data.augmentation_for(ds, 96) == "crop_flip"
    train = data.pipeline(ds.train, image_size=96, channels=3, style=ds.style, training=True,
                          augment="crop_flip", batch_size=8, native_size=ds.native_size)
    x, y = first(train)
    assert x.shape == (8, 96, 96, 3) and x.dtype == tf.uint8
    val = data.pipeline(ds.val, image_size=96, channels=3, style=ds.style, training=False,
                        augment="crop_flip", batch_size=100, native_size=ds.native_size)
    a, ya = first(val)
    b, yb = first(val)  # validation is deterministic: the centre crop, same order
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert np.bincount(ya.numpy()).tolist() == [20] * 5


def _cifar_folder(root, classes=("cat", "dog", "ship"), per_class=20):
    for c in classes:
        (root / c).mkdir(parents=True)
        for f in sorted((CIFAR / c).iterdir())[:per_class]:
            shutil.copy(f, root / c / f.name)
    return root


@needs_cifar
def test_folder_split_is_seeded_and_stratified_with_cifar_augmentation(tmp_path):
    root = _cifar_folder(tmp_path / "cifar10")
    ds = data.load(f"folder:{root}", val_split=0.1, seed=3)
    assert ds.name == "cifar10" and ds.class_names == ["cat", "dog", "ship"]
    assert (ds.train.count, ds.val.count) == (54, 6) and ds.native_size == (32, 32)
    assert data.preprocessing_for(ds.name, 3)["mean"] == [0.4914, 0.4822, 0.4465]
    # CIFAR at its own size: He et al.'s 4-pixel pad + random 32x32 crop + flip
    assert data.augmentation_for(ds, 32) == "pad_crop_flip"
    assert data.augmentation_for(ds, 64) == "crop_flip"

    def val_labels(d):
        return sorted(np.concatenate([y.numpy() for _, y in d.val.dataset.batch(64)]).tolist())

    assert val_labels(ds) == [0, 0, 1, 1, 2, 2]
    def fingerprints(d):  # which images were held out, independent of their order
        return sorted(int(tf.reduce_sum(tf.cast(x, tf.int64))) for x, _ in d.val.dataset)

    assert fingerprints(ds) == fingerprints(data.load(f"folder:{root}", val_split=0.1, seed=3))
    assert fingerprints(ds) != fingerprints(data.load(f"folder:{root}", val_split=0.1, seed=4))
    pipe = data.pipeline(ds.train, image_size=32, channels=3, style=ds.style, training=True,
                         augment="pad_crop_flip", batch_size=54, native_size=ds.native_size)
    x, _ = first(pipe)
    assert x.shape == (54, 32, 32, 3)


@needs_cifar
def test_unreadable_images_are_skipped_counted_and_named(tmp_path):
    root = _cifar_folder(tmp_path / "pics", classes=("cat", "dog"), per_class=10)
    good = (root / "cat" / sorted(p.name for p in (root / "cat").iterdir())[0]).read_bytes()
    (root / "cat" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "dog" / "notes.jpg").write_text("not an image")
    (root / "dog" / "empty.png").write_bytes(b"")
    with pytest.warns(data.UnreadableImagesWarning, match=r"skipped 3 unreadable .*of 23") as rec:
        ds = data.load(f"folder:{root}", val_split=0.2, seed=0)
    message = str(rec[0].message)
    assert "truncated.jpg" in message and "notes.jpg" in message and "empty.png" in message
    assert len(ds.skipped) == 3 and ds.train.count + ds.val.count == 20
    pipe = data.pipeline(ds.train, image_size=32, channels=3, style=ds.style, training=False,
                         batch_size=64)
    assert sum(len(y) for _, y in pipe) == ds.train.count  # a whole epoch, no crash


def test_folder_errors_say_what_to_fix(tmp_path):
    with pytest.raises(data.DataError, match="does not exist"):
        data.load(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(data.DataError, match="is not a folder"):
        data.load(f"folder:{tmp_path / 'file.txt'}")
    (tmp_path / "flat").mkdir()
    with pytest.raises(data.DataError, match="no class subfolders"):
        data.load(f"folder:{tmp_path / 'flat'}")
    (tmp_path / "flat" / "cat").mkdir()
    (tmp_path / "flat" / "dog").mkdir()
    shutil.copy(next((data.SAMPLE_DIR / "train" / "tench").iterdir()), tmp_path / "flat" / "cat")
    with pytest.raises(data.DataError, match=r"class folder .*dog has no images"):
        data.load(f"folder:{tmp_path / 'flat'}")
    with pytest.raises(data.DataError, match="val-split"):
        data.load("sample", val_split=1.5)


# ---------------------------------------------------------------------------------------------
# tfds:


def test_tfds_through_mock_data(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(data, "_online", lambda timeout=3.0: True)  # mock_data stubs the download
    with tfds.testing.mock_data(num_examples=12):
        ds = data.load("tfds:mnist")
        assert ds.name == "mnist" and ds.style == "glyphs"
        assert ds.class_names == [str(i) for i in range(10)]
        assert ds.channels == 1 and ds.native_size == (28, 28)
        assert (ds.train.count, ds.val.count, ds.val.source) == (12, 12, "test")
        pipe = data.pipeline(ds.train, image_size=32, channels=1, style=ds.style, training=True,
                             batch_size=4)
        x, y = first(pipe)
        assert x.shape == (4, 32, 32, 1) and x.dtype == tf.uint8
        # a 3-channel model can read MNIST: gray -> RGB in the pipeline
        rgb = data.load("tfds:mnist", channels=3)
        x, _ = first(data.pipeline(rgb.val, image_size=32, channels=3, style=rgb.style,
                                   training=False, batch_size=2))
        assert x.shape == (2, 32, 32, 3)


def test_tfds_offline_is_a_clear_error_and_writes_nothing(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(data, "_online", lambda timeout=3.0: False)
    with pytest.raises(data.DataError) as err:
        data.load("tfds:mnist", data_dir=str(tmp_path / "tfds"))
    assert "--data-dir" in str(err.value) and "folder:PATH" in str(err.value)
    assert "no network" in str(err.value)
    assert not (tmp_path / "tfds").exists()


def test_tfds_unknown_name():
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(data.DataError, match="TFDS has no dataset 'no_such_set'"):
        data.load("tfds:no_such_set")


def test_stratified_split_keeps_every_class():
    labels = np.array([0] * 50 + [1] * 7 + [2] * 2 + [3])
    train, val = data.stratified_split(labels, 0.1, seed=0)
    assert np.bincount(labels[val], minlength=4).tolist() == [5, 1, 1, 0]
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(labels)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = data.stratified_split(labels, 0.1, seed=0)[1]
    np.testing.assert_array_equal(val, again)
