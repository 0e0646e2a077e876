"""The convolution primer: the lecture's 1D and 2D definitions, by hand and against Keras."""

import doctest
import itertools

import numpy as np
import pytest

from kerascnn import primer
from kerascnn.arithmetic import SizeError
from kerascnn.primer import (BLUR_BOX, BLUR_GAUSSIAN, EDGE_LAPLACIAN, EDGE_LAPLACIAN_8, KERNELS,
                             LECTURE_1D_W, LECTURE_1D_X, SHARPEN, SOBEL_X, SOBEL_Y, conv1d, conv2d,
                             filter_image)

# --- 1D ---------------------------------------------------------------------------------------


def test_s6_is_the_lectures_sum():
    x, w = LECTURE_1D_X, LECTURE_1D_W
    w0, w_1, w_2, w_3, w_4, w_5, w_6 = w[::-1]  # the list is [w_-6, ..., w_0]
    s6 = x[6] * w0 + x[5] * w_1 + x[4] * w_2 + x[3] * w_3 + x[2] * w_4 + x[1] * w_5 + x[0] * w_6
    assert s6 == pytest.approx(0.5 * 1.9 + 0.4 * 1.8 + 0.04 * 1.7 + 0.02 * 1.4 + 0.02 * 1.2
                               + 0.01 * 1.1 + 0.01 * 1.0)
    assert conv1d(x, w)[0] == pytest.approx(s6) == pytest.approx(1.811)


def test_worked_example():
    s = conv1d(LECTURE_1D_X, LECTURE_1D_W)  # s_6 ... s_11
    np.testing.assert_allclose(s, [1.811, 1.967, 2.112, 2.269, 2.413, 2.569], atol=1e-12)
    # the lecture prints 1.80, 1.96, 2.11 for s_6..s_8: equal to within its 2-decimal rounding
    np.testing.assert_allclose(s[:3], [1.80, 1.96, 2.11], atol=0.0111)


def test_lectures_later_values_are_not_a_moving_average_of_x():
    # Every step of x rises by >= 0.10 and w >= 0 sums to 1, so consecutive outputs of any
    # window of w over x rise by >= 0.10: the printed 2.11 -> 2.16 (s_8 -> s_9) cannot be one.
    x, w = np.array(LECTURE_1D_X), np.array(LECTURE_1D_W)
    assert np.diff(x).min() == pytest.approx(0.10) and w.min() >= 0 and w.sum() == pytest.approx(1)
    assert np.diff(conv1d(x, w)).min() >= 0.10 - 1e-12
    assert 2.16 - 2.11 < 0.10 - 0.01  # even allowing for the printed rounding


def test_definition_against_numpy():
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=20), rng.normal(size=5)
    m = len(w)
    by_definition = [sum(x[t - a] * w[m - 1 - a] for a in range(m)) for t in range(m - 1, len(x))]
    np.testing.assert_allclose(conv1d(x, w), by_definition)
    np.testing.assert_allclose(conv1d(x, w), np.convolve(x, w[::-1], "valid"))
    np.testing.assert_allclose(conv1d(x, w), np.correlate(x, w, "valid"))


def test_causal_mode_and_moving_average():
    s = conv1d(LECTURE_1D_X, LECTURE_1D_W, causal=True)
    assert len(s) == 12
    assert s[0] == pytest.approx(0.5 * 1.00)            # no history before x_0
    assert s[1] == pytest.approx(0.5 * 1.10 + 0.4 * 1.00)
    np.testing.assert_allclose(s[6:], conv1d(LECTURE_1D_X, LECTURE_1D_W))
    np.testing.assert_allclose(conv1d(np.full(10, 3.0), LECTURE_1D_W), 3.0)  # weights sum to 1


def test_conv1d_errors():
    with pytest.raises(SizeError, match="needs 7"):
        conv1d([1.0, 2.0], LECTURE_1D_W)
    with pytest.raises(ValueError, match="1D"):
        conv1d(np.ones((3, 3)), [1.0])


# --- 2D ---------------------------------------------------------------------------------------

LETTERS = "abcdefghijkl"
# the lecture's toy example: 3x4 input [[a,b,c,d],[e,f,g,h],[i,j,k,l]], 2x2 kernel [[w,x],[y,z]]
EXPECTED = [["a*w + b*x + e*y + f*z", "b*w + c*x + f*y + g*z", "c*w + d*x + g*y + h*z"],
            ["e*w + f*x + i*y + j*z", "f*w + g*x + j*y + k*z", "g*w + h*x + k*y + l*z"]]


