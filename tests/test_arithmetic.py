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


# --- receptive fields: r_out = r_in + (F-1) j_in, j_out = j_in S,
#     start_out = start_in + ((F-1)/2 - P) j_in

from kerascnn.arithmetic import (ReceptiveField, merge_receptive_fields,  # noqa: E402
                                 receptive_field_step)
from kerascnn.receptive_fields import receptive_fields  # noqa: E402


def _chain(*layers):
    """(r, j, start) after a chain of (F, S, P) layers, from the image's (1, 1, 0)."""
    field = (1, 1, 0.0)
    for layer in layers:
        field = receptive_field_step(*field, *layer)
    return field


def test_receptive_field_hand_cases():
    # Simonyan & Zisserman 2014, section 2.3: two stacked 3x3 convs see 5x5, three see 7x7
    assert _chain((3, 1, 1), (3, 1, 1))[0] == 5
    assert _chain((3, 1, 1), (3, 1, 1), (3, 1, 1))[0] == 7
    assert _chain((5, 1, 0)) == (5, 1, 2.0)                      # LeNet C1: centred at pixel 2
    assert _chain((5, 1, 0), (2, 2, 0)) == (6, 2, 2.5)           # + S2: 2x2/2 pool
    assert _chain((5, 1, 0), (2, 2, 0), (5, 1, 0), (2, 2, 0), (5, 1, 0)) == (32, 4, 15.5)  # C5
    assert _chain((3, 2, 1), (3, 2, 1)) == (7, 4, 0.0)           # padding (F-1)/2 keeps start 0
    assert _chain((3, 2, (0, 1))) == (3, 2, 1.0)                 # Keras "same" /2: pads 0 before
    assert receptive_field_step(1, 1, 0.0, 3, dilation=2) == (5, 1, 2.0)
    assert _chain((1, 2, 0), (3, 1, 1)) == (5, 2, 0.0)           # ResNet v1: stride on the 1x1
    with pytest.raises(SizeError, match="layer 'c'"):
        receptive_field_step(1, 1, 0.0, 0, layer="c")


def test_merge_takes_the_union_of_the_fields():
    assert merge_receptive_fields([(5, 2, 0.0), (1, 2, 0.0)]) == (5, 2, 0.0)   # residual add
    assert merge_receptive_fields([(3, 1, 1.0), (5, 1, 2.0), (1, 1, 0.0)]) == (5, 1, 2.0)
    assert merge_receptive_fields([(3, 1, 5.0), (3, 1, 1.0)]) == (7, 1, 3.0)    # offset fields
    with pytest.raises(SizeError, match="different jumps"):
        merge_receptive_fields([(3, 1, 1.0), (3, 2, 1.0)], layer="add")


def test_receptive_field_record_boxes():
    field = ReceptiveField("c3", "Conv2D", (14, 14), (2, 2), (6.5, 6.5), (10, 10))
    assert (field.r, field.j) == (14, 2)
    assert field.center(0, 9) == (6.5, 24.5)
    assert field.box(0, 0) == (0, 0, 14, 14) and field.box(9, 9) == (18, 18, 32, 32)
    padded = ReceptiveField("conv2", "Conv2D", (7, 5), (2, 2), (0.0, 0.0), (16, 16))
    assert (padded.r, padded.j) == ((7, 5), 2)
    assert padded.box(0, 0) == (-3, -2, 4, 3)
    assert padded.clipped_box(0, 0, 32, 32) == (0, 0, 4, 3)


def _fields(name, **options):
    import kerascnn
    return receptive_fields(kerascnn.get_model(name, **options))


@pytest.mark.parametrize("variant, size", [("alexnet", 67), ("alexnet_owt", 95),
                                           ("alexnet_lecture", 227)])
