"""LeNet-5, AlexNet, ZFNet and VGG against the papers' numbers (anchors-zoo.md sections 1b, 1c)."""

import gc

import keras
import numpy as np
import pytest

import kerascnn
from kerascnn import SizeError
from kerascnn.models import lenet
from kerascnn.registry import model_info

CLASSIC = ["lenet5", "lenet5_1998", "alexnet", "alexnet_owt", "alexnet_lecture", "zfnet",
           "vgg11", "vgg13", "vgg16c", "vgg16", "vgg19",
           "vgg11_bn", "vgg13_bn", "vgg16c_bn", "vgg16_bn", "vgg19_bn"]


def trainable(model_or_layer) -> int:
    return int(sum(np.prod(w.shape) for w in model_or_layer.trainable_weights))


@pytest.fixture
def free_models():
    yield
    gc.collect()  # Keras graphs hold reference cycles: free the ~0.5 GB full-size builds now


# name, num_classes, options, trainable parameters (anchors-zoo.md 1b/1c unless noted)
COUNTS = [
    ("lenet5", 10, {}, 61_706),
    ("lenet5_1998", 10, {}, 60_000),
    ("lenet5", 10, {"variant": "1998"}, 60_000),
    ("alexnet", 1000, {}, 60_965_224),
    ("alexnet_owt", 1000, {}, 61_100_840),
    ("alexnet", 1000, {"variant": "owt"}, 61_100_840),  # at 227: the adaptive pool keeps 6x6
    # conv 34,944 + 614,656 + 885,120 + 1,327,488 + 884,992; fc 2*2*256*4096+4096, 4096^2+4096,
    # 4096*1000+1000 (computed by hand from the lecture's shapes)
    ("alexnet_lecture", 1000, {}, 28_823_912),
    ("zfnet", 1000, {}, 62_357_608),
    ("vgg16", 1000, {}, 138_357_544),
    ("vgg11_bn", 1000, {}, 132_863_336 + 5_504),
    pytest.param("vgg11", 1000, {}, 132_863_336, marks=pytest.mark.slow),
    pytest.param("vgg13", 1000, {}, 133_047_848, marks=pytest.mark.slow),
    pytest.param("vgg16c", 1000, {}, 133_638_952, marks=pytest.mark.slow),
    pytest.param("vgg19", 1000, {}, 143_667_240, marks=pytest.mark.slow),
    pytest.param("vgg13_bn", 1000, {}, 133_047_848 + 5_888, marks=pytest.mark.slow),
    pytest.param("vgg16_bn", 1000, {}, 138_357_544 + 8_448, marks=pytest.mark.slow),
    pytest.param("vgg16", 1000, {"batch_norm": True}, 138_357_544 + 8_448, marks=pytest.mark.slow),
    pytest.param("vgg19_bn", 1000, {}, 143_667_240 + 11_008, marks=pytest.mark.slow),
    pytest.param("vgg16c_bn", 1000, {}, 133_638_952 + 8_448, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name, num_classes, options, expected", COUNTS)
def test_trainable_parameters_match_the_papers(name, num_classes, options, expected, free_models):
    model = kerascnn.get_model(name, num_classes=num_classes, **options)
    assert trainable(model) == expected
    assert model.input.name == "image" and model.layers[-1].name == "predictions"
    assert model.output.shape == (None, num_classes)


def test_lenet5_per_layer_counts():
    modern = kerascnn.get_model("lenet5", num_classes=10)
    assert {l.name: trainable(l) for l in modern.layers if l.weights} == {
        "c1": 150 + 6, "c3": 2_400 + 16, "c5": 48_120, "f6": 10_164, "output": 850}
    paper = kerascnn.get_model("lenet5_1998", num_classes=10)
    assert {l.name: trainable(l) for l in paper.layers if l.weights} == {
        "c1": 156, "s2": 12, "c3": 1_516, "s4": 32, "c5": 48_120, "f6": 10_164, "rbf": 0}
    # the RBF centres are fixed: 84 x 10 non-trainable +1/-1 codes
    assert [tuple(w.shape) for w in paper.non_trainable_weights] == [(84, 10)]
    shapes = {n: tuple(paper.get_layer(n).output.shape[1:]) for n in ("c1", "s2", "c3", "s4", "c5")}
    assert shapes == {"c1": (28, 28, 6), "s2": (14, 14, 6), "c3": (10, 10, 16), "s4": (5, 5, 16),
                      "c5": (1, 1, 120)}


# Table I of the paper, S2 maps (rows) x C3 maps (columns), as printed
TABLE_I = ["X...XXX..XXXX.XX",
           "XX...XXX..XXXX.X",
           "XXX...XXX..X.XXX",
           ".XXX..XXXX..X.XX",
           "..XXX..XXXX.XX.X",
           "...XXX..XXXX.XXX"]


def test_c3_connection_table_is_table_one():
    printed = [{col for col, mark in enumerate(row) if mark == "X"} for row in TABLE_I]
    ours = [{j for j, inputs in enumerate(lenet.C3_TABLE) if s2 in inputs} for s2 in range(6)]
    assert ours == printed
    assert [len(r) for r in lenet.C3_TABLE] == [3] * 6 + [4] * 6 + [4] * 3 + [6]
    assert sum(len(r) * 25 + 1 for r in lenet.C3_TABLE) == 1_516


def test_partial_conv_equals_a_masked_full_convolution():
    layer = lenet.PartialConv2D(lenet.C3_TABLE, 5)
    x = np.random.default_rng(0).normal(size=(2, 14, 14, 6)).astype("float32")
    got = np.asarray(layer(x))
    # scatter the per-connection filters into a dense 5x5x6x16 kernel, zero where Table I is empty
    kernel = np.zeros((5, 5, 6, 16), "float32")
    filters = np.asarray(layer.kernel)[..., 0]
    k = 0
    for j, inputs in enumerate(lenet.C3_TABLE):
        for i in inputs:
            kernel[:, :, i, j] = filters[:, :, k]
            k += 1
    dense = keras.layers.Conv2D(16, 5)
    dense.build(x.shape)
    dense.set_weights([kernel, np.asarray(layer.bias) + 0.25])
    np.testing.assert_allclose(got + 0.25, np.asarray(dense(x)), rtol=1e-4, atol=1e-5)
    assert got.shape == (2, 10, 10, 16)
    # paper initialisation: uniform within +-2.4 / fan-in, per output map (fan-in 75 / 100 / 150)
    assert np.abs(filters[..., :18]).max() <= 2.4 / 75
    assert np.abs(filters[..., -6:]).max() <= 2.4 / 150


def test_subsampling_is_coefficient_times_block_sum_plus_bias():
    layer = lenet.Subsampling(2)
    x = np.arange(2 * 4 * 4 * 3, dtype="float32").reshape(2, 4, 4, 3)
    layer.build(x.shape)
    layer.set_weights([np.array([0.5, -1.0, 2.0], "float32"),
                       np.array([1.0, 0.0, -3.0], "float32")])
    expected = x.reshape(2, 2, 2, 2, 2, 3).sum(axis=(2, 4)) * [0.5, -1.0, 2.0] + [1.0, 0.0, -3.0]
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-6)


def test_scaled_tanh_and_rbf_outputs():
    # Appendix A: A = 1.7159 and S = 2/3 make f(1) = 1 and f(-1) = -1
    np.testing.assert_allclose(np.asarray(lenet.scaled_tanh(np.array([1.0, -1.0, 0.0]))),
                               [1.0, -1.0, 0.0], atol=1e-4)
    codes = lenet.rbf_codes(10)
    assert codes.shape == (84, 10) and set(np.unique(codes)) == {-1.0, 1.0}
    assert len({tuple(c) for c in codes.T}) == 10
    # a digit's own code is at distance 0 from its centre; the others differ in >= 10 pixels
    y = np.asarray(lenet.EuclideanRBF(10)(codes.T))
    assert np.all(np.diag(y) == 0) and np.all(y + 40 * np.eye(10) >= 10 * 2 ** 2)
    model = kerascnn.get_model("lenet5_1998", num_classes=10)
    x = np.random.default_rng(1).normal(size=(3, 32, 32, 1)).astype("float32")
    penalties = keras.Model(model.input, model.get_layer("rbf").output)(x)
    e = np.exp(-(penalties - np.min(penalties, axis=1, keepdims=True)))
    np.testing.assert_allclose(np.asarray(model(x)), e / e.sum(axis=1, keepdims=True), rtol=1e-5)


def test_lenet5_1998_saves_and_loads(tmp_path):
    model = kerascnn.get_model("lenet5_1998", num_classes=10,
                               preprocessing=lenet.PAPER_PREPROCESSING)
    path = tmp_path / "lenet.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 1)).astype("uint8")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)


def test_other_num_classes_and_input_shapes(free_models):
    # LeNet at 36x36x3, 5 classes: C5 maps become 2x2, so F6 sees 480 inputs
    model = kerascnn.get_model("lenet5", num_classes=5, input_shape=(36, 36, 3))
    assert trainable(model) == (5 * 5 * 3 * 6 + 6) + 2_416 + 48_120 + (480 * 84 + 84) + (84 * 5 + 5)
    # VGG-16 at 64x64, 10 classes: conv part 14,714,688 (keras include_top=False), fc1 sees 2x2x512
    model = kerascnn.get_model("vgg16", num_classes=10, input_shape=(64, 64, 3))
    assert trainable(model) == 14_714_688 + (2_048 * 4_096 + 4_096) + (4_096 ** 2 + 4_096) + 40_970
    assert model.output.shape == (None, 10)
    # LeNet-5 1998 with other class counts: digit codes first, then seeded random +-1 codes
    model = kerascnn.get_model("lenet5_1998", num_classes=12)
    centres = np.asarray(model.non_trainable_weights[0])
    np.testing.assert_array_equal(centres[:, :10], lenet.rbf_codes(10))
    # non-square inputs: ZFNet's ceil-mode pools pad each axis on its own
    model = kerascnn.get_model("zfnet", num_classes=3, input_shape=(63, 95, 3))
    assert model.get_layer("pool5").output.shape[1:3] == (1, 2)


@pytest.mark.parametrize("name", CLASSIC)
def test_forward_pass_at_min_size(name):
    info = model_info(name)
    size, channels = info.min_size, info.input_shape[2]
    model = kerascnn.get_model(name, num_classes=7, input_shape=(size, size, channels))
    x = np.random.default_rng(0).uniform(0, 1, (2, size, size, channels)).astype("float32")
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (2, 7) and probs.dtype == np.float32
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", CLASSIC)
def test_one_below_min_size_fails_naming_a_layer(name):
    info = model_info(name)
    small = (info.min_size - 1, info.min_size - 1, info.input_shape[2])
    with pytest.raises(SizeError) as raised:  # the builder itself: min_size is the true minimum
        info.builder(num_classes=7, input_shape=small, preprocessing=None, name=name,
                     **info.options)
    assert raised.value.layer and f"'{raised.value.layer}'" in str(raised.value)
    with pytest.raises(SizeError, match=f"at least {info.min_size}x{info.min_size}"):
        kerascnn.get_model(name, num_classes=7, input_shape=small)


@pytest.mark.parametrize("name", ["alexnet", "alexnet_lecture"])
def test_alexnet_at_224_does_not_tile(name):
    with pytest.raises(SizeError) as raised:
        kerascnn.get_model(name, input_shape=(224, 224, 3))
    message = str(raised.value)
    assert raised.value.layer == "conv1" and "not a whole number" in message and "227" in message
    assert name in message


def test_lecture_alexnet_shapes(free_models):
    model = kerascnn.get_model("alexnet_lecture")
    shapes = {n: tuple(model.get_layer(n).output.shape[1:])
              for n in ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5",
                        "fc6", "fc7", "fc8")}
    assert shapes == {"conv1": (55, 55, 96), "pool1": (27, 27, 96), "conv2": (23, 23, 256),
                      "pool2": (11, 11, 256), "conv3": (9, 9, 384), "conv4": (7, 7, 384),
                      "conv5": (5, 5, 256), "pool5": (2, 2, 256), "fc6": (4096,), "fc7": (4096,),
                      "fc8": (1000,)}


