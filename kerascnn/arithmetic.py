"""The lecture's size arithmetic for convolution and pooling layers.

    W2 = (W1 - F + 2P) / S + 1        H2 likewise        D2 = K

with F the receptive field (kernel size), S the stride, P the zero padding and K the number of
filters. A layer has F*F*D1*K weights and K biases, and costs W2*H2*K*F*F*D1 multiply-accumulates
(MACs). This module is the one home of that arithmetic: the network builders call it to validate
their layers while they are built, and ``kerascnn.inspect`` calls it to print the lecture's table.

The same F, S and P give each layer's receptive field in the input image
(:func:`kerascnn.receptive_fields.receptive_fields` walks a model with these):

    j_out = j_in * S    r_out = r_in + (F - 1) * j_in    start_out = start_in + ((F-1)/2 - P) * j_in

with r the field's size, j the jump (the distance in input pixels between neighbouring units of
the layer: the product of the strides so far) and start the centre of the first unit's field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["SizeError", "output_size", "min_input_size", "same_padding", "conv_params", "conv_macs",
           "dense_params", "dense_macs", "batch_norm_params", "LayerArithmetic", "conv_arithmetic",
           "pool_arithmetic", "ReceptiveField", "receptive_field_step", "merge_receptive_fields"]


class SizeError(ValueError):
    """A layer's output size is not a positive whole number.

    ``layer`` names the offending layer; the network registry adds the network's name and the
    smallest input that works before the error reaches the user.
    """

    def __init__(self, message: str, *, layer: str | None = None, min_size: int | None = None):
        super().__init__(message)
        self.layer = layer
        self.min_size = min_size  # set where an option raises the network's minimum


_ROUNDINGS = ("exact", "floor", "ceil")


def _padding_pair(p, layer):
    """``P`` as (before, after): an int pads both sides alike (the lecture's ``2P``)."""
    pair = tuple(p) if isinstance(p, (tuple, list)) else (p, p)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                 for v in pair):
        raise SizeError(f"{_where(layer)}P must be an integer >= 0 or a (before, after) pair of "
                        f"them, got {p!r}", layer=layer)
    return pair


def _check_int(label, value, lowest, layer):
    if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
        raise SizeError(f"{_where(layer)}{label} must be an integer >= {lowest}, got {value!r}",
                        layer=layer)


def output_size(w1: int, f: int, s: int = 1, p=0, *, layer: str | None = None,
                rounding: str = "exact") -> int:
    """Output width ``(W1 - F + 2P)/S + 1`` of a convolution or pooling layer.

    ``rounding="exact"`` is the lecture's rule: the division must come out whole, otherwise the
    filter does not tile the input and the hyperparameters are invalid. ``"floor"`` is what Keras,
    TensorFlow and PyTorch do by default (the last rows that do not fit are dropped); ``"ceil"`` is
    Caffe's pooling rule (ZFNet and GoogLeNet were trained with it). ``p`` may be a
    ``(before, after)`` pair for asymmetric padding (Keras ``"same"`` with stride 2,
    ``ZeroPadding2D``); ``2P`` is then their sum. A size that is not a positive whole number
    raises :class:`SizeError` naming ``layer`` and the smallest input width that works.

    >>> output_size(227, 11, 4, 0)      # AlexNet conv1
    55
    >>> output_size(32, 5, 1, 0)        # LeNet-5 C1
    28
    >>> output_size(224, 3, 2, (0, 1))  # Keras "same" 3x3/2 on 224: pads 0 before, 1 after
    112
    """
    for label, value, lowest in (("W1", w1, 1), ("F", f, 1), ("S", s, 1)):
        _check_int(label, value, lowest, layer)
    before, after = _padding_pair(p, layer)
    if rounding not in _ROUNDINGS:
        raise ValueError(f"rounding must be one of {_ROUNDINGS}, got {rounding!r}")
    numerator = w1 - f + before + after
    if before == after:
        formula = f"(W1 - F + 2P)/S + 1 = ({w1} - {f} + 2*{before})/{s} + 1"
    else:
        formula = f"(W1 - F + P1 + P2)/S + 1 = ({w1} - {f} + {before} + {after})/{s} + 1"
    formula += f" = {numerator / s + 1:g}"
    smallest = min_input_size(f, s, (before, after), rounding=rounding)
    if numerator < 0:
        problem = "is not positive" if numerator / s + 1 <= 0 else "is not a whole number >= 1"
        raise SizeError(f"{_where(layer)}{formula} {problem}: the {w1}-wide input is smaller than "
                        f"the {f}-wide filter plus padding; the smallest input this layer takes is "
                        f"{smallest}", layer=layer)
    if rounding == "exact" and numerator % s:
        fits = [w for w in (w1 - numerator % s, w1 + s - numerator % s) if w >= smallest]
        raise SizeError(f"{_where(layer)}{formula} is not a whole number: a {f}-wide filter with "
                        f"stride {s} does not tile a {w1}-wide input (widths that tile: "
                        f"{' or '.join(map(str, fits))}; the smallest input this layer takes is "
                        f"{smallest})", layer=layer)
    rounder = math.ceil if rounding == "ceil" else math.floor
    return rounder(numerator / s) + 1


