"""The torchvision converter's numpy half, without torch (issue 14; the logits parity against
torchvision itself is tests/test_torchvision_weights.py, -m torchvision).

A tiny network checks the layout rules against the arithmetic torch does (OIHW correlation over a
CHW map, batch norm with torch's epsilon, the C, H, W flatten); torchvision's GoogLeNet, as
``variant="torchvision"``, checks the name table, the placing of every tensor and the errors.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import kerascnn
from kerascnn.weights import WeightsError
from kerascnn.weights import torchvision as tvw

ENTRIES = {entry.network: entry for entry in tvw.SOURCES}
#: modules with tensors in torchvision 0.29's state dicts (googlenet with its aux heads), counted
#: from the torchvision models themselves: the tables name exactly these.
MODULES = {"alexnet_owt": 8, "vgg11": 11, "vgg11_bn": 19, "vgg13": 13, "vgg13_bn": 23,
           "vgg16": 16, "vgg16_bn": 29, "vgg19": 19, "vgg19_bn": 35, "resnet18": 41,
           "resnet34": 73, "resnet50": 107, "resnet101": 209, "resnet152": 311, "googlenet": 123}


def test_sources_are_torchvisions_published_files():
    assert list(ENTRIES) == list(MODULES)
    for entry in tvw.SOURCES:
        assert entry.url.startswith("https://download.pytorch.org/models/")
        assert entry.hash_kind == "sha256-prefix" and len(entry.file_hash) == 8
        assert entry.file_name.endswith(f"-{entry.file_hash}.pth")
        assert entry.source_name.endswith("_Weights.IMAGENET1K_V1")
        info = kerascnn.model_info(entry.network)
        assert set(entry.options) <= set(info.accepted_options())
    assert (ENTRIES["alexnet_owt"].top1, ENTRIES["resnet50"].top1, ENTRIES["googlenet"].top1,
            ENTRIES["vgg19_bn"].top5) == (56.522, 76.13, 69.778, 91.842)
    assert ENTRIES["alexnet_owt"].file_name == "alexnet-owt-7be5be79.pth"
    assert ENTRIES["googlenet"].options == {"variant": "torchvision"}


def test_googlenet_preprocessing_is_normalise_then_transform_input():
    pixels = np.arange(256, dtype=np.float64)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    normalised = (pixels[:, None] / 255 - mean) / std             # torchvision's transform
    transformed = normalised * std / 0.5 + (mean - 0.5) / 0.5      # GoogLeNet.transform_input
    spec = ENTRIES["googlenet"].preprocessing
    ours = pixels[:, None] * spec["scale"] + spec["offset"]
    np.testing.assert_allclose(ours.repeat(3, 1), transformed, atol=1e-12)
    assert ENTRIES["resnet50"].preprocessing == kerascnn.layers.PREPROCESSING["imagenet"]


def test_name_tables_follow_torchvisions_module_names():
    assert {n: len(tvw.module_names(n)) for n in MODULES} == MODULES
    resnet18, resnet50 = tvw.module_names("resnet18"), tvw.module_names("resnet50")
    assert "layer1.0.downsample.0" not in resnet18        # 64 -> 64 at stride 1: identity
    assert resnet18["layer2.0.downsample.1"] == "conv3_block1_0_bn"
    assert resnet50["layer1.0.downsample.0"] == "conv2_block1_0_conv"  # 64 -> 256
    assert resnet50["layer3.5.conv3"] == "conv4_block6_3_conv"
    assert tvw.module_names("vgg16")["features.7"] == "block2_conv2"         # conv, relu pairs
    assert tvw.module_names("vgg16_bn")["features.8"] == "block2_conv1_bn"   # conv, bn, relu
    assert tvw.module_names("vgg19")["classifier.6"] == "fc3"
    googlenet = tvw.module_names("googlenet")
    assert googlenet["inception4e.branch3.1.conv"] == "inception_4e_5x5"
    assert googlenet["aux2.fc1"] == "loss2_fc" and googlenet["conv3.bn"] == "conv2_3x3_bn"
    with pytest.raises(WeightsError, match="no ImageNet weights for 'zfnet'"):
        tvw.module_names("zfnet")


def _torch_layout(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_layout_rules_compute_what_torch_computes():
    # conv (O, I, H, W) over a C, H, W map, BN with torch's eps 1e-5 folded into our 1e-3, and a
    # linear layer over torch's C, H, W flatten, against numpy doing torch's arithmetic
    rng = np.random.default_rng(0)
    inputs = keras.Input((5, 6, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(epsilon=1e-3, name="bn")(x)
    x = keras.layers.Dense(7, name="fc")(keras.layers.Flatten(name="flatten")(x))
    model = keras.Model(inputs, x)
    w, b = _torch_layout(rng, (4, 3, 3, 3)), _torch_layout(rng, 4)
    gamma, beta, mean = _torch_layout(rng, 4), _torch_layout(rng, 4), _torch_layout(rng, 4)
    var = (0.01 + rng.random(4) * 0.01).astype(np.float32)   # small: the epsilons matter
    fc_w, fc_b = _torch_layout(rng, (7, 4 * 3 * 4)), _torch_layout(rng, 7)
    for layer, module, params in (
            ("conv", "conv", {"weight": w, "bias": b}),
            ("bn", "bn", {"weight": gamma, "bias": beta, "running_mean": mean, "running_var": var}),
            ("fc", "fc", {"weight": fc_w, "bias": fc_b})):
        model.get_layer(layer).set_weights(
            tvw._layer_values(model.get_layer(layer), module, params, 1e-5))
    image = rng.standard_normal((5, 6, 3)).astype(np.float32)
    chw = image.transpose(2, 0, 1).astype(np.float64)
    conv = np.zeros((4, 3, 4))
    for y in range(3):
        for x_ in range(4):
            conv[:, y, x_] = np.einsum("oihw,ihw->o", w, chw[:, y:y + 3, x_:x_ + 3]) + b
    normed = ((conv - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5)
              * gamma[:, None, None] + beta[:, None, None])
    want = fc_w @ normed.reshape(-1) + fc_b                        # torch.flatten: C, H, W
    got = model.predict(image[None], verbose=0)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.fixture(scope="module")
def googlenet_aux():
    return kerascnn.get_model("googlenet", preprocessing=ENTRIES["googlenet"].preprocessing,
                              aux_logits=True, classifier_activation="linear",
                              variant="torchvision")


def _state_dict(model, table, rng):
    """Random tensors in torchvision's names and layouts for every layer of ``model``."""
    state = {}
    for module, ours in table.items():
        layer = model.get_layer(ours)
        shapes = [tuple(w.shape) for w in layer.weights]
        if isinstance(layer, keras.layers.BatchNormalization):
            for param, shape in zip(("weight", "bias", "running_mean"), shapes):
                state[f"{module}.{param}"] = _torch_layout(rng, shape)
            state[f"{module}.running_var"] = (0.5 + rng.random(shapes[3])).astype(np.float32)
            state[f"{module}.num_batches_tracked"] = np.array(5, np.int64)
        elif isinstance(layer, keras.layers.Dense):
            state[f"{module}.weight"] = _torch_layout(rng, shapes[0][::-1])
            state[f"{module}.bias"] = _torch_layout(rng, shapes[1])
        else:
            h, w_, i, o = shapes[0]
            state[f"{module}.weight"] = _torch_layout(rng, (o, i, h, w_))
    return state