def test_toy_example_symbolically():
    sympy = pytest.importorskip("sympy")
    image = np.array(sympy.symbols(" ".join(LETTERS)), dtype=object).reshape(3, 4)
    kernel = np.array(sympy.symbols("w x y z"), dtype=object).reshape(2, 2)
    out = conv2d(image, kernel)
    assert out.shape == (2, 3)
    for i, j in itertools.product(range(2), range(3)):
        assert sympy.expand(out[i, j] - sympy.sympify(EXPECTED[i][j])) == 0


def test_toy_example_with_primes():
    primes = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53]
    values = dict(zip(LETTERS + "wxyz", primes))
    image = np.array([values[c] for c in LETTERS]).reshape(3, 4)
    kernel = np.array([values[c] for c in "wxyz"]).reshape(2, 2)
    out = conv2d(image, kernel)
    expected = [[eval(term, {}, values) for term in row] for row in EXPECTED]
    np.testing.assert_array_equal(out, expected)
    # cross-correlation, not a flipped convolution: the flipped kernel gives other numbers
    assert not np.array_equal(out, conv2d(image, kernel[::-1, ::-1]))


def test_kernel_is_centred_and_not_flipped():
    image = np.zeros((7, 7))
    image[2, 3] = 1.0
    kernel = np.arange(1.0, 10.0).reshape(3, 3)
    out = conv2d(image, kernel, padding="same")
    assert out.shape == (7, 7)
    # an impulse's response is the kernel rotated by 180 degrees, centred on the impulse
    np.testing.assert_array_equal(out[1:4, 2:5], kernel[::-1, ::-1])
    assert out.sum() == kernel.sum()


@pytest.mark.parametrize("size, f, s, p, out", [(5, 3, 1, 1, 5), (7, 3, 2, 1, 4), (10, 5, 1, 0, 6),
                                                 (32, 5, 1, 0, 28)])
def test_output_sizes_follow_the_formula(size, f, s, p, out):
    assert conv2d(np.ones((size, size)), np.ones((f, f)), stride=s, padding=p).shape == (out, out)


def _keras_conv(image, kernel, bias, stride, padding):
    import keras
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))[None]
    layer = keras.layers.Conv2D(kernel.shape[-1], kernel.shape[:2], strides=stride)
    layer.build(padded.shape)
    layer.set_weights([kernel, bias])
    by_layer = keras.ops.convert_to_numpy(layer(padded))[0]
    by_op = keras.ops.convert_to_numpy(keras.ops.conv(padded, kernel, strides=stride))[0] + bias
    return by_layer, by_op


