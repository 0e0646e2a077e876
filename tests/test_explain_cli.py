"""``python -m kerascnn visualize occlusion|gradcam|top-patches`` and the run report's Grad-CAM.

On the shipped ``lenet5:mnist`` and real MNIST digits (28x28 PNG files, padded to 32 by the
weights' own evaluation transform): each command writes a non-blank PNG of the size its figure
states; the heat map's title names the class and the probability the model gives it (checked
against the model's own prediction of the padded digit); the heat map drawn is the map
:mod:`kerascnn.explain` computes; the top patches drawn are the receptive-field boxes of the
validation images the pipeline yields; the report references its Grad-CAM PNG of the most
confident mistakes, and survives a Grad-CAM that fails.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATA, mnist_subset

keras = pytest.importorskip("keras")
import kerascnn  # noqa: E402
from kerascnn import cli, data, explain, plots, report  # noqa: E402
from kerascnn.explain import pngs  # noqa: E402
from kerascnn.pictures import load_model_source  # noqa: E402

MNIST = SHARED_DATA / "mnist"
pytestmark = pytest.mark.skipif(not MNIST.is_dir(), reason="../shared/data/mnist not present")
#: A PNG whose pixels vary less than this (std of the gray levels) is blank.
BLANK_STD = 12.0


def _read(kind, count):
    return data.read_idx(next(MNIST.glob(f"train-{kind}-idx*-ubyte*")))[:count]


def png_pixels(path, size):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == size
        pixels = np.asarray(im.convert("L"), dtype=np.float64)
    assert pixels.std() > BLANK_STD, f"{path} looks blank"
    return pixels


@pytest.fixture(scope="module")
def lenet():
    return kerascnn.get_model("lenet5", weights="mnist")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The first three training digits (5, 0, 4) as 28x28 PNG files, with their labels and the
    32x32 arrays the model sees (padded by 2, as the weights' glyph transform does)."""
    root = tmp_path_factory.mktemp("digits")
    images, labels = _read("images", 3), _read("labels", 3).astype(int)
    paths = []
    for i, image in enumerate(images):
        paths.append(root / f"digit{i}.png")
        Image.fromarray(image, mode="L").save(paths[-1])
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))[..., None]
    return paths, labels, padded


@pytest.fixture(scope="module")
def source(lenet):
    found = load_model_source("lenet5:mnist")
    found.model = lenet  # the same weights, built once for the module
    return found


def test_shipped_weights_are_a_model_source():
    found = load_model_source("lenet5:mnist")
    assert found.name == "lenet5-mnist" and found.trained
    assert found.class_names == [str(i) for i in range(10)]
    assert found.transform.style == "glyphs" and found.transform.crop == (32, 32)
    assert found.class_name(7) == "7" and found.class_name(12) == "class 12"


def test_gradcam_png_titles_name_the_predicted_class_and_its_probability(source, lenet, digits,
                                                                         tmp_path):
    paths, labels, padded = digits
    saved = pngs.gradcam_png(source, paths[:2], tmp_path / "cam.png")
    assert saved.size == (768, round((2.9 * 2 + 0.7) * plots.DPI))   # 6.4 x (2.9 N + 0.7) in
    png_pixels(saved.path, saved.size)
    probs = explain.predict_proba(lenet, padded[:2])
    assert (saved.details["images"] == padded[:2]).all()        # the glyph transform's padding
    for i in range(2):
        assert probs[i].argmax() == labels[i]
        title = f"predicted {labels[i]}: {probs[i, labels[i]]:.1%}"
        assert saved.details["titles"][i] == title and title in saved.texts
    assert "lenet5-mnist: Grad-CAM (Selvaraju et al. 2017), at layer c3_tanh" in saved.texts
    # the heat map drawn over each digit is explain.grad_cam's map of the predicted class
    maps = explain.grad_cam(lenet, padded[:2])
    assert np.allclose(saved.details["maps"], maps, atol=1e-6)
    drawn = [p.array for p in saved.panels if p.array.shape == (32, 32)
             and p.array.dtype.kind == "f"]
    assert len(drawn) == 2 and all(np.allclose(d, m, atol=1e-6) for d, m in zip(drawn, maps))