def test_googlenet_torchvision_places_every_tensor(googlenet_aux):
    assert sum(int(np.prod(w.shape)) for w in googlenet_aux.trainable_weights) == 13_004_888
    table = tvw.module_names("googlenet")
    state = _state_dict(googlenet_aux, table, np.random.default_rng(1))
    entry = ENTRIES["googlenet"]
    tvw.convert(googlenet_aux, state, entry)
    kernel = googlenet_aux.get_layer("inception_3a_5x5").get_weights()[0]
    assert kernel.shape == (3, 3, 16, 32)                           # torchvision's "5x5" is 3x3
    np.testing.assert_array_equal(kernel, state["inception3a.branch3.1.conv.weight"]
                                  .transpose(2, 3, 1, 0))
    bn = googlenet_aux.get_layer("conv1_7x7_s2_bn")
    assert bn.epsilon == pytest.approx(1e-3)                        # BasicConv2d's eps: no fold
    np.testing.assert_allclose(bn.moving_variance.numpy(), state["conv1.bn.running_var"],
                               rtol=1e-6)
    # the aux fc takes a 4x4x128 map: torch's input c*16 + h*4 + w is our h*512 + w*128 + c
    fc = googlenet_aux.get_layer("loss1_fc").get_weights()[0]
    torch_w = state["aux1.fc1.weight"]
    for o, c, h, w in ((0, 0, 0, 1), (5, 127, 3, 2), (1023, 64, 2, 3)):
        assert fc[h * 512 + w * 128 + c, o] == torch_w[o, c * 16 + h * 4 + w]
    # our network without aux heads takes the same file (torchvision drops them too)
    plain = kerascnn.get_model("googlenet", classifier_activation="linear", variant="torchvision")
    assert sum(int(np.prod(w.shape)) for w in plain.trainable_weights) == 6_624_904
    tvw.convert(plain, state, entry)
    np.testing.assert_array_equal(plain.get_layer("loss3_classifier").get_weights()[0],
                                  state["fc.weight"].T)


