"""keras.applications' ImageNet weights in our networks, offline: keras.applications models with
random weights (batch norm statistics and conv biases perturbed, so every fold is exercised) are
written in the published legacy HDF5 layout, converted, and give keras.applications' logits on real
images (their ``preprocess_input`` on their side, raw uint8 on ours). The download path runs
against a ``file://`` mirror and a loopback HTTP server: a first call downloads, checks the hash,
converts and caches; a second call loads the cache; a wrong hash or an unreachable server is a
clear error that keeps nothing. ``include_top=False`` / ``pooling`` give keras.applications'
shapes."""

import contextlib
import dataclasses
import functools
import hashlib
import http.server
import json
import os
import shutil
import threading

import numpy as np
import pytest

from conftest import ROOT

keras = pytest.importorskip("keras")
h5py = pytest.importorskip("h5py")
import kerascnn  # noqa: E402
from kerascnn.errors import WeightsError  # noqa: E402
from kerascnn.transforms import EvalTransform, image_files, load_images  # noqa: E402
from kerascnn.weights import keras_h5, published  # noqa: E402

IMAGES = ROOT / "kerascnn" / "samples" / "imagenette5" / "val"
RTOL = 1e-4  # of the logits' scale


def _images(size: int, count: int = 4) -> np.ndarray:
    files = image_files([IMAGES])[::25][:count]  # a spread of the five classes
    return load_images(files, EvalTransform("photos", round(size / 0.875), (size, size), 3))


def _perturb(model, seed: int = 0) -> None:
    """Non-trivial batch norm statistics and biases, so that folding them is really checked."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = (np.asarray(w) for w in layer.get_weights())
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape),
                               rng.normal(0, 0.2, mean.shape), rng.uniform(0.5, 2.0, var.shape)])
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)) and layer.use_bias:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape)])


def save_published_layout(model, path) -> str:
    """``model``'s weights as keras.applications publishes them (Keras 2's legacy HDF5: root
    ``layer_names``, per-layer ``weight_names``, datasets ``conv1_conv/kernel:0``); its md5."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        for layer in model.layers:
            group = f.create_group(layer.name)
            names = [f"{w.path}:0" for w in layer.weights]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for name, w in zip(names, layer.weights):
                group.create_dataset(name, data=np.asarray(w))
    return hashlib.md5(path.read_bytes()).hexdigest()


