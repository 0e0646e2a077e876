"""The registry: names, metadata, and the errors a user meets first."""

import keras
import numpy as np
import pytest

import kerascnn
from kerascnn.layers import LocalResponseNormalization, image_input

EXPECTED = {"lenet5", "alexnet", "alexnet_lecture", "zfnet", "vgg11", "vgg13", "vgg16", "vgg19",
            "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn", "googlenet", "resnet18", "resnet34",
            "resnet50", "resnet101", "resnet152", "resnet20", "resnet32", "resnet44", "resnet56",
            "resnet110"}


def test_every_lecture_network_is_registered():
    assert EXPECTED <= set(kerascnn.list_models())


def test_list_models_pattern_and_natural_order():
    assert kerascnn.list_models("vgg1?") == ["vgg11", "vgg13", "vgg16", "vgg19"]
    resnets = kerascnn.list_models("resnet*")
    assert resnets.index("resnet18") < resnets.index("resnet20") < resnets.index("resnet110")


def test_metadata_names_paper_and_sizes():
    info = kerascnn.model_info("resnet50")
    assert info.input_shape == (224, 224, 3) and info.min_size >= 1
    assert "He" in info.paper and "2015" in info.paper
    assert kerascnn.model_info("LeNet5").name == "lenet5"  # case-insensitive


def test_unknown_name_lists_closest_names():
    with pytest.raises(kerascnn.UnknownModelError, match="did you mean.*resnet50"):
        kerascnn.get_model("resnet05")


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_num_classes_must_be_positive_int(bad):
    with pytest.raises(ValueError, match="num_classes"):
        kerascnn.get_model("lenet5", num_classes=bad)


def test_bad_input_shape_and_unknown_option_are_named():
    with pytest.raises(ValueError, match=r"input_shape.*\(height, width, channels\)"):
        kerascnn.get_model("lenet5", input_shape=(32, 32))
    with pytest.raises(ValueError, match="has no option dropuot"):
        kerascnn.get_model("lenet5", dropuot=0.5)


def test_too_small_input_names_the_minimum():
    info = kerascnn.model_info("lenet5")
    assert info.min_size == 32  # C5's 5x5 filter needs S4 to be 5x5
    with pytest.raises(kerascnn.SizeError, match="at least 32x32"):
        kerascnn.get_model("lenet5", num_classes=10, input_shape=(31, 31, 1))


def test_preprocessing_makes_a_uint8_model():
    model = kerascnn.get_model("lenet5", num_classes=10, preprocessing="unit")
    assert model.input.dtype == "uint8" and model.input.name == "image"
    assert model.get_layer("preprocess_rescale").scale == pytest.approx(1 / 255)
    assert model.layers[-1].name == "predictions"
    probs = model(np.full((2, 32, 32, 1), 255, np.uint8))
    np.testing.assert_allclose(np.sum(probs, axis=1), 1.0, rtol=1e-5)


def test_imagenet_normalisation_inside_the_model():
    inputs, x = image_input((4, 4, 3), "imagenet")
    model = keras.Model(inputs, x)
    out = model(np.full((1, 4, 4, 3), 255, np.uint8)).numpy()
    expected = (1.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(out[0, 0, 0], expected, rtol=1e-5)


def test_lrn_matches_the_formula():
    x = np.random.default_rng(0).normal(size=(1, 2, 2, 7)).astype("float32")
    lrn = LocalResponseNormalization(depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75)
    got = np.asarray(lrn(x))
    sq = np.pad(x ** 2, [(0, 0)] * 3 + [(2, 2)])
    window = sum(sq[..., i:i + 7] for i in range(5))
    np.testing.assert_allclose(got, x / (2.0 + 1e-4 / 5 * window) ** 0.75, rtol=1e-5)


def test_classifier_activation_none_gives_logits_as_in_keras_applications():
    """Other options left as None take the paper's default; classifier_activation=None is the
    logits (keras.applications' meaning), so the same image gives softmax(logits)."""
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    probs = kerascnn.get_model("resnet20", 10, classifier_activation="softmax")
    logits = kerascnn.get_model("resnet20", 10, classifier_activation=None, shortcut=None)
    logits.set_weights(probs.get_weights())
    z = logits.predict(x, verbose=0)
    assert z.min() < 0 or z.max() > 1
    np.testing.assert_allclose(probs.predict(x, verbose=0),
                               np.exp(z) / np.exp(z).sum(1, keepdims=True), atol=1e-6)