def test_googlenet_torchvision_conversion_errors_name_the_tensor(googlenet_aux):
    entry = ENTRIES["googlenet"]
    state = _state_dict(googlenet_aux, tvw.module_names("googlenet"), np.random.default_rng(2))
    broken = {k: v for k, v in state.items() if k != "inception4b.branch2.1.conv.weight"}
    with pytest.raises(WeightsError, match=r"lacks the tensors inception4b\.branch2\.1\.conv\.\* "
                                           r"for our layer\(s\) inception_4b_3x3"):
        tvw.convert(googlenet_aux, broken, entry)
    broken = {k: v for k, v in state.items() if k != "conv2.bn.running_var"}
    with pytest.raises(WeightsError, match=r"lacks conv2\.bn\.running_var"):
        tvw.convert(googlenet_aux, broken, entry)
    wrong = {**state, "fc.weight": state["fc.weight"][:, :512]}
    with pytest.raises(WeightsError, match=r"tensor fc\.weight has shape \(1000, 512\), but our "
                                           r"loss3_classifier needs \(1024, 1000\)"):
        tvw.convert(googlenet_aux, wrong, entry)
    with pytest.raises(WeightsError, match=r"tensor 'inception6a\.branch1\.conv\.weight' of "
                                           r"GoogLeNet_Weights\.IMAGENET1K_V1 has no place"):
        tvw.convert(googlenet_aux, {**state, "inception6a.branch1.conv.weight": state["fc.bias"]},
                    entry)
    # nothing of the model changed on a failed conversion
    before = googlenet_aux.get_layer("loss3_classifier").get_weights()[1]
    with pytest.raises(WeightsError):
        tvw.convert(googlenet_aux, {**state, "fc.bias": state["fc.bias"] + 1,
                                    "conv1.bn.weight": state["fc.bias"]}, entry)
    np.testing.assert_array_equal(googlenet_aux.get_layer("loss3_classifier").get_weights()[1],
                                  before)


def test_googlenet_variant_arguments():
    with pytest.raises(ValueError, match="variant must be one of"):
        kerascnn.get_model("googlenet", variant="tf-slim")
    with pytest.raises(ValueError, match="always has batch norm"):
        kerascnn.get_model("googlenet", variant="torchvision", batch_norm=False)


def test_read_without_torch_names_the_extra(monkeypatch, tmp_path):
    import sys
    monkeypatch.setitem(sys.modules, "torch", None)   # import torch raises ImportError
    with pytest.raises(WeightsError, match=r"pip install 'kerascnn\[torchvision\]'"):
        tvw.read(tmp_path / "resnet18-f37072fd.pth")
