"""GoogLeNet and the ResNets against the papers' tables (anchors-zoo.md §1b, §1c, §2)."""

import keras
import numpy as np
import pytest

import kerascnn
from kerascnn.inference import inference_model
from kerascnn.layers import LocalResponseNormalization, max_pool
from kerascnn.models import googlenet as gnet
from kerascnn.models import resnet as rnet


def trainable(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def macs(model):
    """Conv2D + Dense multiply-accumulates for one image (anchors-zoo.md §5)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            h, w, k = layer.output.shape[1:]
            fh, fw = layer.kernel_size
            total += h * w * k * fh * fw * layer.input.shape[-1] // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return total


def probabilities_of(model, classes, size, training=False):
    x = np.random.default_rng(0).uniform(0, 1, (2, size, size, 3)).astype("float32")
    probs = np.asarray(model(x, training=training))
    assert probs.shape == (2, classes)
    return probs


# --- parameter counts ---------------------------------------------------------------------------

slow = pytest.mark.slow


@pytest.mark.parametrize("name, classes, options, expected", [
    ("googlenet", 1000, {}, 6_998_552),                               # §1c, paper-faithful
    ("googlenet", 1000, {"aux_logits": True}, 13_378_280),            # §1c, with both aux heads
    ("resnet18", 1000, {}, 11_689_512),                               # §1b, torchvision
    ("resnet34", 1000, {}, 21_797_672),
    ("resnet50", 1000, {}, 25_557_032),
    ("resnet50", 1000, {"stride_on": "1x1"}, 25_557_032),             # v1: same parameters
    pytest.param("resnet101", 1000, {}, 44_549_160, marks=slow),
    pytest.param("resnet152", 1000, {}, 60_192_808, marks=slow),
    ("resnet20", 10, {}, 269_722),                                    # §1c Table 6, option A
    ("resnet32", 10, {}, 464_154),
    ("resnet44", 10, {}, 658_586),
    ("resnet56", 10, {}, 853_018),
    ("resnet110", 10, {}, 1_727_962),
    ("resnet20", 10, {"shortcut": "projection"}, 272_474),            # option B
    pytest.param("resnet110", 10, {"shortcut": "projection"}, 1_730_714, marks=slow),
])
def test_trainable_parameters_match_the_references(name, classes, options, expected):
    assert trainable(kerascnn.get_model(name, num_classes=classes, **options)) == expected


def test_googlenet_bn_is_torchvision_without_its_3x3_bug():
    # torchvision's googlenet (BN, no conv bias) has 6,624,904 parameters with 3x3 convs in the
    # 5x5 branch (anchors-zoo §2.1); 5x5 kernels add 16 weights per (5x5 reduce x 5x5) pair.
    bug = 16 * sum(row[4] * row[5] for row in gnet.INCEPTION_MODULES if not isinstance(row, str))
    assert bug == 380_928
    model = kerascnn.get_model("googlenet", batch_norm=True)
    assert trainable(model) == 6_624_904 + bug == 7_005_832
    # torchvision's aux heads (conv 1x1 128 no bias + BN, FC 2048->1024, FC 1024->1000)
    assert trainable(kerascnn.get_model("googlenet", batch_norm=True, aux_logits=True)) == \
        7_005_832 + 3_188_968 + 3_191_016
    assert not model.get_layer("inception_3a_1x1").use_bias
    assert model.get_layer("inception_3a_1x1_bn").epsilon == pytest.approx(1e-3)
    assert not any(isinstance(layer, LocalResponseNormalization) for layer in model.layers)


@slow
def test_cifar_resnet1202_builds_past_the_recursion_limit():
    model = rnet.resnet_cifar(10, depth=1202)
    assert trainable(model) == 19_421_274  # anchors-zoo §1c Table 6
    # training mode: untrained, BN's initial moving statistics let 600 residual sums overflow
    probs = probabilities_of(model, 10, 32, training=True)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


# --- MACs ---------------------------------------------------------------------------------------

def test_stride_on_moves_the_stride_and_the_macs_not_the_parameters():
    v15 = kerascnn.get_model("resnet50")
    v1 = kerascnn.get_model("resnet50", stride_on="1x1")
    assert v15.get_layer("conv3_block1_1_conv").strides == (1, 1)
    assert v15.get_layer("conv3_block1_2_conv").strides == (2, 2)
    assert v1.get_layer("conv3_block1_1_conv").strides == (2, 2)
    assert v1.get_layer("conv3_block1_2_conv").strides == (1, 1)
    assert v1.get_layer("conv3_block2_1_conv").strides == (1, 1)  # only the first block strides
    # torchvision _ops 4.089 GMACs (v1.5); the paper's Table 1 says 3.8 GFLOPs (v1)
    assert round(macs(v15) / 1e9, 3) == 4.089
    assert round(macs(v1) / 1e9, 3) == 3.858
    assert trainable(v1) == trainable(v15)


def test_macs_of_the_papers_networks():
    assert round(macs(kerascnn.get_model("resnet18")) / 1e9, 3) == 1.814   # Table 1: 1.8 G
    assert round(macs(kerascnn.get_model("googlenet")) / 1e9, 3) == 1.583  # §1c computed
    assert round(macs(kerascnn.get_model("resnet20", num_classes=10)) / 1e6, 1) == 40.6


# --- GoogLeNet ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def googlenet224():
    return kerascnn.get_model("googlenet")


@pytest.mark.parametrize("layer, shape", [
    ("conv1_7x7_s2", (112, 112, 64)), ("pool1_3x3_s2", (56, 56, 64)),
    ("conv2_3x3", (56, 56, 192)), ("pool2_3x3_s2", (28, 28, 192)),
    ("inception_3a_output", (28, 28, 256)), ("inception_3b_output", (28, 28, 480)),
    ("pool3_3x3_s2", (14, 14, 480)),
    ("inception_4a_output", (14, 14, 512)), ("inception_4b_output", (14, 14, 512)),
    ("inception_4c_output", (14, 14, 512)), ("inception_4d_output", (14, 14, 528)),
    ("inception_4e_output", (14, 14, 832)), ("pool4_3x3_s2", (7, 7, 832)),
    ("inception_5a_output", (7, 7, 832)), ("inception_5b_output", (7, 7, 1024)),
    ("pool5_7x7_s1", (1024,)), ("predictions", (1000,)),
])
def test_googlenet_follows_table1_output_sizes(googlenet224, layer, shape):
    assert tuple(googlenet224.get_layer(layer).output.shape[1:]) == shape


def test_googlenet_is_the_caffe_reference(googlenet224):
    m = googlenet224
    assert m.get_layer("inception_3a_5x5").kernel_size == (5, 5)  # not torchvision's 3x3 bug
    assert m.get_layer("conv1_7x7_s2").use_bias and m.get_layer("inception_5b_1x1").use_bias
    for name in ("pool1_norm1", "conv2_norm2"):  # bvlc_googlenet: local_size 5, a 1e-4, b .75, k 1
        lrn = m.get_layer(name)
        assert isinstance(lrn, LocalResponseNormalization)
        assert (lrn.depth_radius, lrn.bias, lrn.alpha, lrn.beta) == (2, 1.0, 1e-4, 0.75)
    assert m.get_layer("pool5_drop_7x7_s1").rate == pytest.approx(0.4)
    names = [layer.name for layer in m.layers]
    assert names[-2:] == ["loss3_classifier", "predictions"]
    assert m.get_layer("predictions").dtype_policy.name == "float32"
    concat = m.get_layer("inception_4e_output")
    assert [t.shape[-1] for t in concat.input] == [256, 320, 128, 128]  # Table 1 row 4e


def caffe_max_pool_3x3_s2(x):
    """Caffe's ceil-mode pooling: windows start at 0, 2, 4, ...; the last may overhang the edge."""
    n, h, w, c = x.shape
    oh, ow = -(-(h - 3) // 2) + 1, -(-(w - 3) // 2) + 1
    out = np.empty((n, oh, ow, c), x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = x[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(1, 2))
    return out


@pytest.mark.parametrize("h, w", [(8, 8), (7, 7), (8, 7), (3, 6)])
def test_googlenet_max_pools_are_caffe_ceil_mode(h, w):
    inputs = keras.Input((h, w, 2))
    model = keras.Model(inputs, max_pool(inputs, 3, 2, name="pool", rounding="ceil"))
    x = np.random.default_rng(1).uniform(0, 1, (1, h, w, 2)).astype("float32")  # ReLU outputs
    np.testing.assert_array_equal(np.asarray(model(x)), caffe_max_pool_3x3_s2(x))


def test_aux_heads_only_with_aux_logits_and_inference_model_shares_weights():
    plain = kerascnn.get_model("googlenet", num_classes=4, input_shape=(79, 79, 3))
    assert plain.output_names == ["predictions"] and inference_model(plain) is plain
    model = kerascnn.get_model("googlenet", num_classes=4, input_shape=(79, 79, 3),
                               aux_logits=True)
    assert model.output_names == ["predictions", "aux1_predictions", "aux2_predictions"]
    assert model.get_layer("loss1_ave_pool").input.shape[-1] == 512  # after 4a
    assert model.get_layer("loss2_ave_pool").input.shape[-1] == 528  # after 4d
    assert model.get_layer("loss1_drop_fc").rate == pytest.approx(0.7)
    inference = inference_model(model)
    assert len(inference.outputs) == 1 and inference.output_names == ["predictions"]
    assert inference.get_layer("loss3_classifier") is model.get_layer("loss3_classifier")
    assert trainable(inference) == trainable(plain)
    x = np.random.default_rng(0).uniform(0, 1, (2, 79, 79, 3)).astype("float32")
    main, aux1, aux2 = (np.asarray(t) for t in model(x, training=False))
    np.testing.assert_allclose(np.asarray(inference(x, training=False)), main, rtol=1e-6)
    np.testing.assert_allclose(aux1.sum(axis=1), 1.0, rtol=1e-5)


def test_googlenet_below_its_minimum_names_the_layer():
    assert kerascnn.model_info("googlenet").min_size == 47
    with pytest.raises(kerascnn.SizeError) as exc:
        gnet.googlenet(3, (46, 46, 3))
    assert exc.value.layer == "pool4_3x3_s2"
    with pytest.raises(kerascnn.SizeError, match="at least 47x47"):
        kerascnn.get_model("googlenet", num_classes=3, input_shape=(46, 46, 3))
    # the aux heads' 5x5/3 average pool needs a 5x5 map after 4a
    with pytest.raises(kerascnn.SizeError, match="aux_logits.*79x79") as exc:
        kerascnn.get_model("googlenet", num_classes=3, input_shape=(78, 78, 3), aux_logits=True)
    assert exc.value.layer == "loss1_ave_pool"


# --- ResNets ------------------------------------------------------------------------------------

def test_resnet_layout_names_and_shortcuts():
    model = kerascnn.get_model("resnet50")
    names = {layer.name for layer in model.layers}
    assert {"conv1_conv", "conv1_bn", "conv1_relu", "pool1_pool", "conv2_block1_1_conv",
            "conv2_block1_1_bn", "conv2_block1_0_conv", "conv2_block1_add", "conv2_block1_out",
            "conv5_block3_3_bn", "avg_pool", "fc", "predictions"} <= names
    # Table 1: 3, 4, 6, 3 blocks; a projection only where the shape changes (first block)
    for stage, count in zip(("conv2", "conv3", "conv4", "conv5"), (3, 4, 6, 3)):
        assert f"{stage}_block{count}_out" in names and f"{stage}_block{count + 1}_out" not in names
        assert f"{stage}_block1_0_conv" in names and f"{stage}_block2_0_conv" not in names
    assert model.get_layer("conv5_block3_out").output.shape[1:] == (7, 7, 2048)
    assert model.get_layer("pool1_pool").output.shape[1:] == (56, 56, 64)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 53 and not any(layer.use_bias for layer in convs)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 53 and all(bn.epsilon == pytest.approx(1e-5) for bn in bns)
    basic = kerascnn.get_model("resnet18")  # conv2 keeps 64 channels: identity shortcut
    assert "conv2_block1_0_conv" not in {layer.name for layer in basic.layers}


def test_resnet_he_init_fan_out_and_zero_init_residual():
    model = kerascnn.get_model("resnet50", zero_init_residual=True)
    kernel = np.asarray(model.get_layer("conv4_block1_3_conv").kernel)  # 1x1, 256 -> 1024
    assert kernel.std() == pytest.approx(np.sqrt(2 / 1024), rel=0.02)  # fan_out, not fan_in 256
    assert not np.any(np.asarray(model.get_layer("conv4_block1_3_bn").gamma))
    assert np.all(np.asarray(model.get_layer("conv4_block1_2_bn").gamma) == 1)
    assert np.all(np.asarray(model.get_layer("conv4_block1_0_bn").gamma) == 1)  # shortcut BN
    cifar = kerascnn.get_model("resnet20", num_classes=10, zero_init_residual=True)
    assert not np.any(np.asarray(cifar.get_layer("conv3_block2_2_bn").gamma))
    default = kerascnn.get_model("resnet18")
    assert np.all(np.asarray(default.get_layer("conv2_block1_2_bn").gamma) == 1)
    # every conv draws its own weights (a reused unseeded Keras initializer would repeat them)
    first, second = (np.asarray(default.get_layer(f"conv2_block{i}_1_conv").kernel) for i in (1, 2))
    assert not np.allclose(first, second)


def test_cifar_resnet_is_table6():
    model = kerascnn.get_model("resnet56", num_classes=10)
    assert model.get_layer("conv1_conv").kernel_size == (3, 3)
    for stage, size, width in (("conv2", 32, 16), ("conv3", 16, 32), ("conv4", 8, 64)):
        assert model.get_layer(f"{stage}_block9_out").output.shape[1:] == (size, size, width)
        assert f"{stage}_block10_out" not in {layer.name for layer in model.layers}
    assert model.get_layer("conv3_block1_1_conv").strides == (2, 2)
    assert isinstance(model.get_layer("conv3_block1_0_shortcut"), rnet.ZeroPadShortcut)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) + 1 == 56  # 6n+2 = 55 convs + the FC layer


def test_option_a_shortcut_subsamples_and_pads_zeros():
    x = np.arange(2 * 5 * 5 * 3, dtype="float32").reshape(2, 5, 5, 3)
    y = np.asarray(rnet.ZeroPadShortcut(8, 2)(x))
    assert y.shape == (2, 3, 3, 8)
    np.testing.assert_array_equal(y[..., :3], x[:, ::2, ::2])
    assert not np.any(y[..., 3:])
    # odd and non-square inputs line up with the stride-2 conv beside it
    model = rnet.resnet_cifar(10, (9, 7, 3), depth=20)
    assert model.get_layer("conv4_block1_add").output.shape[1:] == (3, 2, 64)


@pytest.mark.parametrize("depth, match", [(21, r"6n\+2.*nearest depths are 20 and 26"),
                                          (2, r"6n\+2"), (20.0, r"6n\+2")])
def test_cifar_resnet_depth_must_be_6n_plus_2(depth, match):
    with pytest.raises(ValueError, match=match):
        rnet.resnet_cifar(10, depth=depth)


@pytest.mark.parametrize("name, option, value", [("resnet50", "stride_on", "2x2"),
                                                 ("resnet20", "shortcut", "B"),
                                                 ("resnet18", "stride_on", "3X3")])
def test_bad_options_name_the_choices(name, option, value):
    with pytest.raises(ValueError, match=f"{option} must be one of"):
        kerascnn.get_model(name, **{option: value})


def test_layouts_are_validated():
    with pytest.raises(ValueError, match="4 positive block counts"):
        rnet.resnet(10, block="basic", blocks=(2, 2, 2))


# --- every network at its smallest input -------------------------------------------------------

@pytest.mark.parametrize("name", ["googlenet", "resnet18", "resnet34", "resnet50",
                                  pytest.param("resnet101", marks=slow),
                                  pytest.param("resnet152", marks=slow),
                                  "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"])
def test_forward_pass_at_min_size(name):
    size = kerascnn.model_info(name).min_size
    model = kerascnn.get_model(name, num_classes=3, input_shape=(size, size, 3))
    # training mode: BN normalises with the batch's statistics, so the sums of 50 untrained
    # residual blocks stay small instead of saturating the softmax
    probs = probabilities_of(model, 3, size, training=True)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(np.isfinite(probs))


def test_resnets_build_down_to_one_pixel():
    # every padded conv and pool keeps (W - F + 2P) >= 0, so 1x1 is the true minimum (torchvision's
    # ResNet meta says min_size (1, 1) too); zero pixels is rejected as an invalid shape
    for name in ("resnet50", "resnet20"):
        assert kerascnn.model_info(name).min_size == 1
        with pytest.raises(ValueError, match="positive integers"):
            kerascnn.get_model(name, input_shape=(0, 0, 3))


# --- serialisation ------------------------------------------------------------------------------

def test_uint8_cifar_resnet_saves_and_loads(tmp_path):
    model = kerascnn.get_model("resnet20", num_classes=10, preprocessing="unit")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
    assert isinstance(loaded.get_layer("conv3_block1_0_shortcut"), rnet.ZeroPadShortcut)


@slow
def test_googlenet_saves_and_loads(tmp_path):
    model = inference_model(kerascnn.get_model("googlenet", num_classes=5, aux_logits=True,
                                                    preprocessing="imagenet"))
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    x = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)
