"""``inspect``: the lecture's layer table, checked against the papers' numbers (anchors-zoo.md)."""

import csv
import functools
import io
import os
import subprocess
import sys

import pytest

import kerascnn
from kerascnn.arithmetic import SizeError, output_size
from kerascnn.cli import main
from kerascnn.inspect import (COLUMNS, layer_table, resolve_model, table_totals, to_csv,
                              to_markdown, trace_sizes)
from conftest import ROOT


@functools.lru_cache(maxsize=None)
def _table(name, **options):
    model = resolve_model(name, **options)
    rows = layer_table(model)
    return model, rows, table_totals(rows, model)


def table(name, **options):
    """(model, rows, totals) of a registered network, built once per test session; every table
    is first checked for internal consistency."""
    model, rows, totals = _table(name, **options)
    assert_consistent(rows, totals)
    return model, rows, totals


def assert_consistent(rows, totals):
    """The formula reproduces every conv/pool output from the row's own F, S, P and input, and
    the table's weights + biases are exactly Keras' trainable parameters."""
    for row in rows:
        if row.kernel is not None and row.layer_class != "GlobalAveragePooling2D":
            for axis in (0, 1):
                size = output_size(row.input_shape[axis], row.kernel[axis], row.strides[axis],
                                   row.padding[axis], rounding="floor")
                assert size == row.output_shape[axis], row
    assert totals.params == totals.keras_trainable


def by_name(rows):
    return {row.name: row for row in rows}


def wxh(row):
    h, w, d = row.output_shape
    return f"{w}x{h}x{d}"


# --- the papers' tables --------------------------------------------------------------------------

def test_lenet5_table():
    _, rows, totals = table("lenet5")  # the family's default: 10 classes
    weighted = [r for r in rows if r.macs]
    assert [r.name for r in weighted] == ["c1", "c3", "c5", "f6", "output"]
    assert [r.weights for r in weighted[:2]] == [150, 2_400]               # C1, C3 weights
    assert [r.params for r in weighted[2:]] == [48_120, 10_164, 850]       # C5, F6, output
    assert [wxh(r) for r in rows[:5]] == ["28x28x6", "14x14x6", "10x10x16", "5x5x16", "1x1x120"]
    c1 = rows[0]
    assert (c1.f, c1.s, c1.p, c1.k, c1.input_shape) == (5, 1, 0, 6, (32, 32, 1))
    assert totals.params == 61_706


def test_lenet5_1998_counts_custom_layers():
    _, rows, totals = table("lenet5_1998")
    params = {r.name: r.params for r in rows}
    # anchors-zoo.md 1c: C1 156, S2 12, C3 1,516 (connection table), S4 32, C5 48,120, F6 10,164
    assert [params[n] for n in ("c1", "s2", "c3", "s4", "c5", "f6")] == [
        156, 12, 1_516, 32, 48_120, 10_164]
    assert totals.params == 60_000


GOOGLENET_TABLE1 = [  # Table 1: module, output, computed weights (K=1024 col.), MACs in M
    ("3a", "28x28x256", 163_328, 128.0), ("3b", "28x28x480", 388_096, 304.3),
    ("4a", "14x14x512", 375_552, 73.6), ("4b", "14x14x512", 448_512, 87.9),
    ("4c", "14x14x512", 509_440, 99.9), ("4d", "14x14x528", 604_672, 118.5),
    ("4e", "14x14x832", 867_328, 170.0), ("5a", "7x7x832", 1_042_432, 51.1),
    ("5b", "7x7x1024", 1_442_816, 70.7),
]


