"""The convolution primer: the lecture's 1D and 2D convolutions in plain NumPy.

These are the definitions the lecture starts from, written out so every number can be checked by
hand, before Keras' ``Conv2D`` takes over (the tests check that both agree).

**1D** (a noisy sensor smoothed by a weighted moving average)::

    s_t = sum_{a=0}^{m-1} x_{t-a} w_{-a}        e.g. s_6 = x_6 w_0 + x_5 w_-1 + ... + x_0 w_-6

The filter is indexed backwards in time: ``w_0`` weighs the current sample ``x_t``, ``w_{-1}`` the
one before, and so on. Written as a Python list ``w = [w_-6, ..., w_-1, w_0]``, the **last element
weighs the most recent sample**: ``w_{-a}`` is ``w[m-1-a]``, so
``s_t = sum_j w[j] * x[t-(m-1)+j]`` (a sliding dot product, i.e. ``numpy.correlate`` in "valid"
mode). The first output is ``s_{m-1}``, the first time step with a full window of history.

On the lecture's example (:data:`LECTURE_1D_X`, :data:`LECTURE_1D_W`) this gives s_6 ... s_11 =
1.811, 1.967, 2.112, 2.269, 2.413, 2.569. The slide prints 1.80, 1.96, 2.11, 2.16, 2.28, 2.42: the
first three agree to about 0.01, the last three cannot come from this x under *any* indexing. Every
step of x rises by at least 0.10 and the weights are >= 0 and sum to 1, so consecutive outputs of
any sliding window must rise by at least 0.10, whereas the slide goes 2.11 -> 2.16.

**2D** (deep learning's "convolution" is cross-correlation: the kernel is not flipped)::

    S(i, j) = sum_m sum_n I(i*S + m, j*S + n) K(m, n)            (I zero-padded by P)

For an odd ``F x F`` kernel with ``P = (F-1)/2`` and stride 1, output ``(i, j)`` is the kernel
centred on input pixel ``(i, j)``. With ``D1`` input channels a filter is ``F x F x D1`` and sums
over depth too; ``K`` filters give ``D2 = K`` output channels. Kernels use Keras' layout
``(F, F, D1, K)`` so they can be copied into a ``Conv2D`` layer unchanged.
"""

from __future__ import annotations

import numpy as np

from .arithmetic import SizeError, output_size

__all__ = ["conv1d", "conv2d", "filter_image", "BLUR", "BLUR_BOX", "BLUR_GAUSSIAN", "SHARPEN",
           "EDGE", "EDGE_LAPLACIAN", "EDGE_LAPLACIAN_8", "SOBEL_X", "SOBEL_Y", "KERNELS",
           "LECTURE_1D_X", "LECTURE_1D_W"]

#: The lecture's worked 1D example: laser readings of an aircraft's position ...
LECTURE_1D_X = (1.00, 1.10, 1.20, 1.40, 1.70, 1.80, 1.90, 2.10, 2.20, 2.40, 2.50, 2.70)
#: ... and the smoothing filter ``[w_-6, ..., w_0]``: the latest readings weigh the most.
LECTURE_1D_W = (0.01, 0.01, 0.02, 0.02, 0.04, 0.4, 0.5)

#: Box blur: every output is the mean of its 3x3 neighbourhood.
BLUR_BOX = np.full((3, 3), 1 / 9)
#: Gaussian blur: a binomial approximation of a Gaussian, nearer pixels weigh more.
BLUR_GAUSSIAN = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
BLUR = BLUR_BOX
#: Sharpen: the pixel minus its 4 neighbours' excess over it (identity + negative Laplacian).
SHARPEN = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=float)
#: Edge detection: the 4-neighbour Laplacian ...
EDGE_LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=float)
#: ... and the 8-neighbour one (the lecture also shows its negative, centre -8).
EDGE_LAPLACIAN_8 = np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]], dtype=float)
EDGE = EDGE_LAPLACIAN_8
#: Sobel gradients: SOBEL_X responds to vertical edges (changes along x), SOBEL_Y to horizontal.
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=float)
SOBEL_Y = SOBEL_X.T.copy()

KERNELS = {"blur": BLUR_BOX, "gaussian": BLUR_GAUSSIAN, "sharpen": SHARPEN,
           "laplacian": EDGE_LAPLACIAN, "edge": EDGE_LAPLACIAN_8, "sobel_x": SOBEL_X,
           "sobel_y": SOBEL_Y}
for _kernel in KERNELS.values():
    _kernel.setflags(write=False)  # module constants: a caller's in-place edit must not leak


