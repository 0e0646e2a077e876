"""Export to TF Serving's layout: SavedModel signatures, ONNX parity, versions, atomicity, predict.
"""

import gzip
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from conftest import ROOT, SHARED_DATA

import kerascnn
from kerascnn import export as E
from kerascnn.cli import UserError
from kerascnn.cli import main as cli_main
from kerascnn.predict import predict
from kerascnn.runs import RunConfig
from kerascnn.sources import versions

CIFAR = SHARED_DATA / "cifar10" / "train"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]
IMAGENETTE = SHARED_DATA / "imagenette" / "train"
pytestmark = pytest.mark.skipif(not CIFAR.is_dir(),
                                reason=f"shared data not found at {SHARED_DATA}")


# --------------------------------------------------------------------------- real images

def cifar_files(per_class=1, classes=("cat", "ship", "frog", "truck", "airplane")):
    return [CIFAR / c / f"{i:04d}.jpg" for c in classes for i in range(per_class)]


def imagenette_files(count):
    folders = sorted(p for p in IMAGENETTE.iterdir() if p.is_dir())
    return [sorted(folder.iterdir())[0] for folder in folders][:count]


def mnist_images(count):
    """The first ``count`` MNIST digits (uint8 [count, 28, 28, 1]) from the IDX file."""
    with gzip.open(SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz") as f:
        magic, n, rows, cols = np.frombuffer(f.read(16), ">u4")
        assert magic == 2051 and (rows, cols) == (28, 28)
        return np.frombuffer(f.read(count * 784), np.uint8).reshape(count, 28, 28, 1)


def jpeg_pixels(files, channels=3):
    return np.stack([tf.io.decode_jpeg(Path(f).read_bytes(), channels=channels).numpy()
                     for f in files])


# --------------------------------------------------------------------------- models and runs

def rgb_model():
    """CIFAR-10 ResNet-20 (He et al. 2015, section 4.2) taking raw uint8 pixels."""
    model = kerascnn.get_model("resnet20", num_classes=10, input_shape=(32, 32, 3),
                               preprocessing="unit")
    return as_if_trained(model)


def as_if_trained(model, seed=0):
    """Non-trivial BN statistics, as after training, so that folding them is really tested."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.1, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
    return model


def top_k(probabilities, names=CIFAR_CLASSES, k=5):
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [(names[i], float(probabilities[i])) for i in order]


def assert_same_top_k(a, b, atol):
    """Two top-k lists of (class, score) agree: the same scores rank by rank, and classes trade
    places only where their scores tie (an untrained network has many near-equal probabilities)."""
    np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=atol)
    sa, sb, floor = dict(a), dict(b), min(s for _, s in a)
    for name in set(sa) | set(sb):
        if name in sa and name in sb:
            assert abs(sa[name] - sb[name]) <= atol, name
        else:  # in one top-k only: it must tie with the last place
            assert abs(sa.get(name, sb.get(name)) - floor) <= atol, name


def write_run(directory: Path, model, class_names, arch, dataset, metrics=None, augment="none"):
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "model.keras")
    config = {"arch": arch, "num_classes": len(class_names), "class_names": class_names,
              "input_shape": list(model.input.shape[1:]), "preprocessing": {"scale": 1 / 255},
              "model_options": {}, "dataset": dataset,
              "recipe": {"optimizer": "sgd", "augment": augment}, "seed": 0,
              "epochs": 1, "batch_size": 8,
              "versions": {"kerascnn": kerascnn.__version__, "tensorflow": tf.__version__,
                           "keras": keras.__version__}}
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "metrics.json").write_text(json.dumps(metrics or {
        "val_top1": 0.913, "val_top5": 0.997, "val_loss": 0.301, "wall_time_s": 12.5}))
    return directory


@pytest.fixture(scope="module")
def rgb_run(tmp_path_factory):
    model = rgb_model()
    run = write_run(tmp_path_factory.mktemp("runs") / "resnet20", model, CIFAR_CLASSES,
                    "resnet20", f"folder:{CIFAR.parent}", augment="pad_crop_flip")
    return run, model


@pytest.fixture(scope="module")
def exported(rgb_run, tmp_path_factory):
    run, model = rgb_run
    export_dir = tmp_path_factory.mktemp("export")
    target = E.export_model(run, "resnet20", export_dir, images=cifar_files())
    return target, model


# --------------------------------------------------------------------------- layout and card

def test_layout_is_tf_serving_version_directory(exported):
    target, _ = exported
    assert target.name == "1" and target.parent.name == "resnet20"
    for rel in ("saved_model.pb", "variables/variables.index", "assets/class_names.txt",
                "assets/model_card.json", "model.onnx"):
        assert (target / rel).is_file(), rel
    assert (target / "assets/class_names.txt").read_text().splitlines() == CIFAR_CLASSES
    assert [p.name for p in target.parent.iterdir()] == ["1"]  # no temporary left beside it


def test_model_card_describes_the_model(exported):
    target, model = exported
    card = json.loads((target / "assets/model_card.json").read_text())
    assert card["architecture"] == "resnet20" and card["name"] == "resnet20"
    assert card["version"] == 1 and card["num_classes"] == 10
    # ResNet-20 for CIFAR-10, option A shortcuts: 0.27M parameters (He et al. 2015, Table 6),
    # exactly 269,722 trainable and 40.6M MACs (anchors-zoo.md).
    assert card["parameters"]["trainable"] == 269_722
    assert round(card["macs"] / 1e6, 1) == 40.6
    assert card["parameters"]["total"] == model.count_params()
    assert card["dataset"] == f"folder:{CIFAR.parent}"
    assert card["input"]["image_pipeline"]["style"] == "photos"
    assert card["input"]["image_pipeline"]["resize"] == 32
    assert card["validation"] == {"val_top1": 0.913, "val_top5": 0.997, "val_loss": 0.301}
    assert card["input"]["shape"] == [None, 32, 32, 3] and card["input"]["dtype"] == "uint8"
    assert set(card["input"]["signatures"]) == {"serving_default", "serving_bytes"}
    assert card["preprocessing"] == {"scale": 1 / 255}
    assert card["versions"]["tensorflow"] == tf.__version__
    assert card["versions"]["keras"] == keras.__version__
    assert card["versions"]["onnx_opset"] == 17
    assert card["checks"]["onnx_max_abs_diff"] <= 1e-4
    assert card["checks"]["savedmodel_max_abs_diff"] <= 1e-5
    assert card["checks"]["images"] == 5 and card["checks"]["image_source"] == "5 files"


# --------------------------------------------------------------------------- SavedModel signatures

def test_every_signature_gives_the_keras_predictions_on_real_images(exported):
    target, model = exported
    files = cifar_files(per_class=2)
    pixels = jpeg_pixels(files)
    expected = model.predict(pixels, verbose=0)
    loaded = tf.saved_model.load(str(target))
    assert {"serving_default", "serving_bytes"} <= set(loaded.signatures)

    raw = loaded.signatures["serving_default"](image=tf.constant(pixels))
    # The same 32x32 JPEG bytes, decoded in the graph: the same pixels, hence the same outputs.
    encoded = loaded.signatures["serving_bytes"](
        image_bytes=tf.constant([f.read_bytes() for f in files]))
    for out in (raw, encoded):
        assert set(out) == {"probabilities", "top_k_indices", "top_k_scores", "top_k_classes"}
        assert out["probabilities"].shape == (10, 10)
        np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
        assert out["top_k_indices"].dtype == tf.int32 and out["top_k_classes"].dtype == tf.string
        for indices, scores, classes, probabilities in zip(
                out["top_k_indices"].numpy(), out["top_k_scores"].numpy(),
                out["top_k_classes"].numpy(), expected):
            assert [c.decode() for c in classes] == [CIFAR_CLASSES[i] for i in indices]
            assert_same_top_k(list(zip([c.decode() for c in classes], scores)),
                              top_k(probabilities), atol=1e-5)


def test_bytes_signature_resizes_and_accepts_png(exported):
    target, model = exported
    fn = tf.saved_model.load(str(target)).signatures["serving_bytes"]
    big = imagenette_files(2)  # 224x224 JPEGs, resized to 32x32 in the graph
    png = tf.io.encode_png(jpeg_pixels(cifar_files()[:1])[0]).numpy()
    out = fn(image_bytes=tf.constant([f.read_bytes() for f in big] + [png]))
    expected = model.predict(np.concatenate([E.load_images(big, E.EvalTransform.default((32, 32, 3))),
                                             jpeg_pixels(cifar_files()[:1])]), verbose=0)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)


def test_tf_serving_session_path_runs_the_signatures(exported):
    """TF Serving loads a TF1 session and feeds the signature tensors by name."""
    target, model = exported
    files = cifar_files()
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(target))
        sig = meta.signature_def["serving_bytes"]
        assert sig.method_name == "tensorflow/serving/predict"
        probs, classes = sess.run(
            [sig.outputs["probabilities"].name, sig.outputs["top_k_classes"].name],
            {sig.inputs["image_bytes"].name: [f.read_bytes() for f in files]})
    expected = model.predict(jpeg_pixels(files), verbose=0)
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert [c.decode() for c in classes[:, 0]] == [CIFAR_CLASSES[i] for i in expected.argmax(1)]


def test_saved_model_cli_lists_signatures_with_dtypes_and_shapes(exported):
    target, _ = exported
    out = subprocess.run([sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show",
                          "--dir", str(target), "--all"], capture_output=True, text=True,
                         check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
    blocks = {b.split("']")[0]: b for b in out.split("signature_def['")[1:]}
    assert set(blocks) == {"__saved_model_init_op", "serving_default", "serving_bytes"}
    default, encoded = blocks["serving_default"], blocks["serving_bytes"]
    assert "inputs['image'] tensor_info:\n        dtype: DT_UINT8\n        shape: (-1, 32, 32, 3)" \
        in default
    assert "inputs['image_bytes'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" \
        in encoded
    for block in (default, encoded):
        for name, dtype, shape in (("probabilities", "DT_FLOAT", "(-1, 10)"),
                                   ("top_k_indices", "DT_INT32", "(-1, 5)"),
                                   ("top_k_scores", "DT_FLOAT", "(-1, 5)"),
                                   ("top_k_classes", "DT_STRING", "(-1, 5)")):
            assert f"outputs['{name}'] tensor_info:\n        dtype: {dtype}\n        shape: " \
                   f"{shape}" in block
        assert "Method name is: tensorflow/serving/predict" in block


# --------------------------------------------------------------------------- ONNX

def test_onnx_file_is_opset17_uint8_dynamic_batch_and_matches_keras(exported):
    import onnx
    import onnxruntime as ort

    target, model = exported
    proto = onnx.load(str(target / "model.onnx"))
    assert {o.domain: o.version for o in proto.opset_import}[""] == 17
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["N", 32, 32, 3]
    assert out.name == "probabilities"
    # The kernels are initializers, already in ONNX's OIHW layout: the one Transpose left is the
    # image's NHWC -> NCHW.
    assert [n.op_type for n in proto.graph.node].count("Transpose") == 1
    assert {i.name for i in proto.graph.initializer} >= {"conv1_conv/kernel", "fc/kernel"}
    session = ort.InferenceSession(str(target / "model.onnx"), providers=["CPUExecutionProvider"])
    for files in (cifar_files()[:1], cifar_files(per_class=3)):  # batch 1 and 15
        pixels = jpeg_pixels(files)
        (got,) = session.run(None, {"image": pixels})
        assert np.abs(got - model.predict(pixels, verbose=0)).max() <= 1e-4


def test_onnx_parity_failure_reports_the_measured_difference(rgb_run, tmp_path, monkeypatch):
    run, _ = rgb_run
    from kerascnn.export import savedmodel
    keras_probabilities = savedmodel.keras_probabilities
    monkeypatch.setattr(savedmodel, "keras_probabilities",
                        lambda m, x: keras_probabilities(m, x) + 0.003)
    with pytest.raises(E.ExportError, match=r"ONNX parity failed.* differ by up to 0\.003"):
        E.export_model(run, "resnet20", tmp_path / "export", formats="onnx",
                       images=cifar_files())
    assert not (tmp_path / "export").exists()


# --------------------------------------------------------------------------- versions, atomicity

@pytest.fixture()
def small_run(tmp_path):
    """A small real network (LeNet-5 on MNIST-sized digits) for the file-handling tests."""
    model = as_if_trained(kerascnn.get_model("lenet5", num_classes=10, preprocessing="unit"))
    return write_run(tmp_path / "lenet5", model, [str(d) for d in range(10)], "lenet5",
                     f"idx:{SHARED_DATA / 'mnist'}")


def test_two_exports_of_one_name_get_two_versions(small_run, tmp_path):
    export_dir = tmp_path / "export"
    first = E.export_model(small_run, "digits", export_dir, formats="savedmodel")
    second = E.export_model(small_run, "digits", export_dir, formats="savedmodel")
    assert (first.name, second.name) == ("1", "2")
    assert json.loads((second / "assets/model_card.json").read_text())["version"] == 2
    seventh = E.export_model(small_run / "model.keras", "digits", export_dir, version=7,
                             formats="savedmodel")
    assert seventh.name == "7" and E.next_version(export_dir, "digits") == 8
    with pytest.raises(E.ExportError, match=r"already exists and is never overwritten.*\(8\)"):
        E.export_model(small_run, "digits", export_dir, version=2, formats="savedmodel")
    assert sorted(p.name for p in (export_dir / "digits").iterdir()) == ["1", "2", "7"]


@pytest.mark.parametrize("failure", [RuntimeError("tf2onnx exploded"), KeyboardInterrupt()])
def test_interrupted_export_leaves_no_version_directory(small_run, tmp_path, monkeypatch, failure):
    export_dir = tmp_path / "export"
    E.export_model(small_run, "digits", export_dir, formats="savedmodel")
    written = []

    def fail_midway(model, *args, **kwargs):  # the SavedModel is already in the temporary dir
        written.extend(p.name for p in (export_dir / "digits").iterdir())
        raise failure

    monkeypatch.setattr(E, "convert_to_onnx", fail_midway)
    with pytest.raises(type(failure)):
        E.export_model(small_run, "digits", export_dir)
    assert any(name.startswith(".tmp-2-") for name in written)
    assert [p.name for p in (export_dir / "digits").iterdir()] == ["1"]
    with pytest.raises(type(failure)):
        E.export_model(small_run, "fresh", export_dir)
    assert not (export_dir / "fresh").exists()


def test_killed_export_leaves_no_version_and_its_temporary_is_swept(small_run, tmp_path):
    """SIGKILL in the middle of an export: no version appears; the next export sweeps the debris."""
    export_dir = tmp_path / "export"
    base = export_dir / "digits"
    code = ("import sys, time; sys.path.insert(0, sys.argv[3]); from kerascnn import export as E\n"
            "def stall(*a, **k):\n    time.sleep(600)\n"
            "E.convert_to_onnx = stall\nE.export_model(sys.argv[1], 'digits', sys.argv[2])\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(small_run), str(export_dir),
                             str(ROOT)], env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        deadline = time.monotonic() + 120
        while not (base.is_dir() and any((p / "saved_model.pb").exists() for p in base.iterdir())):
            assert proc.poll() is None and time.monotonic() < deadline, "export did not start"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (debris,) = base.iterdir()
    assert debris.name.startswith(".tmp-1-") and not versions(base)
    assert E.export_model(small_run, "digits", export_dir, formats="savedmodel").name == "1"
    assert [p.name for p in base.iterdir()] == ["1"]


def test_missing_or_corrupt_input_gives_a_clear_error_and_writes_nothing(small_run, tmp_path):
    export_dir = tmp_path / "export"
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.keras").write_bytes((small_run / "model.keras").read_bytes()[:5000])
    bad_config = tmp_path / "bad_config"
    bad_config.mkdir()
    (bad_config / "model.keras").write_bytes((small_run / "model.keras").read_bytes())
    (bad_config / "config.json").write_text("{not json")
    cases = [
        (tmp_path / "nope", {}, "does not exist"),
        (tmp_path, {}, "is not a run directory: it has no model.keras"),
        (small_run / "config.json", {}, "is not a .keras file"),
        (corrupt, {}, "cannot load .*model.keras"),
        (bad_config, {}, "cannot read .*config.json"),
        (small_run, {"class_names": ["a", "b"]}, "10 outputs but 2 class names"),
        (small_run, {"name": "../escape"}, "invalid model name"),
        (small_run, {"version": 0}, "positive integer"),
        (small_run, {"formats": "savedmodel,tflite"}, "unknown export format tflite"),
        (small_run, {"tolerance": 0}, "tolerance must be"),
    ]
    for source, kwargs, message in cases:
        kwargs = {"name": "digits", **kwargs}
        with pytest.raises(E.ExportError, match=message):
            E.export_model(source, export_dir=export_dir, **kwargs)
        assert not export_dir.exists(), message


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert cli_main(["export", str(tmp_path / "nope"), "--name", "x",
                     "--export-dir", str(tmp_path / "export")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "does not exist" in err and "\n" not in err
    assert cli_main(["predict", str(tmp_path), str(tmp_path / "a.jpg")]) == 2
    assert "image not found" in capsys.readouterr().err


# --------------------------------------------------------------------------- inference graph

def test_auxiliary_heads_are_not_exported():
    shape = (79, 79, 3)  # the smallest input the auxiliary classifiers take
    with_aux = kerascnn.get_model("googlenet", num_classes=3, input_shape=shape,
                                  preprocessing="unit", aux_logits=True)
    plain = kerascnn.get_model("googlenet", num_classes=3, input_shape=shape,
                               preprocessing="unit", aux_logits=False)
    served = E.servable_model(with_aux)
    assert len(with_aux.outputs) == 3 and len(served.outputs) == 1
    assert served.output.name == with_aux.get_layer("predictions").output.name
    # Without its two auxiliary classifiers GoogLeNet has exactly the plain network's parameters.
    assert count_trainable(served) == count_trainable(plain) < count_trainable(with_aux)


def count_trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_augmentation_layers_become_identity_and_convert_to_onnx():
    from keras import layers

    inputs = keras.Input((32, 32, 3), dtype="uint8", name="image")
    x = layers.Rescaling(1 / 255, name="preprocess_rescale")(inputs)
    x = layers.RandomFlip(name="flip")(x)
    x = layers.RandomRotation(0.1, name="rotate")(x)
    x = layers.Conv2D(8, 3, name="conv1")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    x = layers.Dense(3, name="fc")(x)
    model = keras.Model(inputs, layers.Activation("softmax", dtype="float32",
                                                  name="predictions")(x))
    served = E.servable_model(model)
    kinds = {layer.name: type(layer).__name__ for layer in served.layers}
    assert kinds["flip"] == kinds["rotate"] == "Identity" and kinds["conv1"] == "Conv2D"
    assert served.get_layer("conv1") is model.get_layer("conv1")  # the trained weights, shared
    pixels = jpeg_pixels(cifar_files())
    assert E.onnx_parity(E.convert_to_onnx(served), model, pixels) <= 1e-4


def test_float_input_model_is_refused_with_the_fix():
    model = kerascnn.get_model("lenet5", num_classes=10)
    with pytest.raises(E.ExportError, match="raw uint8 pixels.*preprocessing="):
        E.servable_model(model)


# --------------------------------------------------------------------------- grayscale

def test_grayscale_lenet_accepts_png_gif_and_colour_jpeg(small_run, tmp_path):
    target = E.export_model(small_run, "digits", tmp_path / "export", formats="savedmodel")
    card = json.loads((target / "assets/model_card.json").read_text())
    assert card["checks"]["images"] == 8  # the first digits of the run's own dataset
    assert card["checks"]["image_source"] == f"dataset idx:{SHARED_DATA / 'mnist'}"
    assert card["input"]["image_pipeline"]["style"] == "glyphs"
    model = keras.models.load_model(small_run / "model.keras")
    digits = mnist_images(3)  # 28x28 digits, centred in LeNet's 32x32 field as in training
    pngs = [tf.io.encode_png(d).numpy() for d in digits[:2]]
    gif = io.BytesIO()
    Image.fromarray(digits[2, ..., 0]).save(gif, format="GIF")  # GIF decodes to RGB only
    colour = cifar_files()[:2]
    fn = tf.saved_model.load(str(target)).signatures["serving_bytes"]
    out = fn(image_bytes=tf.constant(pngs + [gif.getvalue()] + [f.read_bytes() for f in colour]))
    assert out["probabilities"].shape == (5, 10)
    padded = np.pad(digits, ((0, 0), (2, 2), (2, 2), (0, 0)))
    expected = model.predict(np.concatenate([padded, jpeg_pixels(colour, channels=1)]), verbose=0)
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)


def test_serving_fits_images_exactly_as_training_validates():
    """One home for preprocessing: the bytes path gives the pixels kerascnn.data trains on."""
    from kerascnn import data

    cases = [  # (files or arrays, input size, channels, style, augmentation)
        (imagenette_files(3), 64, 3, "photos", "crop_flip"),     # 224 -> 73, centre 64
        (cifar_files()[:3], 32, 3, "photos", "pad_crop_flip"),   # native size: unchanged
        (cifar_files()[:3], 48, 3, "photos", "pad_crop_flip"),   # upsampled CIFAR
        (mnist_images(3), 32, 1, "glyphs", "none"),              # 28 -> padded 32
    ]
    for items, size, channels, style, augment in cases:
        if isinstance(items, np.ndarray):
            raw = [tf.constant(image) for image in items]
        else:
            raw = [tf.io.decode_image(f.read_bytes(), channels=channels) for f in items]
        split = data.Split(tf.data.Dataset.from_generator(
            lambda raw=raw: ((image, 0) for image in raw),
            output_signature=(tf.TensorSpec([None, None, channels], tf.uint8),
                              tf.TensorSpec([], tf.int32))), len(raw), "test")
        (trained, _), = data.pipeline(split, image_size=size, channels=channels, style=style,
                                      training=False, augment=augment, batch_size=8)
        config = {"dataset": "idx:mnist" if style == "glyphs" else "folder:photos",
                  "recipe": {"augment": augment}}
        # a config.json of before the transform was recorded: derived as training computed it
        transform = RunConfig.from_dict({"arch": "x", "num_classes": 2,
                                         "input_shape": [size, size, channels], **config}
                                        ).eval_transform
        served = np.stack([transform.apply(image).numpy() for image in raw])
        np.testing.assert_array_equal(served, trained.numpy(), err_msg=f"{style} {size} {augment}")


# --------------------------------------------------------------------------- predict

def test_predict_prints_top5_for_savedmodel_and_onnx(exported, capsys):
    target, model = exported
    files = cifar_files()
    expected = model.predict(jpeg_pixels(files), verbose=0)
    from_savedmodel = predict(target.parent, files)  # export/NAME: its newest version
    from_onnx = predict(target / "model.onnx", files)
    for result, onnx_result, probabilities, path in zip(from_savedmodel, from_onnx, expected,
                                                         files):
        assert result.path == onnx_result.path == str(path) and len(result) == 5
        assert_same_top_k(result, top_k(probabilities), atol=1e-5)
        assert_same_top_k(onnx_result, top_k(probabilities), atol=1e-4)

    assert cli_main(["predict", str(target / "model.onnx"), *map(str, files[:2])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(files[0]) and len(lines) == 12
    first = from_onnx[0][0]
    rank, name, score = lines[1].split()
    assert (rank, name) == ("1.", first[0]) and abs(float(score) - first[1]) < 1e-4
    assert cli_main(["predict", str(target), str(files[0]), "--top", "2", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert [c["class"] for c in entry["top_k"]] == [c for c, _ in from_savedmodel[0][:2]]


def test_predict_names_the_image_that_does_not_decode(exported, tmp_path):
    """Issue 12.8: one unreadable file is reported and skipped; the batch goes on."""
    target, _ = exported
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    for path in (target, target / "model.onnx"):
        results = predict(path, [cifar_files()[0], text])
        assert [r.path for r in results] == [str(cifar_files()[0])]
        ((skipped, reason),) = results.skipped
        assert skipped == str(text) and re.search(r"cannot decode .*notes\.jpg", reason)
        with pytest.raises(UserError, match=r"no image could be read.*cannot decode .*notes"):
            predict(path, [text])


def test_predict_takes_a_folder_and_names_a_truncated_jpeg(exported, tmp_path, capsys):
    target, _ = exported
    folder = tmp_path / "photos"
    folder.mkdir()
    good = cifar_files()[:2]
    for i, f in enumerate(good):
        (folder / f"{i}-{f.name}").write_bytes(f.read_bytes())
    (folder / "cut.jpg").write_bytes(good[0].read_bytes()[:300])  # a truncated JPEG
    results = predict(target, [folder])
    assert sorted(Path(r.path).name for r in results) == [f"{i}-{f.name}"
                                                          for i, f in enumerate(good)]
    ((path, reason),) = results.skipped
    assert path.endswith("cut.jpg") and "truncated JPEG" in reason and "not a JPEG" not in reason
    assert cli_main(["predict", str(target), str(folder)]) == 0
    assert "skipped" in capsys.readouterr().err


# --------------------------------------------------------------------------- the zoo in ONNX

#: The deepest networks (5-15 s each to convert) run with -m slow; the others take 1-3 s.
SLOW_ZOO = {"resnet101", "resnet110", "resnet152"}
#: Known failures, strict: the test fails once they are fixed, so this list shrinks.
KNOWN: dict[str, str] = {}  # name -> why its export is expected to fail


def zoo_params():
    for name in kerascnn.list_models():
        marks = [pytest.mark.slow] if name in SLOW_ZOO else []
        if name in KNOWN:
            marks.append(pytest.mark.xfail(raises=E.ExportError, strict=True, reason=KNOWN[name]))
        yield pytest.param(name, marks=marks)


@pytest.mark.parametrize("name", zoo_params())
def test_onnx_parity_for_every_architecture(name):
    """onnxruntime agrees with Keras within 1e-4 on real images, at the minimum size, 3 classes."""
    info = kerascnn.model_info(name)
    size, channels = info.min_size, info.input_shape[2]
    model = kerascnn.get_model(name, num_classes=3, input_shape=(size, size, channels),
                               preprocessing="imagenet" if channels == 3 else "unit")
    model = E.servable_model(as_if_trained(model))
    if channels == 1:
        images = tf.cast(tf.round(tf.image.resize(mnist_images(4), (size, size))), tf.uint8).numpy()
    else:
        images = E.load_images(imagenette_files(4), E.EvalTransform.default((size, size, channels)))
    try:
        assert E.onnx_parity(E.convert_to_onnx(model), model, images) <= 1e-4
    finally:
        keras.backend.clear_session(free_memory=True)  # 27 networks in one process