def test_googlenet_table1():
    _, rows, totals = table("googlenet")
    named = by_name(rows)
    for module, output, weights, macs in GOOGLENET_TABLE1:
        assert wxh(named[f"inception_{module}_output"]) == output
        members = [r for r in rows if r.name.startswith(f"inception_{module}_")]
        assert sum(r.weights for r in members) == weights
        assert round(sum(r.macs for r in members) / 1e6, 1) == macs
    stem = [wxh(named[n]) for n in ("conv1_7x7_s2", "pool1_3x3_s2", "conv2_3x3", "pool2_3x3_s2",
                                    "pool3_3x3_s2", "pool4_3x3_s2")]
    assert stem == ["112x112x64", "56x56x64", "56x56x192", "28x28x192", "14x14x480", "7x7x832"]
    conv1 = named["conv1_7x7_s2"]
    assert (conv1.f, conv1.s, conv1.p, conv1.weights) == (7, 2, 3, 9_408)
    assert round(conv1.macs / 1e6, 1) == 118.0
    assert named["inception_3a_5x5"].f == 5 and named["inception_3a_5x5"].p == 2  # "same" = 2
    assert named["inception_3a_output"].cells()["input WxHxD"] == "28x28x(64+128+32+32)"
    # Caffe's ceil-mode 3x3/2 pool on 112 = pad 0 before, 1 after: (112 - 3 + 1)/2 + 1 = 56
    assert named["pool1_3x3_s2"].padding == ((0, 1), (0, 1))
    assert named["pool1_3x3_s2"].cells()["P"] == "0/1"
    assert totals.params == 6_998_552
    assert round(totals.macs / 1e9, 3) == 1.583


RESNET_V1_GMACS = [("resnet18", 1.814), ("resnet34", 3.664), ("resnet50", 3.858),
                   ("resnet101", 7.570), ("resnet152", 11.282)]


@pytest.mark.parametrize("name, gmacs", RESNET_V1_GMACS)
def test_resnet_v1_macs(name, gmacs):
    _, _, totals = table(name, stride_on="1x1")
    assert totals.macs / 1e9 == pytest.approx(gmacs, rel=0.005)
    assert round(totals.macs / 1e9, 3) == gmacs


def test_resnet50_v15_and_its_padding_rows():
    _, rows, totals = table("resnet50")
    assert round(totals.macs / 1e9, 3) == 4.089
    assert totals.params == 25_557_032
    assert totals.keras_non_trainable == 53_120      # BN moving mean/variance: not in the table
    named = by_name(rows)
    assert "conv1_pad" not in named and "pool1_pad" not in named  # folded into P
    conv1, pool1 = named["conv1_conv"], named["pool1_pool"]
    assert (conv1.f, conv1.s, conv1.p, conv1.input_shape, wxh(conv1)) == (
        7, 2, 3, (224, 224, 3), "112x112x64")
    assert conv1.merged == ("conv1_pad",)
    assert (pool1.f, pool1.s, pool1.p, wxh(pool1)) == (3, 2, 1, "56x56x64")
    bn = named["conv1_bn"]
    assert (bn.type, bn.weights, bn.biases, bn.macs) == ("batch norm", 128, 0, 0)


def test_vgg16():
    _, rows, totals = table("vgg16")
    assert round(totals.macs / 1e9, 3) == 15.470
    assert totals.params == 138_357_544
    assert sum(r.type == "conv" for r in rows) == 13 and sum(r.type == "fc" for r in rows) == 3


def test_alexnet_one_weird_trick():
    _, rows, totals = table("alexnet_owt")
    assert round(totals.macs / 1e9, 3) == 0.714
    assert totals.params == 61_100_840


def test_alexnet_two_gpu_groups():
    _, rows, totals = table("alexnet")
    named = by_name(rows)
    conv1, conv2 = named["conv1"], named["conv2"]
    assert (conv1.input_shape, wxh(conv1), conv1.weights, conv1.biases) == (
        (227, 227, 3), "55x55x96", 34_848, 96)
    assert conv2.type == "conv (2 groups)" and conv2.weights == 5 * 5 * 48 * 256
    assert totals.params == 60_965_224


def test_cifar_resnet20():
    _, rows, totals = table("resnet20")
    assert round(totals.macs / 1e6, 1) == 40.6
    assert totals.params == 269_722
    assert wxh(rows[0]) == "32x32x16"


@pytest.mark.slow
def test_every_registered_model_is_consistent_at_its_smallest_input():
    for name in kerascnn.list_models():
        info = kerascnn.model_info(name)
        model = kerascnn.get_model(name, 10, (info.min_size,) * 2 + (info.input_shape[2],))
        rows = layer_table(model)
        assert_consistent(rows, table_totals(rows, model))


# --- sizes, paths, formats ------------------------------------------------------------------------