def test_zfnet_sizes(free_models):
    model = kerascnn.get_model("zfnet")
    sizes = {n: model.get_layer(n).output.shape[1] for n in ("conv1", "pool1", "conv2", "pool2",
                                                            "conv5", "pool5")}
    assert sizes == {"conv1": 110, "pool1": 55, "conv2": 26, "pool2": 13, "conv5": 13, "pool5": 6}
    assert model.get_layer("flatten").output.shape[1] == 6 * 6 * 256
    # contrast normalisation follows the pooling (Fig. 3), unlike AlexNet
    assert model.get_layer("norm1").input is model.get_layer("pool1").output


def test_alexnet_towers_lrn_and_paper_initialisation():
    model = kerascnn.get_model("alexnet", num_classes=10, input_shape=(67, 67, 3))
    assert [model.get_layer(f"conv{i}").groups for i in range(1, 6)] == [1, 2, 1, 2, 2]
    assert model.get_layer("norm1").input is model.get_layer("conv1_relu").output
    assert model.get_layer("pool2").input is model.get_layer("norm2").output
    assert [model.get_layer(d).rate for d in ("fc6_dropout", "fc7_dropout")] == [0.5, 0.5]
    # section 5: biases 1 in conv2, conv4, conv5, fc6, fc7; 0 elsewhere; weights N(0, 0.01)
    biases = {n: float(np.unique(np.asarray(model.get_layer(n).bias))[0])
              for n in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")}
    assert biases == {"conv1": 0, "conv2": 1, "conv3": 0, "conv4": 1, "conv5": 1, "fc6": 1,
                      "fc7": 1, "fc8": 0}
    assert np.std(np.asarray(model.get_layer("fc7").kernel)) == pytest.approx(0.01, rel=0.02)
    owt = kerascnn.get_model("alexnet_owt", num_classes=10, input_shape=(95, 95, 3))
    assert [owt.get_layer(f"conv{i}").filters for i in range(1, 6)] == [64, 192, 384, 256, 256]
    assert not any(isinstance(l, kerascnn.layers.LocalResponseNormalization) for l in owt.layers)


def test_grouped_conv_equals_keras_groups_without_xla(tmp_path):
    import tensorflow as tf

    from kerascnn.layers import GroupedConv2D
    x = np.random.default_rng(3).normal(size=(2, 9, 9, 6)).astype("float32")
    towers = GroupedConv2D(8, 3, groups=2, padding="same", name="towers")
    reference = keras.layers.Conv2D(8, 3, groups=2, padding="same")
    reference.build(x.shape)
    towers.build(x.shape)
    towers.set_weights(reference.get_weights())  # the same kernel layout: 3x3x3x8
    np.testing.assert_allclose(np.asarray(towers(x)), np.asarray(reference(x)), rtol=1e-5,
                               atol=1e-5)
    # Keras' own grouped Conv2D is jit-compiled on TensorFlow, which tf2onnx cannot convert
    inputs = keras.Input((9, 9, 6))
    model = keras.Model(inputs, towers(inputs))
    graph = tf.function(model).get_concrete_function(tf.TensorSpec((None, 9, 9, 6))).graph
    assert not any("_XlaMustCompile" in f.attr for f in graph.as_graph_def().library.function)
    model.save(tmp_path / "towers.keras")
    loaded = keras.models.load_model(tmp_path / "towers.keras")
    assert type(loaded.get_layer("towers")) is GroupedConv2D
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)