def min_input_size(f: int, s: int = 1, p=0, *, rounding: str = "exact") -> int:
    """The smallest input width ``W1`` for which :func:`output_size` gives a valid output.

    The filter must fit once (``W1 - F + 2P >= 0``); with ``rounding="exact"`` the stride must also
    tile the input (``(W1 - F + 2P) % S == 0``).

    >>> min_input_size(11, 4)           # AlexNet conv1: 11, 15, 19, ... 227 all tile
    11
    >>> min_input_size(3, 2, 1)         # 3x3/2 pad 1: any width >= 1 fits
    1
    """
    before, after = _padding_pair(p, None)
    w1 = max(1, f - before - after)
    if rounding == "exact":
        w1 += -(w1 - f + before + after) % s
    return w1


def same_padding(w1: int, f: int, s: int = 1) -> tuple[int, int]:
    """The (before, after) zero padding of Keras/TensorFlow ``padding="same"``.

    The output is ``ceil(W1/S)`` wide; the padding that needs is split with the odd pixel after,
    so for stride 1 and odd F it is the lecture's ``P = (F-1)/2`` on both sides.

    >>> same_padding(56, 3, 1)
    (1, 1)
    >>> same_padding(224, 3, 2)
    (0, 1)
    """
    total = max((math.ceil(w1 / s) - 1) * s + f - w1, 0)
    return total // 2, total - total // 2