def test_occlusion_png_with_a_class_index(source, lenet, digits, tmp_path):
    paths, labels, padded = digits
    saved = pngs.occlusion_png(source, paths[2:3], tmp_path / "occ.png", class_index=9)
    assert saved.size == (768, round((2.9 + 0.7) * plots.DPI))
    png_pixels(saved.path, saved.size)
    p = explain.predict_proba(lenet, padded[2:3])[0]
    assert saved.details["titles"] == [
        f"class 9: {p[9]:.1%} (predicted {labels[2]}: {p[labels[2]]:.1%})"]
    assert (saved.details["patch"], saved.details["stride"]) == (4, 2)  # an eighth of 32
    expected = explain.occlusion(lenet, padded[2:3], 4, 2, class_index=9)
    assert np.allclose(saved.details["maps"], expected, atol=1e-6)
    assert ("lenet5-mnist: occlusion (Zeiler & Fergus 2013), a 4×4 grey square every 2 pixels"
            in saved.texts)


def test_the_commands_write_pngs_and_say_what_is_wrong(digits, tmp_path, capsys, monkeypatch):
    paths, _, _ = digits
    monkeypatch.chdir(tmp_path)
    assert cli.main(["visualize", "occlusion", "lenet5:mnist", str(paths[0]), str(paths[1]),
                     "--patch", "8", "--stride", "4"]) == 0
    out = capsys.readouterr().out
    written = tmp_path / "visualizations" / "lenet5-mnist-occlusion-digit0-and-1-more.png"
    assert f"saved {written.relative_to(tmp_path)} (768x780 pixels)" in out
    png_pixels(written, (768, 780))
    assert cli.main(["visualize", "gradcam", "lenet5:mnist", str(paths[0]), "--layer", "c1",
                     "--out", "c1.png"]) == 0
    png_pixels(tmp_path / "c1.png", (768, 432))
    assert cli.main(["visualize", "gradcam", "lenet5:mnist", str(paths[0]),
                     "--class-index", "10"]) == 2
    assert "--class-index 10 is out of range" in capsys.readouterr().err
    assert cli.main(["visualize", "gradcam", "lenet5:mnist", str(paths[0]), "--layer", "c9"]) == 2
    err = capsys.readouterr().err
    assert "no layer named 'c9'" in err and "c3" in err
    assert cli.main(["visualize", "occlusion", "lenet5:mnist", str(tmp_path / "none.png")]) == 2
    assert "no such image file" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_mnist(tmp_path_factory):
    """200 training digits as IDX files: a 10% validation split of 20 digits."""
    return f"idx:{mnist_subset(tmp_path_factory.mktemp('tiny_mnist'), 200)}"


def test_top_patches_png_draws_the_receptive_field_boxes(source, lenet, tiny_mnist, tmp_path):
    saved = pngs.top_patches_png(source, tiny_mnist, "c3", tmp_path / "top.png", k=3,
                                 channels=4, batch_size=8, verbose=0)
    assert saved.size == (768, round((4 * 1.05 + 1.0) * plots.DPI))  # 6.4 x (1.05 maps + 1) in
    png_pixels(saved.path, saved.size)
    result = saved.details["result"]
    field = result.field
    assert (field.r, field.j, field.start) == (14, 2, (6.5, 6.5))   # C3: 5 + (2-1) + (5-1)*2 + ...
    assert result.images_seen == 20 and list(result.channels) == [0, 1, 2, 3]
    # the validation digits in the pipeline's order, as the command read them
    ds = data.load(tiny_mnist, channels=1, verbose=False)
    batches = data.pipeline(ds.val, image_size=32, channels=1, style=ds.style, training=False,
                            batch_size=8)
    images = np.concatenate([x for x, _ in batches.as_numpy_iterator()])
    assert len(images) == 20
    features = keras.Model(lenet.inputs[0], lenet.get_layer("c3").output)
    acts = np.asarray(features(images))
    drawn = [p.array for p in saved.panels]
    assert len(drawn) == 4 * 3
    for m in range(4):
        for rank in range(3):
            i, (row, col) = result.image_index[m, rank], result.position[m, rank]
            assert acts[i, ..., m].max() == pytest.approx(acts[i, row, col, m])
            top, left, bottom, right = result.box[m, rank]
            assert (top, left, bottom, right) == field.box(row, col) == (
                2 * row, 2 * col, 2 * row + 14, 2 * col + 14)
            crop = images[i, top:bottom, left:right, 0]
            assert (result.patches[m, rank, ..., 0] == crop).all()
            assert (drawn[m * 3 + rank] == crop).all()               # what the PNG shows
    assert any("receptive field 14×14 pixels, jump 2" in t for t in saved.texts)
    assert "map 0\nmax " + f"{result.scores[0, 0]:.3g}" in saved.texts