def test_vgg_structure():
    model = kerascnn.get_model("vgg16c_bn", num_classes=10, input_shape=(32, 32, 3))
    names = [l.name for l in model.layers]
    assert names[names.index("flatten"):] == ["flatten", "fc1", "fc1_dropout", "fc2", "fc2_dropout",
                                             "fc3", "predictions"]
    assert [model.get_layer(f"block{b}_conv3").kernel_size for b in (3, 4, 5)] == [(1, 1)] * 3
    assert model.get_layer("block1_conv1_bn").input is model.get_layer("block1_conv1").output
    assert model.get_layer("block1_conv1").use_bias  # torchvision _bn keeps the conv biases
    assert [model.get_layer(f"block{b}_pool").output.shape[1] for b in range(1, 6)] == \
        [16, 8, 4, 2, 1]
    assert model.get_layer("fc1_dropout").rate == 0.5
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert len(convs) == 13 and not any(isinstance(l, keras.layers.BatchNormalization)
                                        for l in kerascnn.get_model("vgg11", num_classes=2,
                                                                    input_shape=(32, 32, 3)).layers)


@pytest.mark.parametrize("name, options, match", [
    ("lenet5", {"variant": "1989"}, "variant must be one of"),
    ("alexnet", {"variant": "resnet"}, "variant must be one of"),
    ("vgg16", {"dropout": 1.5}, r"dropout must be in \[0, 1\)"),
    ("vgg16", {"cfg": "F"}, "has no option cfg"),
])
def test_bad_options_are_named(name, options, match):
    with pytest.raises(ValueError, match=match):
        kerascnn.get_model(name, num_classes=2, input_shape=(227, 227, 1), **options)