@pytest.mark.parametrize("shape, kernel_shape, stride, padding", [
    ((9, 11, 3), (3, 3, 3, 4), 2, 1),    # RGB, 4 filters, stride 2, P = 1
    ((8, 8, 5), (5, 5, 5, 2), 1, 2),     # 5 channels, 'same' size
    ((12, 7, 2), (2, 3, 2, 6), 1, 0),    # rectangular image and kernel
    ((13, 13, 1), (4, 4, 1, 3), 3, 0),   # stride 3
])
def test_matches_keras(shape, kernel_shape, stride, padding):
    rng = np.random.default_rng(42)
    image = rng.normal(size=shape).astype("float32")
    kernel = rng.normal(size=kernel_shape).astype("float32")
    bias = rng.normal(size=kernel_shape[-1]).astype("float32")
    ours = conv2d(image, kernel, stride=stride, padding=padding, bias=bias)
    by_layer, by_op = _keras_conv(image, kernel, bias, stride, padding)
    assert ours.shape == by_layer.shape == (
        (shape[0] - kernel_shape[0] + 2 * padding) // stride + 1,
        (shape[1] - kernel_shape[1] + 2 * padding) // stride + 1, kernel_shape[-1])
    assert np.abs(ours - by_layer).max() < 1e-5
    assert np.abs(ours - by_op).max() < 1e-5


def test_same_padding_matches_keras_same():
    import keras
    rng = np.random.default_rng(1)
    image = rng.normal(size=(10, 10, 3)).astype("float32")
    kernel = rng.normal(size=(3, 3, 3, 8)).astype("float32")
    theirs = keras.ops.convert_to_numpy(keras.ops.conv(image[None], kernel, padding="same"))[0]
    assert np.abs(conv2d(image, kernel, padding="same") - theirs).max() < 1e-5


def test_one_filter_sums_over_depth():
    image = np.stack([np.full((4, 4), 1.0), np.full((4, 4), 10.0)], axis=-1)  # D1 = 2
    out = conv2d(image, np.ones((3, 3, 2)))
    assert out.shape == (2, 2)                                # one filter: one 2D map
    np.testing.assert_array_equal(out, 9 * 1.0 + 9 * 10.0)


def test_conv2d_errors():
    with pytest.raises(ValueError, match="D1 = 3"):
        conv2d(np.ones((5, 5, 3)), np.ones((3, 3, 2)))
    with pytest.raises(ValueError, match="odd kernel"):
        conv2d(np.ones((5, 5)), np.ones((2, 2)), padding="same")
    with pytest.raises(ValueError, match="stride"):
        conv2d(np.ones((5, 5)), np.ones((3, 3)), stride=0)
    with pytest.raises(SizeError, match="layer 'conv2d'"):
        conv2d(np.ones((2, 2)), np.ones((3, 3)))


# --- the lecture's kernels ----------------------------------------------------------------------

CONSTANT = np.full((6, 7), 5.0)
STEP = np.repeat([[0.0] * 4 + [1.0] * 4], 6, axis=0)   # a vertical edge between columns 3 and 4


@pytest.mark.parametrize("kernel", [BLUR_BOX, BLUR_GAUSSIAN])
def test_blur_preserves_a_constant_image(kernel):
    assert kernel.sum() == pytest.approx(1.0) and (kernel > 0).all()
    np.testing.assert_allclose(conv2d(CONSTANT, kernel), 5.0)
    blurred = conv2d(STEP, kernel)
    assert 0 < blurred[0, 2] < 1  # the edge gets soft
    assert BLUR_GAUSSIAN[1, 1] == 4 / 16 and BLUR_BOX[1, 1] == pytest.approx(1 / 9)


def test_sharpen_sums_to_one_and_steepens_an_edge():
    np.testing.assert_array_equal(SHARPEN, [[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
    assert SHARPEN.sum() == 1
    np.testing.assert_allclose(conv2d(CONSTANT, SHARPEN), 5.0)
    out = conv2d(STEP, SHARPEN)
    assert out[0, 2] == -1 and out[0, 3] == 2  # undershoot before the edge, overshoot after it


@pytest.mark.parametrize("kernel", [EDGE_LAPLACIAN, EDGE_LAPLACIAN_8, SOBEL_X, SOBEL_Y])
def test_edge_kernels_ignore_constant_images(kernel):
    assert kernel.sum() == 0
    np.testing.assert_array_equal(conv2d(CONSTANT, kernel), 0.0)


def test_edge_kernels_respond_on_a_step_edge():
    np.testing.assert_array_equal(EDGE_LAPLACIAN, [[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    np.testing.assert_array_equal(EDGE_LAPLACIAN_8, [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]])
    for kernel, near, far in [(EDGE_LAPLACIAN, 1, 0), (EDGE_LAPLACIAN_8, -3, 0)]:
        out = conv2d(STEP, kernel)                   # valid columns 0..5 centred on 1..6
        assert out[0, 2] == near and out[0, 0] == far and out[0, 5] == 0
    gx, gy = conv2d(STEP, SOBEL_X), conv2d(STEP, SOBEL_Y)
    np.testing.assert_array_equal(gx[:, 2:4], 4.0)   # the vertical edge: a strong x-gradient
    np.testing.assert_array_equal(gx[:, [0, 5]], 0.0)
    np.testing.assert_array_equal(gy, 0.0)           # and no y-gradient
    np.testing.assert_array_equal(conv2d(STEP.T, SOBEL_Y)[2:4, :], 4.0)
    np.testing.assert_array_equal(SOBEL_Y, SOBEL_X.T)


def test_kernel_constants_are_read_only():
    assert set(KERNELS) >= {"blur", "gaussian", "sharpen", "laplacian", "edge", "sobel_x",
                            "sobel_y"}
    with pytest.raises(ValueError):
        BLUR_BOX[0, 0] = 1.0


def test_filter_image_keeps_size_and_filters_each_channel():
    rng = np.random.default_rng(3)
    rgb = rng.uniform(0, 255, size=(10, 12, 3))
    out = filter_image(rgb, BLUR_GAUSSIAN)
    assert out.shape == rgb.shape
    np.testing.assert_allclose(out[..., 1], conv2d(rgb[..., 1], BLUR_GAUSSIAN, padding="same"))
    np.testing.assert_allclose(filter_image(np.full((5, 5, 3), 7.0), BLUR_BOX)[1:-1, 1:-1], 7.0)


def test_docstring_examples():
    assert doctest.testmod(primer).failed == 0