def test_top_patches_command(tiny_mnist, tmp_path, capsys):
    out = tmp_path / "patches.png"
    assert cli.main(["visualize", "top-patches", "lenet5:mnist", "--dataset", tiny_mnist,
                     "--layer", "s2", "--k", "2", "--channels", "3", "--out", str(out)]) == 0
    assert "(768x498 pixels)" in capsys.readouterr().out
    png_pixels(out, (768, 498))
    assert cli.main(["visualize", "top-patches", "lenet5:mnist", "--dataset", tiny_mnist,
                     "--layer", "f6"]) == 2
    err = capsys.readouterr().err
    assert "layer 'f6' of lenet5 has no feature maps" in err and "c3" in err


# --- the run report --------------------------------------------------------------------------

@pytest.fixture()
def shipped_run(tmp_path):
    from kerascnn.weights.packing import save_run_dir
    return save_run_dir("lenet5", "mnist", tmp_path / "run")


def _validation_with_mistakes():
    """64 digits; the labels of 10 of them changed, so the model is confidently 'wrong' there."""
    images = np.pad(_read("images", 64), ((0, 0), (2, 2), (2, 2)))[..., None]
    labels = _read("labels", 64).astype("int64")
    relabelled = np.arange(3, 64, 6)[:10]
    labels[relabelled] = (labels[relabelled] + 1) % 10
    return images, labels, relabelled


def test_report_shows_gradcam_on_the_most_confident_mistakes(shipped_run, lenet):
    images, labels, relabelled = _validation_with_mistakes()
    page_path = report.write_report(shipped_run, model=lenet, val_data=[(images, labels)])
    page = page_path.read_text(encoding="utf-8")
    png = shipped_run / report.GRADCAM_FILE
    assert f'src="{report.GRADCAM_FILE}"' in page and png.is_file()
    png_pixels(png, (round(2.1 * 4 * plots.DPI), round((2.4 * 2 + 0.6) * plots.DPI)))
    assert "Grad-CAM at layer c3_tanh" in page
    probs = explain.predict_proba(lenet, images)
    wrong = int((probs.argmax(1) != labels).sum())
    assert wrong >= 10 and set(relabelled) <= set(np.flatnonzero(probs.argmax(1) != labels))
    assert f"on the {report.GRADCAM_IMAGES} most confident of the {wrong} mistakes" in page


def test_report_without_mistakes_or_with_a_failing_gradcam(shipped_run, lenet, monkeypatch):
    images = np.pad(_read("images", 16), ((0, 0), (2, 2), (2, 2)))[..., None]
    labels = explain.predict_proba(lenet, images).argmax(1)       # every prediction right
    report.write_report(shipped_run, model=lenet, val_data=[(images, labels)])
    page = (shipped_run / report.REPORT_FILE).read_text(encoding="utf-8")
    assert "None of the first 16 validation images is misclassified" in page
    assert not (shipped_run / report.GRADCAM_FILE).exists() and report.GRADCAM_FILE not in page

    def broken(*args, **kwargs):
        raise RuntimeError("no gradients here")

    monkeypatch.setattr(explain, "grad_cam", broken)
    images, labels, _ = _validation_with_mistakes()
    report.write_report(shipped_run, model=lenet, val_data=[(images, labels)])
    page = (shipped_run / report.REPORT_FILE).read_text(encoding="utf-8")
    assert "Grad-CAM could not be drawn for this model (RuntimeError: no gradients here)" in page
    assert not (shipped_run / report.GRADCAM_FILE).exists()
    assert f'src="{report.PREDICTIONS_FILE}"' in page              # the rest of the report