def test_alexnet_conv5_sees_163_pixels(variant, size):
    """conv5 = 163 (and pool5 = 195) in all three variants: they share the kernels and strides
    11/4, 3/2, 5/1, 3/2, 3/1 x3, 3/2 and differ only in padding, which moves start, not r."""
    fields = _fields(variant, num_classes=10, input_shape=(size, size, 3))
    assert (fields["conv1"].r, fields["conv1"].j) == (11, 4)
    assert (fields["conv5"].r, fields["conv5"].j) == (163, 16)
    assert (fields["pool5"].r, fields["pool5"].j) == (195, 32)
    # the paper's unpadded networks centre conv1's first unit on pixel 5; owt pads conv1 by 2
    assert fields["conv1"].start[0] == (3.0 if variant == "alexnet_owt" else 5.0)


def test_zfnet_and_vgg16_against_faster_rcnn():
    """Ren et al. 2015 (Faster R-CNN, section 3.1): the RPN's 3x3 conv on the last conv layer sees
    "171 and 228 pixels for ZF and VGG": conv5 + 2 x 16 (a 3x3 at jump 16)."""
    zf = _fields("zfnet", num_classes=10, input_shape=(224, 224, 3))
    assert (zf["conv5"].r, zf["conv5"].j) == (139, 16)
    assert zf["conv5"].r + 2 * zf["conv5"].j == 171
    vgg = _fields("vgg16", num_classes=10, input_shape=(32, 32, 3))
    assert (vgg["block5_conv3"].r, vgg["block5_conv3"].j) == (196, 16)
    assert vgg["block5_conv3"].r + 2 * vgg["block5_conv3"].j == 228
    assert (vgg["block5_pool"].r, vgg["block5_pool"].j) == (212, 32)   # the often-quoted 212


@pytest.mark.parametrize("stride_on, r", [("3x3", 427), ("1x1", 483)])
def test_resnet50_final_layer(stride_on, r):
    """torchvision-style ResNet-50 (7x7/2 stem, 3x3/2 max-pool, stride on the 3x3: v1.5): 427. The
    paper's v1 (stride on the first 1x1, as keras.applications and TF-slim's resnet_v1_50) adds
    the later 3x3s at twice the jump: 483."""
    fields = _fields("resnet50", num_classes=10, input_shape=(64, 64, 3), stride_on=stride_on)
    assert (fields["pool1_pool"].r, fields["pool1_pool"].j) == (11, 4)
    assert (fields["conv5_block3_out"].r, fields["conv5_block3_out"].j) == (r, 32)
    assert fields["conv5_block3_out"].start == (0.0, 0.0)  # symmetric padding throughout


def test_inception_concatenation_takes_the_widest_branch():
    fields = _fields("googlenet", num_classes=10, input_shape=(224, 224, 3))
    branches = [fields[f"inception_3a_{b}"] for b in ("1x1", "3x3", "5x5", "pool_proj")]
    merged = fields["inception_3a_output"]
    assert merged.r == max(b.r for b in branches) == fields["inception_3a_5x5"].r
    assert merged.j == 8 and merged.start == fields["inception_3a_5x5"].start


def test_lenet_and_non_spatial_layers():
    fields = _fields("lenet5", num_classes=10)
    assert [fields[n].r for n in ("c1", "s2", "c3", "s4", "c5")] == [5, 6, 14, 16, 32]
    assert fields["image"].r == 1 and fields["c5"].output == (1, 1)
    assert fields["f6"].output is None and fields["f6"].r == 32
    paper = _fields("lenet5_1998", num_classes=10)   # trainable subsampling, C3's table
    assert [paper[n].r for n in ("c1", "s2", "c3", "s4", "c5")] == [5, 6, 14, 16, 32]


def test_a_layer_without_a_field_is_left_out_or_raises():
    import keras
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(1, 3, name="conv")(inputs)
    x = keras.layers.Conv2DTranspose(1, 3, strides=2, name="up")(x)
    x = keras.layers.Conv2D(1, 3, name="after")(x)
    model = keras.Model(inputs, x)
    fields = receptive_fields(model)
    assert fields["conv"].r == 3 and "up" not in fields and "after" not in fields
    with pytest.raises(ValueError, match="transposed"):
        receptive_fields(model, strict=True)