def test_registry_metadata():
    for name in CLASSIC:
        info = model_info(name)
        assert info.paper and info.description
    assert "LeCun" in model_info("lenet5").paper and "1998" in model_info("lenet5").paper
    assert "Krizhevsky" in model_info("alexnet").paper and "2012" in model_info("alexnet").paper
    assert "Zeiler" in model_info("zfnet").paper and "Simonyan" in model_info("vgg19").paper
    assert model_info("alexnet").input_shape == (227, 227, 3)
    assert model_info("alexnet_owt").input_shape == (224, 224, 3)
    assert model_info("lenet5").input_shape == (32, 32, 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet5", "lenet5_1998", "alexnet", "alexnet_owt",
                                  "alexnet_lecture", "zfnet", "vgg11"])
def test_no_smaller_input_builds(name):
    """min_size is the smallest square input that builds: every smaller one raises SizeError."""
    info = model_info(name)
    built = []
    for size in range(1, info.min_size + 1):
        try:
            info.builder(num_classes=2, input_shape=(size, size, info.input_shape[2]),
                         preprocessing=None, name=name, **info.options)
            built.append(size)
        except SizeError as exc:
            assert exc.layer
    assert built == [info.min_size]


@pytest.mark.slow
def test_alexnet_sizes_that_tile():
    """With exact arithmetic only 67 + 32k tiles: conv1 and three 3x3/2 pools must divide."""
    info = model_info("alexnet")
    built = []
    for size in range(60, 260):
        try:
            info.builder(num_classes=2, input_shape=(size, size, 3), preprocessing=None,
                         name="alexnet", **info.options)
            built.append(size)
        except SizeError:
            pass
    assert built == [67, 99, 131, 163, 195, 227, 259]