def _reference(builder, size, tmp_path_factory, name):
    source = builder(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    _perturb(source)
    path = tmp_path_factory.mktemp(name) / "published.h5"
    md5 = save_published_layout(source, path)
    pixels = _images(size)
    preprocess = keras.applications.imagenet_utils.preprocess_input
    logits = np.asarray(source(preprocess(pixels.astype("float32"), mode="caffe")))
    return {"model": source, "path": path, "md5": md5, "pixels": pixels, "logits": logits}


@pytest.fixture(scope="module")
def resnet50_source(tmp_path_factory):
    return _reference(keras.applications.ResNet50, 224, tmp_path_factory, "resnet50")


@pytest.fixture(scope="module")
def vgg16_source(tmp_path_factory):
    # 64 px: the same layers and flatten order as 224 (fc1 2x2x512 instead of 7x7x512), 9x faster
    return _reference(keras.applications.VGG16, 64, tmp_path_factory, "vgg16")


def _close(ours, theirs):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape
    scale = float(np.abs(theirs).max())
    assert scale > 0.1 and float(np.std(theirs)) > 0.01  # real logits, not a constant
    assert float(np.abs(ours - theirs).max()) <= RTOL * scale
    assert (ours.argmax(-1) == theirs.argmax(-1)).all()


def _converted(network, source, size):
    entry = published.entry(network, "imagenet:keras")
    model = kerascnn.get_model(network, input_shape=(size, size, 3),
                               preprocessing=entry.preprocessing, classifier_activation="linear",
                               **entry.options)
    keras_h5.convert(model, keras_h5.read(source["path"]), entry)
    return model


def test_keras_resnet50_converts_exactly_biases_and_epsilon_folded(resnet50_source):
    source = resnet50_source
    assert np.abs(source["model"].get_layer("conv2_block1_1_conv").bias.numpy()).max() > 0.1
    model = _converted("resnet50", source, 224)
    assert model.count_params() == 25_557_032 + 53_120  # ours (no conv biases) = torchvision's
    assert model.get_layer("conv1_bn").epsilon == 1e-5
    _close(model(source["pixels"]), source["logits"])


def test_keras_vgg16_converts_exactly(vgg16_source):
    model = _converted("vgg16", vgg16_source, 64)
    _close(model(vgg16_source["pixels"]), vgg16_source["logits"])


def test_read_keeps_layer_order_and_old_style_weight_names(tmp_path):
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:  # VGG16's 2016 file: weight names without the layer scope
        f.attrs["layer_names"] = [b"block1_conv1", b"flatten"]
        group = f.create_group("block1_conv1")
        group.attrs["weight_names"] = [b"block1_conv1_W_1:0", b"block1_conv1_b_1:0"]
        group.create_dataset("block1_conv1_W_1:0", data=np.ones((3, 3, 3, 2)))
        group.create_dataset("block1_conv1_b_1:0", data=np.zeros(2))
        f.create_group("flatten").attrs["weight_names"] = []
    tensors = keras_h5.read(path)
    assert list(tensors) == ["block1_conv1/block1_conv1_W_1:0", "block1_conv1/block1_conv1_b_1:0"]
    with pytest.raises(WeightsError, match="not an HDF5 file"):
        (tmp_path / "bad.h5").write_bytes(b"nope")
        keras_h5.read(tmp_path / "bad.h5")


# ------------------------------------------------------------------------------ download path
@pytest.fixture
def mirror(resnet50_source, tmp_path, monkeypatch):
    """A folder holding the random ResNet-50 under keras.applications' file name, an entry whose
    published hash is that file's, and an empty $KERAS_HOME."""
    entry = published.entry("resnet50", "imagenet:keras")
    folder = tmp_path / "mirror"
    folder.mkdir()
    os.link(resnet50_source["path"], folder / entry.file_name) if hasattr(os, "link") else \
        shutil.copy(resnet50_source["path"], folder / entry.file_name)
    patched = [dataclasses.replace(e, file_hash=resnet50_source["md5"]) if e == entry else e
               for e in keras_h5.SOURCES]
    monkeypatch.setattr(keras_h5, "SOURCES", patched)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv(published.URL_ENV, folder.as_uri())
    return {"folder": folder, "entry": published.entry("resnet50", "imagenet:keras")}


def test_first_use_downloads_checks_converts_caches_and_later_calls_load_the_cache(
        mirror, resnet50_source, tmp_path, capsys):
    model = kerascnn.get_model("resnet50", weights="imagenet:keras",
                               classifier_activation="linear")
    assert "downloading" in capsys.readouterr().err
    _close(model(resnet50_source["pixels"]), resnet50_source["logits"])
    cache = published.converted_path(mirror["entry"])
    assert cache.is_file() and cache.name.endswith(".weights.h5")
    assert cache.parent.parent == tmp_path / "keras_home" / "kerascnn"
    assert not [p for p in cache.parent.iterdir() if p.name.startswith(".")]  # no temporary left

    # a damaged cache is converted again from the verified download, with no new download; a
    # headless model takes the same weights: keras.applications' include_top=False features
    shutil.rmtree(mirror["folder"])
    cache.write_bytes(cache.read_bytes()[:1000])
    features = kerascnn.get_model("resnet50", weights="imagenet", include_top=False)
    assert "downloading" not in capsys.readouterr().err
    assert cache.stat().st_size > 90_000_000
    theirs = keras.Model(resnet50_source["model"].input,
                         resnet50_source["model"].get_layer("conv5_block3_out").output)
    preprocess = keras.applications.imagenet_utils.preprocess_input
    _close(features(resnet50_source["pixels"]),
           theirs(preprocess(resnet50_source["pixels"].astype("float32"), mode="caffe")))

    # the 1000 class names and the publisher's evaluation transform come with the weights
    from kerascnn import weights
    record = weights.run_record("resnet50", "imagenet:keras")
    assert record.class_names[:2] == ["tench", "goldfish"] and len(set(record.class_names)) == 1000
    assert (record.eval_transform.resize, record.eval_transform.crop) == (256, (224, 224))
    assert record.model_options == {"stride_on": "1x1"}

    # predict takes MODEL:TAG (`weights save`, which writes a run directory, is a slow test),
    # and reads the cache alone: the downloaded file is not needed any more
    (published.home() / "downloads" / mirror["entry"].file_name).unlink()
    from kerascnn.predict import predict
    top = predict("resnet50:imagenet:keras", image_files([IMAGES])[:1], top_k=3)[0]
    assert len(top) == 3 and all(name in record.class_names for name, _ in top)


@pytest.mark.slow
def test_weights_save_writes_a_run_directory_with_the_imagenet_classes(mirror, tmp_path):
    from kerascnn.weights.packing import save_run_dir
    run = save_run_dir("resnet50", "imagenet:keras", tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert config["class_names"][0] == "tench" and config["eval_transform"]["resize"] == 256
    assert metrics["val_top1"] == pytest.approx(0.749)


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()


@contextlib.contextmanager
def _serve(folder):
    _Handler.requests = []
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_loopback_http_download_once_then_the_verified_copy(mirror, capsys):
    entry = mirror["entry"]
    with _serve(mirror["folder"]) as url:
        path = published.fetch(entry, base_url=url)
        assert _Handler.requests == [f"/{entry.file_name}"]
        assert published.fetch(entry, base_url=url) == path
        assert _Handler.requests == [f"/{entry.file_name}"]  # no second download
    assert hashlib.md5(path.read_bytes()).hexdigest() == entry.file_hash
    # a verified copy in keras.applications' own cache ($KERAS_HOME/models) is taken as it is
    path.unlink()
    theirs = published.home().parent / "models" / entry.file_name
    theirs.parent.mkdir()
    shutil.copy(mirror["folder"] / entry.file_name, theirs)
    with _serve(mirror["folder"]) as url:
        assert published.fetch(entry, base_url=url) == theirs and _Handler.requests == []


def test_a_wrong_hash_is_an_error_that_keeps_nothing(mirror):
    wrong = dataclasses.replace(mirror["entry"], file_hash="0" * 32)
    with _serve(mirror["folder"]) as url:
        with pytest.raises(WeightsError) as caught:
            published.fetch(wrong, base_url=url)
    message = str(caught.value)
    assert wrong.file_name in message and "0" * 32 in message
    assert hashlib.md5((mirror["folder"] / wrong.file_name).read_bytes()).hexdigest() in message
    assert "not kept" in message
    downloads = published.home() / "downloads"
    assert not downloads.exists() or not list(downloads.iterdir())
    # through get_model: nothing converted or cached either
    patched = [dataclasses.replace(e, file_hash="0" * 32) if e == mirror["entry"] else e
               for e in keras_h5.SOURCES]
    keras_h5.SOURCES[:] = patched
    with pytest.raises(WeightsError, match="not kept"):  # get_model's path, before any build
        published.load(None, "resnet50", "imagenet:keras", build=None)
    assert not (published.home() / "imagenet").exists()
    assert not downloads.exists() or not list(downloads.iterdir())


def test_unreachable_is_a_clear_error_naming_the_url_and_where_to_put_the_file(mirror):
    with _serve(mirror["folder"]) as url:
        pass  # the port is closed again
    with pytest.raises(WeightsError) as caught:
        published.fetch(mirror["entry"], base_url=url)
    message = str(caught.value)
    assert f"{url}/{mirror['entry'].file_name}" in message
    assert str(published.home() / "downloads" / mirror["entry"].file_name) in message
    assert mirror["entry"].url in message and "\n" not in message


# ------------------------------------------------------------------------------ feature extraction
def test_include_top_false_and_pooling_give_keras_applications_shapes():
    theirs = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg",
                                         input_shape=(224, 224, 3))
    ours = kerascnn.get_model("resnet50", include_top=False)
    assert ours.output.shape[1:] == theirs.get_layer("conv5_block3_out").output.shape[1:] \
        == (7, 7, 2048)
    assert ours.count_params() == 23_587_712 - 26_560  # keras' stem minus its conv biases
    assert kerascnn.get_model("resnet50", include_top=False, pooling="avg").output.shape[1:] \
        == theirs.output.shape[1:] == (2048,)
    vgg = keras.applications.VGG16(weights=None, include_top=False, pooling="max",
                                   input_shape=(224, 224, 3))
    ours = kerascnn.get_model("vgg16", include_top=False, pooling="max")
    assert ours.output.shape[1:] == vgg.output.shape[1:] == (512,)
    assert ours.count_params() == vgg.count_params() == 14_714_688
    assert kerascnn.get_model("googlenet", include_top=False, aux_logits=True
                              ).output.shape[1:] == (7, 7, 1024)
    # at their smallest inputs (the cut is the same at any size): 67 -> 1x1, 95 -> 2x2 before
    # AlexNet-OWT's adaptive 6x6 pool, which belongs to the head
    assert kerascnn.get_model("alexnet", include_top=False, input_shape=(67, 67, 3)
                              ).output.shape[1:] == (1, 1, 256)
    owt = kerascnn.get_model("alexnet_owt", include_top=False, input_shape=(95, 95, 3))
    assert owt.output.shape[1:] == (2, 2, 256) and owt.layers[-1].name == "pool5"
    with pytest.raises(ValueError, match="include_top=False"):
        kerascnn.get_model("resnet18", pooling="avg")
    with pytest.raises(ValueError, match="pooling must be"):
        kerascnn.get_model("resnet18", include_top=False, pooling="mean")


def test_headless_vgg_at_another_size_takes_the_converted_weights(vgg16_source, tmp_path,
                                                                  monkeypatch):
    entry = published.entry("vgg16", "imagenet:keras")
    small = dataclasses.replace(entry, file_hash=vgg16_source["md5"], input_size=64)
    monkeypatch.setattr(keras_h5, "SOURCES", [small if e == entry else e
                                              for e in keras_h5.SOURCES])
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    # a local file of the publisher's layout: converted at the publisher's size (64 here) ...
    features = kerascnn.get_model("vgg16", weights=vgg16_source["path"], include_top=False,
                                  input_shape=(96, 96, 3))
    theirs = keras.applications.VGG16(weights=None, include_top=False, input_shape=(96, 96, 3))
    theirs.set_weights(vgg16_source["model"].get_weights()[:len(theirs.weights)])
    pixels = _images(96)
    preprocess = keras.applications.imagenet_utils.preprocess_input
    _close(features(pixels), theirs(preprocess(pixels.astype("float32"), mode="caffe")))
    # ... and cached, since its hash is the published one
    assert published.converted_path(small).is_file()
    with pytest.raises(WeightsError, match="do not fit"):  # a Flatten-fed top at another size
        kerascnn.get_model("vgg16", weights="imagenet:keras", input_shape=(96, 96, 3))


def test_choices_and_conflicts_are_named():
    assert published.entry("resnet50", "imagenet").publisher == "keras.applications"
    with pytest.raises(WeightsError, match="stride_on='1x1'"):
        kerascnn.get_model("resnet50", weights="imagenet:keras", stride_on="3x3")
    with pytest.raises(WeightsError, match="unknown publisher 'caffe'"):
        published.entry("resnet50", "imagenet:caffe")
    with pytest.raises(WeightsError, match="no ImageNet weights from keras.applications for "
                                           "alexnet"):
        published.entry("alexnet", "imagenet:keras")
    with pytest.raises(WeightsError, match="1000 classes, not 10"):
        kerascnn.get_model("resnet50", 10, weights="imagenet:keras")
    with pytest.raises(WeightsError, match="does not exist"):
        published.entry("resnet50", "missing/resnet50.h5")


def test_list_shows_the_imagenet_weights(capsys):
    from kerascnn.weights.__main__ import main
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("resnet50 ") and "keras" in l)
    assert "keras.applications.ResNet50" in line and "74.9%" in line and "default" in line
    assert "cached" in line


# ------------------------------------------------------------------------------ the big ones
@pytest.mark.slow
@pytest.mark.parametrize("network,builder", [("resnet101", "ResNet101"),
                                             ("resnet152", "ResNet152"), ("vgg19", "VGG19")])
def test_keras_big_networks_convert_exactly(network, builder, tmp_path_factory):
    source = _reference(getattr(keras.applications, builder), 224, tmp_path_factory, network)
    model = _converted(network, source, 224)
    _close(model(source["pixels"]), source["logits"])