def conv_params(f: int, d1: int, k: int, *, groups: int = 1, bias: bool = True,
                fh: int | None = None) -> tuple[int, int]:
    """Weights and biases of a convolution: ``F*F*D1*K/groups`` and ``K``."""
    fh = f if fh is None else fh
    return fh * f * (d1 // groups) * k, (k if bias else 0)


def conv_macs(w2: int, h2: int, f: int, d1: int, k: int, *, groups: int = 1,
              fh: int | None = None) -> int:
    """Multiply-accumulates of a convolution for one image: ``W2*H2*K*F*F*D1/groups``."""
    fh = f if fh is None else fh
    return w2 * h2 * k * fh * f * (d1 // groups)


def dense_params(n_in: int, n_out: int, *, bias: bool = True) -> tuple[int, int]:
    """Weights and biases of a fully connected layer (its MACs equal its weights)."""
    return n_in * n_out, (n_out if bias else 0)


def dense_macs(n_in: int, n_out: int, *, positions: int = 1) -> int:
    """Multiply-accumulates of a fully connected layer for one image: ``n_in*n_out`` per position
    (a Dense applied to a feature map runs once per spatial position)."""
    return positions * n_in * n_out


def batch_norm_params(d: int, *, scale: bool = True, center: bool = True) -> tuple[int, int]:
    """Trainable parameters of batch normalisation over ``d`` channels, as (weights, biases).

    gamma (scale) and beta (offset) are both counted as *weights* here, as the layer table shows
    them; the moving mean and variance are statistics, not trainable parameters.
    """
    return d * (int(scale) + int(center)), 0


class LayerArithmetic(NamedTuple):
    """One row of the lecture's worked exercises: output volume, weights, biases and MACs."""

    w2: int
    h2: int
    d2: int
    weights: int
    biases: int
    macs: int

    @property
    def output(self) -> tuple[int, int, int]:
        """The output volume ``W2 x H2 x D2``."""
        return self.w2, self.h2, self.d2

    @property
    def params(self) -> int:
        return self.weights + self.biases


def conv_arithmetic(w1: int, h1: int, d1: int, *, f: int, k: int, s: int = 1, p=0, groups: int = 1,
                    bias: bool = True, layer: str | None = None,
                    rounding: str = "exact") -> LayerArithmetic:
    """A convolution's row of the lecture: ``W1xH1xD1`` through K filters ``FxF`` / S, pad P.

    >>> conv_arithmetic(227, 227, 3, f=11, s=4, p=0, k=96)     # AlexNet conv1
    LayerArithmetic(w2=55, h2=55, d2=96, weights=34848, biases=96, macs=105415200)
    """
    if groups < 1 or d1 % groups or k % groups:
        raise SizeError(f"{_where(layer)}groups={groups} must divide the input depth D1={d1} and "
                        f"the number of filters K={k}", layer=layer)
    w2 = output_size(w1, f, s, p, layer=layer, rounding=rounding)
    h2 = output_size(h1, f, s, p, layer=layer, rounding=rounding)
    weights, biases = conv_params(f, d1, k, groups=groups, bias=bias)
    return LayerArithmetic(w2, h2, k, weights, biases, conv_macs(w2, h2, f, d1, k, groups=groups))


def pool_arithmetic(w1: int, h1: int, d1: int, *, f: int, s: int | None = None, p=0,
                    layer: str | None = None, rounding: str = "exact") -> LayerArithmetic:
    """A pooling layer's row: same depth, no parameters, no MACs (anchors-zoo.md section 5).

    >>> pool_arithmetic(55, 55, 96, f=3, s=2)                  # AlexNet pool1 (overlapping)
    LayerArithmetic(w2=27, h2=27, d2=96, weights=0, biases=0, macs=0)
    """
    s = f if s is None else s
    w2 = output_size(w1, f, s, p, layer=layer, rounding=rounding)
    h2 = output_size(h1, f, s, p, layer=layer, rounding=rounding)
    return LayerArithmetic(w2, h2, d1, 0, 0, 0)


# --- receptive fields ---------------------------------------------------------------------------
#
# Coordinates are input pixel indices: pixel (0, 0) is centred at 0.0, so the input itself has
# r = 1, j = 1, start = 0. The field of unit i of a layer is centred at start + i*j and covers the
# pixels start + i*j - (r-1)/2 ... start + i*j + (r-1)/2 (those outside the image are padding).
# Each axis is computed on its own, so non-square kernels and inputs work.


def receptive_field_step(r: int, j: int, start: float, f: int, s: int = 1, p=0, *,
                         dilation: int = 1, layer: str | None = None) -> tuple[int, int, float]:
    """One layer's step of the receptive-field recurrences along one axis.

    ``(r, j, start)`` describe the layer's input (``(1, 1, 0.0)`` for the image), ``f``, ``s`` and
    ``p`` are the layer's F, S and P as in :func:`output_size` (``p`` may be a ``(before, after)``
    pair: only the padding *before* moves the first unit), ``dilation`` spreads the kernel to
    ``dilation*(F-1) + 1`` pixels. Returns the layer's ``(r, j, start)``::

        j_out = j * S      r_out = r + (F - 1) * j      start_out = start + ((F - 1)/2 - P) * j

    >>> receptive_field_step(1, 1, 0.0, 3)                 # one 3x3 convolution
    (3, 1, 1.0)
    >>> receptive_field_step(3, 1, 1.0, 3)                 # two of them see 5x5 (VGG, section 2.3)
    (5, 1, 2.0)
    >>> receptive_field_step(1, 1, 0.0, 11, 4)             # AlexNet conv1: 11 px, every 4 px
    (11, 4, 5.0)
    """
    for label, value, lowest in (("r", r, 1), ("j", j, 1), ("F", f, 1), ("S", s, 1),
                                 ("dilation", dilation, 1)):
        _check_int(label, value, lowest, layer)
    before, _ = _padding_pair(p, layer)
    span = dilation * (f - 1)
    return r + span * j, j * s, start + (span / 2 - before) * j


def merge_receptive_fields(fields, *, layer: str | None = None) -> tuple[int, int, float]:
    """The field of a unit of a merge layer (residual add, inception concatenation) along one axis.

    ``fields`` are the inputs' ``(r, j, start)``. A unit of the merge sees the union of what its
    inputs see: the span from the lowest to the highest pixel of their fields, which is the largest
    field when the inputs are centred alike (a residual block with symmetric padding). The inputs
    are one map size, so their jumps must agree; a mismatch raises :class:`SizeError`.

    >>> merge_receptive_fields([(3, 1, 1.0), (1, 1, 0.0)])  # 3x3 branch + 1x1 branch of a module
    (3, 1, 1.0)
    >>> merge_receptive_fields([(3, 1, 5.0), (3, 1, 1.0)])  # fields centred apart: their span
    (7, 1, 3.0)
    """
    fields = list(fields)
    if not fields:
        raise ValueError("merge_receptive_fields needs at least one input field")
    jumps = {j for _, j, _ in fields}
    if len(jumps) != 1:
        raise SizeError(f"{_where(layer)}the inputs of a merge have different jumps "
                        f"{sorted(jumps)} (their units are not spaced alike in the image), so a "
                        f"unit of the merge has no single receptive field", layer=layer)
    low = min(start - (r - 1) / 2 for r, _, start in fields)
    high = max(start + (r - 1) / 2 for r, _, start in fields)
    return int(round(high - low)) + 1, jumps.pop(), (low + high) / 2


@dataclass(frozen=True)
class ReceptiveField:
    """The receptive field of one layer's units, per axis as ``(height, width)`` pairs.

    ``size`` is r, ``jump`` j (input pixels between neighbouring units) and ``start`` the centre of
    unit (0, 0)'s field in input pixel coordinates (pixel (0, 0) is centred at 0.0; a negative
    start or a field reaching past the image means padding). ``output`` is the layer's map size
    ``(H2, W2)``, ``None`` once the volume is flattened (such a layer's field is the last map's).
    ``type`` is the Keras layer class.
    """

    layer: str
    type: str
    size: tuple[int, int]
    jump: tuple[int, int]
    start: tuple[float, float]
    output: tuple[int, int] | None = None

    @property
    def r(self):
        """The field size as the lecture writes it: an int when square, else ``(h, w)``."""
        return self.size[0] if self.size[0] == self.size[1] else self.size

    @property
    def j(self):
        """The jump (cumulative stride): an int when both axes agree, else ``(h, w)``."""
        return self.jump[0] if self.jump[0] == self.jump[1] else self.jump

    def center(self, row: int, col: int) -> tuple[float, float]:
        """The centre ``(y, x)`` in input pixels of the field of unit ``(row, col)``."""
        return self.start[0] + row * self.jump[0], self.start[1] + col * self.jump[1]

    def box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """Unit ``(row, col)``'s field as ``(top, left, bottom, right)`` input pixels, bottom and
        right exclusive (``image[top:bottom, left:right]``), not clipped to the image."""
        y, x = self.center(row, col)
        top, left = int(round(y - (self.size[0] - 1) / 2)), int(round(x - (self.size[1] - 1) / 2))
        return top, left, top + self.size[0], left + self.size[1]

    def clipped_box(self, row: int, col: int, height: int, width: int) -> tuple[int, int, int, int]:
        """:meth:`box` clipped to a ``height x width`` image: the pixels that feed the unit."""
        top, left, bottom, right = self.box(row, col)
        return max(top, 0), max(left, 0), min(bottom, height), min(right, width)


def _where(layer: str | None) -> str:
    return f"layer '{layer}': " if layer else ""