def test_trace_sizes_and_too_small_inputs():
    model, _, _ = table("lenet5")
    sizes = trace_sizes(model, 32, 32)
    assert (sizes["c1"], sizes["s2"], sizes["c3"], sizes["s4"], sizes["c5"]) == (
        (28, 28), (14, 14), (10, 10), (5, 5), (1, 1))
    assert sizes["flatten"] is None
    with pytest.raises(SizeError) as info:
        trace_sizes(model, 16, 16)            # 16 -> 12 -> 6 -> 2 -> 1: C5's 5x5 does not fit
    assert info.value.layer == "c5"
    with pytest.raises(SizeError, match="lenet5 cannot take a 16x16x1 input: layer 'c5'.*32x32"):
        resolve_model("lenet5", input_shape=(16, 16, 1))


def test_saved_model_and_run_directory(tmp_path):
    model = kerascnn.get_model("lenet5", 10, preprocessing="unit")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model.save(run_dir / "model.keras")
    expected = [r.cells() for r in layer_table(model)]
    for spec in (run_dir, run_dir / "model.keras", str(run_dir)):
        assert [r.cells() for r in layer_table(resolve_model(spec))] == expected
    assert all(r.name not in ("preprocess_rescale", "predictions") for r in layer_table(model))
    with pytest.raises(FileNotFoundError, match="model.keras"):
        resolve_model(tmp_path)
    with pytest.raises(ValueError, match="registered model names"):
        resolve_model(run_dir, input_shape=(32, 32, 1))
    (tmp_path / "broken.keras").write_text("not a zip")
    with pytest.raises(ValueError, match="could not load"):
        resolve_model(tmp_path / "broken.keras")


def test_all_layers_adds_activations():
    model, rows, _ = table("lenet5")
    everything = layer_table(model, all_layers=True)
    assert len(everything) > len(rows)
    assert by_name(everything)["predictions"].type == "softmax"


def test_csv_and_markdown():
    _, rows, totals = table("lenet5")
    records = list(csv.reader(io.StringIO(to_csv(rows, totals))))
    assert tuple(records[0]) == COLUMNS
    assert records[1] == ["c1", "conv", "5", "1", "0", "6", "32x32x1", "28x28x6", "150", "6",
                          "117600"]
    assert records[-1][0] == "total" and records[-1][-3:] == ["61470", "236", "416520"]
    markdown = to_markdown(rows, totals)
    assert "| c1 | conv | 5 | 1 | 0 | 6 | 32x32x1 | 28x28x6 | 150 | 6 | 117,600 |" in markdown
    assert "Totals: 61,706 trainable parameters (61,470 weights + 236 biases)" in markdown


# --- the command --------------------------------------------------------------------------------

def test_cli_inspect_lenet5_subprocess():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "kerascnn", "inspect", "lenet5"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Totals: 61,706 trainable parameters" in done.stdout
    assert "48,000" in done.stdout and "28x28x6" in done.stdout


