"""The lecture's size arithmetic: W2 = (W1 - F + 2P)/S + 1, weights, biases and MACs."""

import doctest

import pytest

from kerascnn import arithmetic
from kerascnn.arithmetic import (SizeError, batch_norm_params, conv_arithmetic, conv_macs,
                                 conv_params, dense_macs, dense_params, min_input_size,
                                 output_size, pool_arithmetic, same_padding)


def test_alexnet_conv1_exercise():
    # 227x227x3, 96 filters 11x11 / 4, no padding -> 55x55x96 with 11*11*3*96 weights
    row = conv_arithmetic(227, 227, 3, f=11, s=4, p=0, k=96)
    assert row.output == (55, 55, 96)
    assert (row.weights, row.biases) == (34_848, 96)
    assert row.params == 34_944
    assert row.macs == 55 * 55 * 96 * 11 * 11 * 3 == 105_415_200


def test_lenet_c1_exercise():
    row = conv_arithmetic(32, 32, 1, f=5, s=1, p=0, k=6)
    assert row.output == (28, 28, 6)
    assert (row.weights, row.biases) == (150, 6)
    assert row.macs == 117_600


@pytest.mark.parametrize("w1, f, s, p, w2", [
    (10, 5, 1, 0, 6),     # the lecture's 5x5 kernel on a 10x10 input
    (5, 3, 1, 1, 5),      # P = 1 keeps a 3x3 convolution's size
    (7, 3, 2, 1, 4),      # stride 2 halves it (rounded up by the padding)
    (32, 5, 1, 2, 32),    # P = (F-1)/2 keeps the size for any odd F
    (56, 3, 1, 1, 56),
    (13, 3, 2, 0, 6),     # AlexNet pool5
])
def test_output_size_lecture_cases(w1, f, s, p, w2):
    assert output_size(w1, f, s, p) == w2


def test_non_whole_size_names_the_layer_and_inputs_that_work():
    with pytest.raises(SizeError) as info:
        output_size(224, 11, 4, 0, layer="conv1")  # the AlexNet paper's "224" does not tile
    message = str(info.value)
    assert info.value.layer == "conv1"
    assert "layer 'conv1'" in message and "not a whole number" in message
    assert "(224 - 11 + 2*0)/4 + 1 = 54.25" in message
    assert "223 or 227" in message                    # the widths next to 224 that tile
    assert "smallest input this layer takes is 11" in message


def test_non_positive_size_names_the_layer_and_smallest_input():
    with pytest.raises(SizeError) as info:
        output_size(1, 5, 1, 0, layer="c5")
    assert info.value.layer == "c5"
    assert "layer 'c5'" in str(info.value) and "= -3 is not positive" in str(info.value)
    assert "smallest input this layer takes is 5" in str(info.value)


def test_filter_larger_than_input_even_when_the_quotient_is_positive():
    # (3 - 5)/4 + 1 = 0.5: not positive-whole, and no filter position fits
    with pytest.raises(SizeError, match="smaller than the 5-wide filter"):
        output_size(3, 5, 4, 0, layer="x", rounding="floor")


@pytest.mark.parametrize("bad", [dict(w1=0), dict(f=0), dict(s=0), dict(p=-1), dict(f=2.5),
                                 dict(w1=True), dict(p=(1, -1)), dict(p=(1, 2, 3))])
def test_invalid_hyperparameters_raise_size_error(bad):
    args = {"w1": 32, "f": 3, "s": 1, "p": 0, **bad}
    with pytest.raises(SizeError, match="layer 'L'"):
        output_size(args["w1"], args["f"], args["s"], args["p"], layer="L")


