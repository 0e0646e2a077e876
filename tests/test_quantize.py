"""``export --quantize int8``: model.int8.onnx calibrated on the run's training images and gated on
its validation top-1 (issue 16), on the shipped LeNet-5 and the real MNIST training set."""

import json

import numpy as np
import onnx
import pytest
from conftest import ROOT, SHARED_DATA
from onnx import numpy_helper
from PIL import Image

from kerascnn import export as E
from kerascnn.cli import main as cli_main
from kerascnn.errors import ExportError
from kerascnn.export import quantize as Q
from kerascnn.predict import predict
from kerascnn.runs import RunDir
from kerascnn.weights.packing import save_run_dir

pytestmark = pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(),
                                reason="needs ../shared/data/mnist (the run's dataset)")


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    """The shipped lenet5:mnist as a run directory (its dataset, idx:../shared/data/mnist, is
    relative to the checkout)."""
    return save_run_dir("lenet5", "mnist", tmp_path_factory.mktemp("runs") / "lenet5-mnist")


@pytest.fixture(scope="module")
def exported(lenet_run, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        target = E.export_model(lenet_run, "lenet5", tmp_path_factory.mktemp("export"),
                                formats="onnx", quantize="int8", calibration_images=64)
    return target


def test_int8_file_has_the_float_exports_inputs_and_outputs(exported):
    float_model = onnx.load(str(exported / E.ONNX_FILE))
    int8_model = onnx.load(str(exported / E.INT8_FILE))
    onnx.checker.check_model(int8_model)

    def signature(model):
        return [(v.name, v.type.tensor_type.elem_type,
                 [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
                for v in (*model.graph.input, *model.graph.output)]

    assert signature(int8_model) == signature(float_model) == [
        ("image", onnx.TensorProto.UINT8, ["N", 32, 32, 1]),
        ("probabilities", onnx.TensorProto.FLOAT, ["N", 10])]
    assert (exported / E.INT8_FILE).stat().st_size < 0.5 * (exported / E.ONNX_FILE).stat().st_size


def test_weights_are_int8_per_output_channel_and_the_ends_stay_float(exported):
    model = onnx.load(str(exported / E.INT8_FILE))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = list(model.graph.node)
    # LeNet-5: c1 (6 filters), c3 (16), then f5/f6/output dense layers (120, 84, 10)
    weight_scales = []
    for node in nodes:
        if node.op_type == "DequantizeLinear" and inits.get(node.input[0]) is not None \
                and inits[node.input[0]].dtype == np.int8 and inits[node.input[0]].ndim >= 2:
            weight_scales.append(inits[node.input[1]].shape)
    assert sorted(s[0] for s in weight_scales) == [6, 10, 16, 84, 120]
    assert nodes[0].op_type != "QuantizeLinear"       # the uint8 input is not re-quantized
    softmax = [n for n in nodes if n.op_type == "Softmax"]
    assert len(softmax) == 1 and softmax[0].output[0] == "probabilities"


def test_card_records_calibration_and_both_accuracies_within_the_gate(exported):
    card = json.loads((exported / "assets" / E.MODEL_CARD_FILE).read_text())
    q = card["quantization"]
    assert q["file"] == "model.int8.onnx"
    assert q["calibration"] == {"images": 64, "split": "training", "seed": 0,
                                "source": "idx:../shared/data/mnist",
                                "transform": "the run's evaluation transform (no augmentation)"}
    assert q["validation_images"] == 5999           # the held-out 10% of MNIST's training set
    assert q["validation_top1_float"] == pytest.approx(0.992, abs=0.0005)   # the manifest's 99.20%
    assert abs(q["top1_change_points"]) <= Q.INT8_TOLERANCE_POINTS
    assert q["top1_change_points"] == pytest.approx(
        100 * (q["validation_top1_int8"] - q["validation_top1_float"]), abs=1e-3)


@pytest.fixture(scope="module")
def digits(lenet_run):
    """24 real MNIST digits as the model takes them (a calibration sample with another seed)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        return RunDir(lenet_run).calibration_images(24, seed=1)


def test_predict_runs_the_int8_model_and_agrees_with_float(exported, digits, tmp_path):
    files = []
    for i, digit in enumerate(digits):
        files.append(tmp_path / f"digit{i}.png")
        Image.fromarray(digit[..., 0]).save(files[-1])
    from_int8 = predict(exported / E.INT8_FILE, files)
    from_float = predict(exported / E.ONNX_FILE, files)
    agree = [a[0][0] == b[0][0] for a, b in zip(from_int8, from_float)]
    assert len(agree) == 24 and sum(agree) >= 23
    assert max(abs(a[0][1] - b[0][1]) for a, b in zip(from_int8, from_float)) < 0.1


def test_calibration_sample_is_seeded_training_images(lenet_run, digits, monkeypatch):
    monkeypatch.chdir(ROOT)
    run = RunDir(lenet_run)
    a = run.calibration_images(24, seed=0)
    b = run.calibration_images(24, seed=0)
    assert a.dtype == np.uint8 and a.shape == (24, 32, 32, 1)
    assert np.array_equal(a, b) and not np.array_equal(a, digits)
    # MNIST's 28x28 digits are padded to 32x32 (the paper's input): a 2-pixel zero border
    assert a[:, :2].max() == 0 and a[:, 2:30, 2:30].max() == 255


def test_bad_calibration_fails_the_gate_and_writes_nothing(lenet_run, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    # black images calibrate every activation range to a point: the int8 model is useless
    monkeypatch.setattr(RunDir, "calibration_images",
                        lambda self, count, **_: np.zeros((count, 32, 32, 1), np.uint8))
    with pytest.raises(ExportError, match=r"int8 accuracy gate failed: top-1 .* points lower "
                                          r"\(allowed 0.5\); nothing was exported"):
        E.export_model(lenet_run, "lenet5", tmp_path / "export", formats="onnx",
                       quantize="int8", calibration_images=8)
    assert not (tmp_path / "export" / "lenet5").exists()


@pytest.mark.parametrize("arguments, message", [
    (["--quantize", "int8", "--formats", "savedmodel"], "include onnx in --formats"),
    (["--quantize", "int8", "--calibration-images", "0"], "--calibration-images must be a "
                                                         "positive number"),
    (["--quantize", "int8", "--int8-tolerance", "-1"], "--int8-tolerance is in top-1 percentage"),
])
def test_bad_quantize_arguments_are_one_line_errors(lenet_run, tmp_path, capsys, arguments,
                                                    message):
    code = cli_main(["export", str(lenet_run), "--name", "x", "--export-dir", str(tmp_path),
                     *arguments])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_bare_keras_file_cannot_be_quantized(lenet_run, tmp_path):
    bare = tmp_path / "lenet.keras"
    bare.write_bytes((lenet_run / "model.keras").read_bytes())
    with pytest.raises(ExportError, match="needs a run directory"):
        E.export_model(bare, "lenet5", tmp_path / "export", formats="onnx", quantize="int8")
    assert not (tmp_path / "export" / "lenet5").exists()