def conv1d(x, w, *, causal: bool = False) -> np.ndarray:
    """The lecture's 1D convolution ``s_t = sum_a x_{t-a} w_{-a}``; ``w``'s last element is ``w_0``.

    By default only time steps with a full window are returned: ``s_{m-1} ... s_{n-1}`` (n - m + 1
    values, NumPy's "valid"). ``causal=True`` returns ``s_0 ... s_{n-1}``, taking the history
    before ``x_0`` as zeros.

    >>> conv1d(LECTURE_1D_X, LECTURE_1D_W).round(3)    # s_6 ... s_11
    array([1.811, 1.967, 2.112, 2.269, 2.413, 2.569])
    """
    x = np.asarray(x)
    w = np.asarray(w)
    if x.ndim != 1 or w.ndim != 1 or w.size == 0:
        raise ValueError(f"conv1d takes a 1D signal and a non-empty 1D filter, got shapes "
                         f"{x.shape} and {w.shape}")
    m = w.size
    if causal:
        x = np.concatenate([np.zeros(m - 1, dtype=x.dtype), x])
    if x.size < m:
        raise SizeError(f"conv1d: the signal has {x.size} samples but the filter needs {m}; pass "
                        f"at least {m} samples or causal=True", layer="conv1d")
    # s_t = sum_a x[t-a] * w[m-1-a]: window x[t-m+1 .. t] against w in its written order.
    windows = np.lib.stride_tricks.sliding_window_view(x, m)
    return np.dot(windows, w)


def conv2d(image, kernel, stride=1, padding=0, bias=None) -> np.ndarray:
    """The lecture's 2D convolution (cross-correlation) with stride ``S`` and zero padding ``P``.

    ``image`` is ``(H, W)`` or ``(H, W, D1)``; ``kernel`` is ``(F, F)``, ``(F, F, D1)`` (one filter)
    or ``(F, F, D1, K)`` (K filters, Keras' layout). The output is ``(H2, W2)`` for one filter,
    ``(H2, W2, K)`` for ``K``, with ``W2 = (W1 - F + 2P)/S + 1`` (floored, as Keras does).
    ``stride`` and ``padding`` take an int or an (h, w) pair; ``padding="same"`` pads an odd kernel
    by ``(F-1)/2`` so each output is the kernel centred on its input pixel. Works on object arrays
    (e.g. sympy symbols) as well as numbers.

    >>> conv2d(np.arange(12).reshape(3, 4), np.array([[1, 0], [0, 1]]))   # a + f, b + g, ...
    array([[ 5,  7,  9],
           [13, 15, 17]])
    """
    image = np.asarray(image)
    kernel = np.asarray(kernel)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, D1), got shape {image.shape}")
    flat = image.ndim == 2
    if flat:
        image = image[..., None]
    d1 = image.shape[2]
    single = kernel.ndim in (2, 3)
    if kernel.ndim == 2:
        kernel = kernel[:, :, None]
    if kernel.ndim == 3:
        kernel = kernel[..., None]
    if kernel.ndim != 4 or kernel.shape[2] != d1:
        raise ValueError(f"kernel must be (F, F), (F, F, D1) or (F, F, D1, K) with D1 = {d1} (the "
                         f"image's depth), got shape {np.shape(kernel)}")
    fh, fw = kernel.shape[:2]
    sh, sw = _pair(stride, "stride")
    if padding == "same":
        if fh % 2 == 0 or fw % 2 == 0:
            raise ValueError(f"padding='same' centres the kernel on each pixel, which needs an odd "
                             f"kernel; got {fh}x{fw}: pass an integer padding instead")
        ph, pw = (fh - 1) // 2, (fw - 1) // 2
    else:
        ph, pw = _pair(padding, "padding", lowest=0)
    h2 = output_size(image.shape[0], fh, sh, ph, layer="conv2d", rounding="floor")
    w2 = output_size(image.shape[1], fw, sw, pw, layer="conv2d", rounding="floor")
    padded = np.pad(image, ((ph, ph), (pw, pw), (0, 0)), constant_values=0)
    # windows[i, j] is the F x F x D1 patch under output (i, j): rows i*S .. i*S + F - 1.
    windows = np.lib.stride_tricks.sliding_window_view(padded, (fh, fw), axis=(0, 1))
    windows = windows[::sh, ::sw][:h2, :w2]                 # (H2, W2, D1, Fh, Fw)
    out = np.tensordot(windows, kernel.transpose(2, 0, 1, 3), axes=([2, 3, 4], [0, 1, 2]))
    if bias is not None:
        out = out + np.asarray(bias)
    return out[..., 0] if single else out


def filter_image(image, kernel) -> np.ndarray:
    """Apply one 2D ``kernel`` to every channel of ``image`` separately, keeping its size.

    This is how the lecture's blur/sharpen/edge pictures are made (padding "same", each colour
    channel filtered on its own); a CNN filter instead sums over all input channels
    (:func:`conv2d`).
    """
    image = np.asarray(image, dtype=float)
    kernel = np.asarray(kernel, dtype=float)
    if kernel.ndim != 2:
        raise ValueError(f"filter_image takes a 2D kernel, got shape {kernel.shape}")
    if image.ndim == 2:
        return conv2d(image, kernel, padding="same")
    return np.stack([conv2d(image[..., c], kernel, padding="same")
                     for c in range(image.shape[-1])], axis=-1)


def _pair(value, what, lowest=1):
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                 and v >= lowest for v in pair):
        raise ValueError(f"{what} must be an integer >= {lowest} or an (h, w) pair of them, "
                         f"got {value!r}")
    return tuple(int(v) for v in pair)