def test_rounding_modes():
    # torchvision AlexNet conv1: (224 - 11 + 4)/4 + 1 = 55.25 -> frameworks floor to 55
    assert output_size(224, 11, 4, 2, rounding="floor") == 55
    # ResNet / GoogLeNet conv1: (224 - 7 + 6)/2 + 1 = 112.5 -> 112 (the last column is dropped)
    assert output_size(224, 7, 2, 3, rounding="floor") == 112
    with pytest.raises(SizeError, match="112.5 is not a whole number"):
        output_size(224, 7, 2, 3)
    with pytest.raises(SizeError):
        output_size(224, 11, 4, 2)
    # GoogLeNet pool1 in Caffe: (112 - 3)/2 + 1 = 55.5 -> ceil 56 (Table 1 says 56x56), floor 55
    assert output_size(112, 3, 2, 0, rounding="ceil") == 56
    assert output_size(112, 3, 2, 0, rounding="floor") == 55
    with pytest.raises(ValueError, match="rounding"):
        output_size(112, 3, 2, 0, rounding="round")


def test_asymmetric_padding_and_keras_same():
    assert same_padding(224, 3, 2) == (0, 1)         # Keras pads the odd pixel after
    assert same_padding(112, 3, 2) == (0, 1)         # = Caffe's ceil-mode pool: 56
    assert same_padding(56, 3, 1) == (1, 1)          # stride 1: the lecture's (F-1)/2
    assert same_padding(28, 5, 1) == (2, 2)
    assert same_padding(7, 1, 1) == (0, 0)
    assert same_padding(224, 7, 2) == (2, 3)
    assert output_size(224, 3, 2, (0, 1)) == 112
    assert output_size(112, 3, 2, same_padding(112, 3, 2)) == 56
    with pytest.raises(SizeError, match=r"\(W1 - F \+ P1 \+ P2\)/S \+ 1 = \(224 - 4 \+ 0 \+ 1\)/2"):
        output_size(224, 4, 2, (0, 1), layer="pool")


def test_min_input_size():
    assert min_input_size(11, 4) == 11
    assert min_input_size(5) == 5
    assert min_input_size(3, 2, 1) == 1
    assert min_input_size(4, 3, 0) == 4
    assert min_input_size(2, 2, (0, 1)) == 1
    for f, s, p in [(11, 4, 0), (3, 2, 1), (5, 3, 1), (7, 2, 3)]:
        smallest = min_input_size(f, s, p)
        assert output_size(smallest, f, s, p) >= 1
        with pytest.raises(SizeError):
            output_size(smallest - 1, f, s, p) if smallest > 1 else output_size(0, f, s, p)


def test_parameter_and_mac_formulas():
    # AlexNet conv2 on two GPUs: 256 filters of 5x5x48 (groups=2 halves the weights)
    assert conv_params(5, 96, 256, groups=2) == (307_200, 256)
    assert conv_params(5, 96, 256) == (614_400, 256)
    assert conv_macs(27, 27, 5, 96, 256, groups=2) == 223_948_800
    assert conv_params(3, 64, 64, bias=False) == (36_864, 0)     # ResNet 3x3 conv, no bias
    assert conv_params(7, 3, 64, fh=1) == (7 * 1 * 3 * 64, 64)   # a 1x7 kernel
    assert dense_params(9216, 4096) == (37_748_736, 4096)        # AlexNet fc6
    assert dense_macs(9216, 4096) == 37_748_736
    assert dense_macs(64, 10, positions=49) == 31_360
    assert batch_norm_params(64) == (128, 0)                     # gamma + beta as weights
    assert batch_norm_params(64, scale=False) == (64, 0)


def test_grouped_conv_must_divide_depth():
    with pytest.raises(SizeError, match="groups=3"):
        conv_arithmetic(27, 27, 96, f=5, k=256, p=2, groups=3, layer="conv2")


def test_pool_arithmetic():
    assert pool_arithmetic(55, 55, 96, f=3, s=2) == (27, 27, 96, 0, 0, 0)   # AlexNet pool1
    assert pool_arithmetic(28, 28, 6, f=2).output == (14, 14, 6)             # LeNet S2
    with pytest.raises(SizeError, match="layer 'pool'"):
        pool_arithmetic(28, 28, 6, f=3, layer="pool")                        # 3/3 does not tile 28


def test_docstring_examples():
    assert doctest.testmod(arithmetic).failed == 0
