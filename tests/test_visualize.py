"""``python -m kerascnn visualize`` and the run report: every command writes its PNG, of the
expected size and number of panels, not blank; the kernel panels are the primer's convolution of
the image; filters and feature maps are the model's own numbers; the architecture diagram shows
the papers' volumes (GoogLeNet's and ResNet's Table 1); a short training run writes report.html."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATA, mnist_subset

keras = pytest.importorskip("keras")
from kerascnn import cli, data, primer, report, training, visualize  # noqa: E402

SAMPLE_VAL = data.SAMPLE_DIR / "val"
MNIST = SHARED_DATA / "mnist"
#: A PNG whose pixels vary less than this (std of the gray levels) is blank.
BLANK_STD = 12.0


def photo():
    """The first validation photo of the bundled sample (128x128 RGB JPEG)."""
    return sorted((SAMPLE_VAL / "church").iterdir())[0]


def png_of(saved):
    """The written PNG as an array, after checking its size and that it is not blank."""
    assert saved.path.is_file()
    with Image.open(saved.path) as im:
        assert im.format == "PNG"
        assert im.size == saved.size
        pixels = np.asarray(im.convert("L"), dtype=np.float64)
    assert pixels.std() > BLANK_STD, f"{saved.path} looks blank"
    assert not list(saved.path.parent.glob(".*tmp*"))  # nothing half-written left behind
    return pixels


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory):
    """A real MNIST digit, read through kerascnn.data, as a grayscale PNG file."""
    if not MNIST.is_dir():
        pytest.skip("../shared/data/mnist not present")
    digit = data.read_idx(MNIST / "train-images-idx3-ubyte.gz")[0]
    path = tmp_path_factory.mktemp("digit") / "digit.png"
    Image.fromarray(digit, mode="L").save(path)
    return path, digit


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Small zoo models that take uint8 pixels, saved as .keras files (untrained, fixed seed)."""
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("models")
    import kerascnn
    paths = {}
    for name, preprocessing in (("lenet5", "unit"), ("resnet20", "imagenet")):
        model = kerascnn.get_model(name, 10, preprocessing=preprocessing)
        paths[name] = root / f"{name}.keras"
        model.save(paths[name])
    return paths


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One epoch of LeNet-5 on 600 real MNIST digits (10% of each class held out)."""
    root = mnist_subset(tmp_path_factory.mktemp("tiny_mnist"), 600)
    run_dir = tmp_path_factory.mktemp("runs") / "lenet"
    metrics = training.train(training.TrainConfig(arch="lenet5", dataset=f"idx:{root}", epochs=1,
                                                  run_dir=str(run_dir), verbose=0))
    return run_dir, metrics


# ---------------------------------------------------------------------------------------------
# kernels


def test_kernel_panels_are_the_primer_convolution_of_the_image(tmp_path):
    saved = visualize.kernels(photo(), tmp_path / "kernels.png")
    png_of(saved)
    assert saved.size == (1536, 540)  # 4 panels of 3.2 in, 3.2 + 1.3 in high, at 120 dpi
    assert [p.title for p in saved.panels] == ["original", "blur (3×3)", "sharpen (3×3)",
                                               "edge (3×3)"]
    image = np.asarray(Image.open(photo()).convert("RGB"))
    np.testing.assert_array_equal(saved.panels[0].array, image)
    for panel, kernel in zip(saved.panels[1:], (primer.BLUR, primer.SHARPEN, primer.EDGE)):
        expected = np.stack([primer.conv2d(image[..., c].astype(float), kernel, padding="same")
                             for c in range(3)], axis=-1)
        np.testing.assert_array_equal(panel.array, np.clip(np.rint(expected), 0, 255))
    # by hand: the box blur of pixel (40, 50) is the mean of its 3x3 neighbourhood
    blur = saved.details["results"]["blur"][1]
    assert blur[40, 50, 0] == pytest.approx(image[39:42, 49:52, 0].astype(float).mean())
    # the kernels are written under their panels as the lecture does
    assert "1/9 ×\n[1 1 1]\n[1 1 1]\n[1 1 1]" in saved.texts
    assert "[-1 -1 -1]\n[-1  8 -1]\n[-1 -1 -1]" in saved.texts


def test_kernels_on_a_grayscale_mnist_digit(digit_png, tmp_path):
    path, digit = digit_png
    saved = visualize.kernels(path, tmp_path / "digit-kernels.png")
    png_of(saved)
    assert saved.size == (1536, 540)
    assert len(saved.panels) == 4 and all(p.array.shape == (28, 28) for p in saved.panels)
    edge = primer.conv2d(digit.astype(float), primer.EDGE, padding="same")
    np.testing.assert_array_equal(saved.panels[3].array, np.clip(np.rint(edge), 0, 255))
    assert edge[0, 0] == 0  # the digit's border is black: no edge there


# ---------------------------------------------------------------------------------------------
# filters


def test_filters_of_the_first_conv_layer_as_rgb_panels(models, tmp_path):
    source = visualize.load_model_source(models["resnet20"])
    saved = visualize.filters(source, out=tmp_path / "filters.png")
    png_of(saved)
    assert saved.details["layer"] == "conv1_conv"
    assert saved.size == (840, 552)  # 16 panels: 3 rows of 6 one-inch panels
    assert len(saved.panels) == 16  # ResNet-20's 3x3x3 stem has 16 filters (He et al. 4.2)
    kernel = np.asarray(source.model.get_layer("conv1_conv").kernel)
    for i, panel in enumerate(saved.panels):
        k = kernel[..., i]
        assert panel.array.shape == (3, 3, 3)  # RGB
        np.testing.assert_allclose(panel.array, (k - k.min()) / (k.max() - k.min()), atol=1e-6)


def test_filters_grayscale_and_per_input_channel(models, tmp_path):
    source = visualize.load_model_source(models["lenet5"])
    saved = visualize.filters(source, out=tmp_path / "c1.png")
    png_of(saved)
    assert saved.size == (840, 264)  # one row of 6 panels, 7 in wide at least
    assert len(saved.panels) == 6 and saved.panels[0].array.shape == (5, 5)  # C1: 6 maps, 5x5
    saved = visualize.filters(source, "c3", out=tmp_path / "c3.png")
    png_of(saved)
    assert len(saved.panels) == 16 * 6  # C3: 16 filters x 6 input maps
    kernel = np.asarray(source.model.get_layer("c3").kernel)
    np.testing.assert_array_equal(saved.panels[6 * 2 + 4].array, kernel[:, :, 4, 2])


def test_unknown_layer_lists_the_convolution_layers(models, capsys):
    rc = cli.main(["visualize", "filters", str(models["lenet5"]), "--layer", "c7"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no convolution layer named 'c7'" in err and "c1, c3, c5" in err
    assert len(err.strip().splitlines()) == 1
    rc = cli.main(["visualize", "filters", str(models["lenet5"]), "--layer", "f6"])
    err = capsys.readouterr().err
    assert rc == 2 and "'f6' of lenet5 is a Dense, not a convolution" in err and "c1, c3, c5" in err


def test_filters_from_an_exported_savedmodel(models, tmp_path):
    from kerascnn import export

    model = keras.models.load_model(models["lenet5"])
    names = tmp_path / "names.txt"
    names.write_text("\n".join(str(i) for i in range(10)) + "\n")
    version = tmp_path / "export" / "lenet" / "3"
    version.parent.mkdir(parents=True)
    export.write_savedmodel(model, version, names)
    saved = visualize.filters(tmp_path / "export" / "lenet", out=tmp_path / "sm.png")  # newest
    png_of(saved)
    assert saved.details["layer"] == "c1" and len(saved.panels) == 6
    np.testing.assert_array_equal(saved.details["kernel"], np.asarray(model.get_layer("c1").kernel))
    with pytest.raises(cli.UserError, match="convolution layers are: c1, c3, c5"):
        visualize.filters(version, "nope")
    with pytest.raises(cli.UserError, match="pass the run directory or its model.keras"):
        visualize.feature_maps_png(version, photo())


# ---------------------------------------------------------------------------------------------
# feature maps


def test_feature_maps_one_layer_per_stage(models, tmp_path):
    saved = visualize.feature_maps_png(models["resnet20"], photo(), out=tmp_path / "maps.png")
    png_of(saved)
    # ResNet-20's three stages end at 32x32x16, 16x16x32, 8x8x64 (He et al. 2015, section 4.2)
    assert saved.details["layers"] == ["conv2_block3_out", "conv3_block3_out", "conv4_block3_out"]
    assert [m.shape for _, m in saved.details["maps"]] == [(32, 32, 16), (16, 16, 32), (8, 8, 64)]
    assert len(saved.panels) == 1 + 3 * 8  # the input, then the 8 most active maps per stage
    assert saved.panels[0].array.shape == (32, 32, 3)
    # the maps drawn are the model's activations for the image it was shown
    model = keras.models.load_model(models["resnet20"])
    probe = keras.Model(model.input, model.get_layer("conv3_block3_out").output)
    act = np.asarray(probe(saved.details["image"][None]))[0]
    top = np.argsort(-act.mean(axis=(0, 1)), kind="stable")[0]
    np.testing.assert_allclose(saved.panels[1 + 8].array, act[..., top], rtol=1e-4, atol=1e-5)


def test_feature_maps_of_a_trained_lenet_on_a_digit(tiny_run, digit_png, tmp_path, capsys):
    run_dir, _ = tiny_run
    path, digit = digit_png
    saved = visualize.feature_maps_png(run_dir, path, out=tmp_path / "lenet.png")
    png_of(saved)
    assert saved.details["layers"] == ["c1_tanh", "s2", "c3_tanh", "s4"]  # 28, 14, 10, 5 pixels
    assert len(saved.panels) == 1 + 6 + 6 + 8 + 8
    # the run was trained on MNIST, so the digit is padded 28 -> 32 as in training (LeNet-5 II-B)
    np.testing.assert_array_equal(saved.panels[0].array, np.pad(digit, 2))
    rc = cli.main(["visualize", "feature-maps", str(run_dir), str(path), "--layers", "c1", "f6",
                   "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert rc == 2 and "'f6' outputs (84,), not maps" in err and "c1_tanh" in err


# ---------------------------------------------------------------------------------------------
# architecture


def volumes_by_label(saved):
    return {v.label: (v.width, v.height, v.depth) for v in saved.details["volumes"]}


def test_architecture_googlenet_is_table_1(tmp_path):
    saved = visualize.architecture("googlenet", tmp_path / "googlenet.png")
    png_of(saved)
    assert saved.size == (1317, 744)  # 0.42 in per box + 3 in, 6.2 in high, at 120 dpi
    volumes = volumes_by_label(saved)
    # Szegedy et al. 2014, Table 1: output size after each inception module
    table1 = {"3a": (28, 256), "3b": (28, 480), "4a": (14, 512), "4b": (14, 512), "4c": (14, 512),
              "4d": (14, 528), "4e": (14, 832), "5a": (7, 832), "5b": (7, 1024)}
    for module, (size, depth) in table1.items():
        assert volumes[f"inception {module}"] == (size, size, depth), module
    assert volumes["input"] == (224, 224, 3) and volumes["conv1_7x7_s2"] == (112, 112, 64)
    assert volumes["loss3_classifier"] == (1, 1, 1000)
    assert len(saved.details["volumes"]) == 19  # 9 modules + 9 other layers + input
    for label in ("inception (3)\n×2", "inception (4)\n×5", "inception (5)\n×2", "224×224×3",
                  "7×7×1024", "inception 4e"):
        assert label in saved.texts, label


def test_architecture_resnet_stages(models, tmp_path, capsys):
    rc = cli.main(["visualize", "architecture", "resnet20", "--out", str(tmp_path / "r20.png")])
    assert rc == 0 and "r20.png (1080x744 pixels)" in capsys.readouterr().out
    saved = visualize.architecture("resnet50", tmp_path / "r50.png")
    png_of(saved)
    # ResNet-50, Table 1: 3, 4, 6, 3 bottleneck blocks ending in 56x56x256 ... 7x7x2048
    blocks = [v for v in saved.details["volumes"] if v.kind == "residual"]
    assert [(v.stage, v.width, v.depth) for v in blocks] == (
        [("conv2_x", 56, 256)] * 3 + [("conv3_x", 28, 512)] * 4 + [("conv4_x", 14, 1024)] * 6
        + [("conv5_x", 7, 2048)] * 3)
    assert {"conv2_x\n×3", "conv3_x\n×4", "conv4_x\n×6", "conv5_x\n×3"} <= set(saved.texts)
    # ResNet-20 (section 4.2): three stages of 3 blocks at 32x32x16, 16x16x32, 8x8x64
    r20 = visualize.architecture_volumes(keras.models.load_model(models["resnet20"]))
    assert [(v.stage, v.width, v.depth) for v in r20 if v.kind == "residual"] == (
        [("conv2_x", 32, 16)] * 3 + [("conv3_x", 16, 32)] * 3 + [("conv4_x", 8, 64)] * 3)


# ---------------------------------------------------------------------------------------------
# the run report


def test_mistakes_first():
    labels = np.array([0, 1, 1, 0, 2])
    probs = np.array([[0.9, 0.1, 0.0],    # right, 0.9
                      [0.6, 0.4, 0.0],    # wrong, 0.6
                      [0.2, 0.5, 0.3],    # right, 0.5
                      [0.1, 0.0, 0.9],    # wrong, 0.9
                      [0.3, 0.3, 0.4]])   # right, 0.4
    assert report.mistakes_first(labels, probs).tolist() == [3, 1, 4, 2, 0]


def test_training_writes_the_report(tiny_run):
    run_dir, metrics = tiny_run
    page = (run_dir / report.REPORT_FILE).read_text(encoding="utf-8")
    assert metrics["val_top1"] < 1  # one epoch on 540 digits: mistakes for Grad-CAM to show
    for png in ("training_curves.png", "confusion_matrix.png", report.PREDICTIONS_FILE,
                report.ARCHITECTURE_FILE, report.GRADCAM_FILE):
        assert f'src="{png}"' in page and (run_dir / png).is_file(), png
    assert "not available" not in page and "not readable" not in page
    assert "Grad-CAM at layer c3_tanh" in page and "could not be drawn" not in page
    # the model table from inspect: LeNet-5's 61,706 parameters, C3's 5*5*6*16 = 2,400 weights
    assert "61,706 trainable parameters" in page
    assert '<td>c3</td><td>conv</td><td class="num">5</td>' in page and ">2,400<" in page
    assert f"{metrics['val_top1']:.2%}" in page
    assert "weight_decay_mode" in page and "l2_loss_on_kernels" in page  # the recipe
    assert not list(run_dir.glob(".*tmp*"))


def test_report_validation_grid(tiny_run):
    run_dir, metrics = tiny_run
    with Image.open(run_dir / report.PREDICTIONS_FILE) as im:
        pixels = np.asarray(im.convert("L"), dtype=np.float64)
        size = im.size
    assert size == (1680, 1104)  # 8 x 4 images of 1.75 x 2.15 in, + 0.6 in of title
    assert pixels.std() > BLANK_STD
    # the page counts the mistakes among the validation digits, as metrics.json does
    n = metrics["val_images"]
    wrong = round((1 - metrics["val_top1"]) * n)
    page = (run_dir / report.REPORT_FILE).read_text(encoding="utf-8")
    assert f"{wrong} of those {n} are misclassified" in page


def test_report_command_rewrites_it_and_says_when_data_is_missing(tiny_run, tmp_path, capsys):
    run_dir, _ = tiny_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    for name in (report.REPORT_FILE, report.PREDICTIONS_FILE, "training_curves.png"):
        (copy / name).unlink()
    config = json.loads((copy / "config.json").read_text())
    config["dataset"] = f"idx:{tmp_path / 'gone'}"
    (copy / "config.json").write_text(json.dumps(config))
    assert cli.main(["visualize", "report", str(copy)]) == 0
    assert "report.html" in capsys.readouterr().out
    page = (copy / report.REPORT_FILE).read_text(encoding="utf-8")
    assert "are not readable here" in page
    assert (copy / "training_curves.png").is_file()  # drawn again from history.csv
    assert cli.main(["visualize", "report", str(tmp_path)]) == 2  # not a run directory
    assert "no config.json" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# the command line


def test_cli_writes_and_reports_where(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["visualize", "kernels", str(photo())]) == 0
    out = capsys.readouterr().out
    expected = tmp_path / "visualizations" / f"{photo().stem}-kernels.png"
    assert expected.is_file() and f"{expected.relative_to(tmp_path)}" in out
    assert cli.main(["visualize", "kernels", str(photo()), "--out", "x.jpg"]) == 2
    assert "--out must name a .png file" in capsys.readouterr().err
    assert cli.main(["visualize", "kernels", str(tmp_path / "none.jpg")]) == 2
    assert "no such image file" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not an image")
    assert cli.main(["visualize", "kernels", str(tmp_path / "notes.txt")]) == 2
    assert "cannot read" in capsys.readouterr().err