def test_cli_formats_and_options(capsys):
    assert main(["inspect", "resnet50", "--stride-on", "1x1", "--format", "csv"]) == 0
    records = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert records[-1][0] == "total" and round(int(records[-1][-1]) / 1e9, 3) == 3.858
    assert main(["inspect", "googlenet", "--format", "markdown", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "| inception_5b_output | concat |" in out and "| loss3_classifier | fc |" in out
    assert "7x7x1024" in out and "| 10 | 1024 | 10 |" in out


def test_cli_batch_norm_note(capsys):
    assert main(["inspect", "resnet20", "--format", "markdown"]) == 0
    assert "batch norm rows count gamma and beta as weights" in capsys.readouterr().out


def test_cli_unknown_model(capsys):
    assert main(["inspect", "lenet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'lenet'") and "did you mean lenet5" in err


def test_cli_input_too_small(capsys):
    assert main(["inspect", "lenet5", "--input-shape", "16,16,1"]) == 2
    err = capsys.readouterr().err
    assert "layer 'c5'" in err and "smallest input that works for lenet5 is 32x32" in err
    assert "Traceback" not in err


def test_cli_bad_option_value_and_arguments(capsys):
    assert main(["inspect", "resnet50", "--stride-on", "2x2"]) == 2
    assert "stride_on" in capsys.readouterr().err
    assert main(["inspect", "/no/such/run"]) == 2
    assert "no such model file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", "lenet5", "--input-shape", "32x32"])
    assert exit_info.value.code == 2
    assert "expected H,W,C" in capsys.readouterr().err


def test_lenet_1998_custom_layers_state_their_rows():
    """S2/S4 (1 coefficient + 1 bias a map), C3's partial table (60 of 96 filter pairs: 1,500
    weights, 150,000 MACs at 10x10), the fixed RBF centres: the table sums to the paper's 60,000."""
    from kerascnn.inspect import layer_table, table_totals

    model = kerascnn.get_model("lenet5_1998", num_classes=10)
    rows = {r.name: r for r in layer_table(model)}
    assert (rows["s2"].f, rows["s2"].s, rows["s2"].weights, rows["s2"].biases) == (2, 2, 6, 6)
    assert (rows["c3"].f, rows["c3"].k, rows["c3"].weights, rows["c3"].biases) == (5, 16, 1500, 16)
    assert rows["c3"].macs == 10 * 10 * 25 * 60
    assert (rows["rbf"].weights, rows["rbf"].macs) == (0, 840)
    totals = table_totals(list(rows.values()), model)
    assert totals.params == totals.keras_trainable == 60_000


# --- receptive fields (inspect --receptive-field) -----------------------------------------------

def test_receptive_field_columns_are_opt_in_and_match_the_papers():
    from kerascnn.inspect import RF_COLUMNS, columns

    _, rows, _ = table("lenet5")
    assert columns(rows) == COLUMNS and all(r.field is None for r in rows)   # the lecture's table
    model = kerascnn.get_model("alexnet", num_classes=10)
    named = by_name(layer_table(model, receptive_field=True))
    # Krizhevsky et al. 2012's conv5 sees 163x163 pixels at a stride of 16 (pool5: 195, 32)
    assert [named["conv5"].cells(True)[c] for c in RF_COLUMNS] == ["163", "16", "17"]
    assert [named["pool5"].cells(True)[c] for c in RF_COLUMNS] == ["195", "32", "33"]
    assert named["conv1"].cells(True)["start"] == "5"            # unpadded 11x11: centre 5
    assert list(named["conv5"].cells(True))[:len(COLUMNS)] == list(COLUMNS)
    vgg = by_name(layer_table(kerascnn.get_model("vgg16", 10, (32, 32, 3)), receptive_field=True))
    assert (vgg["block5_conv3"].field.r, vgg["block5_conv3"].field.j) == (196, 16)
    assert vgg["block5_pool"].cells(True)["RF"] == "212"         # the often-quoted 212
    resnet = by_name(layer_table(kerascnn.get_model("resnet50", 10, (64, 64, 3)),
                                 receptive_field=True))
    assert resnet["conv1_conv"].merged == ("conv1_pad",)         # the folded pad moves start
    assert resnet["conv1_conv"].cells(True)["start"] == "0" and resnet["conv1_conv"].field.r == 7
    assert resnet["conv5_block3_add"].field.r == 427               # torchvision-style v1.5


def test_receptive_field_in_csv_markdown_and_the_command(capsys):
    from kerascnn.inspect import RF_COLUMNS

    model, _, totals = table("lenet5")
    rows = layer_table(model, receptive_field=True)
    records = list(csv.reader(io.StringIO(to_csv(rows, totals))))
    assert tuple(records[0]) == COLUMNS + RF_COLUMNS
    assert records[1] == ["c1", "conv", "5", "1", "0", "6", "32x32x1", "28x28x6", "150", "6",
                          "117600", "5", "1", "2"]
    c3 = next(r for r in records if r[0] == "c3")
    assert c3[-3:] == ["14", "2", "6.5"]                          # C3: 14x14 from 6.5, step 2
    assert records[-1][0] == "total" and len(records[-1]) == len(records[0])
    markdown = to_markdown(rows, totals)
    assert "| c5 | conv | 5 | 1 | 0 | 120 | 5x5x16 | 1x1x120 | 48,000 | 120 | 48,000 | 32 | 4 | " \
           "15.5 |" in markdown
    assert "RF receptive field size r, jump j" in markdown
    assert main(["inspect", "lenet5", "--receptive-field", "--format", "csv"]) == 0
    out = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert tuple(out[0]) == COLUMNS + RF_COLUMNS and out[1][-3:] == ["5", "1", "2"]
    assert main(["inspect", "lenet5", "--format", "csv"]) == 0      # without the flag: unchanged
    assert tuple(next(csv.reader(io.StringIO(capsys.readouterr().out)))) == COLUMNS
