"""The lecture's size arithmetic for convolution and pooling layers.

    W2 = (W1 - F + 2P) / S + 1        H2 likewise        D2 = K

with F the receptive field (kernel size), S the stride, P the zero padding and K the number of
filters. A layer has F*F*D1*K weights and K biases, and costs W2*H2*K*F*F*D1 multiply-accumulates
(MACs). This module is the one home of that arithmetic: the network builders call it to validate
their layers while they are built, and ``kerascnn.inspect`` calls it to print the lecture's table.
"""

from __future__ import annotations

import math

__all__ = ["SizeError", "output_size", "conv_params", "conv_macs", "dense_params"]


class SizeError(ValueError):
    """A layer's output size is not a positive whole number.

    ``layer`` names the offending layer; the network registry adds the network's name and the
    smallest input that works before the error reaches the user.
    """

    def __init__(self, message: str, *, layer: str | None = None):
        super().__init__(message)
        self.layer = layer


_ROUNDINGS = ("exact", "floor", "ceil")


def output_size(w1: int, f: int, s: int = 1, p: int = 0, *, layer: str | None = None,
                rounding: str = "exact") -> int:
    """Output width ``(W1 - F + 2P)/S + 1`` of a convolution or pooling layer.

    ``rounding="exact"`` is the lecture's rule: the division must come out whole, otherwise the
    filter does not tile the input and the hyperparameters are invalid. ``"floor"`` is what Keras,
    TensorFlow and PyTorch do by default (the last rows that do not fit are dropped); ``"ceil"`` is
    Caffe's pooling rule (ZFNet and GoogLeNet were trained with it).

    >>> output_size(227, 11, 4, 0)      # AlexNet conv1
    55
    >>> output_size(32, 5, 1, 0)        # LeNet-5 C1
    28
    """
    for label, value, lowest in (("W1", w1, 1), ("F", f, 1), ("S", s, 1), ("P", p, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise SizeError(f"{_where(layer)}{label} must be an integer >= {lowest}, got {value!r}",
                            layer=layer)
    if rounding not in _ROUNDINGS:
        raise ValueError(f"rounding must be one of {_ROUNDINGS}, got {rounding!r}")
    numerator = w1 - f + 2 * p
    formula = f"(W1 - F + 2P)/S + 1 = ({w1} - {f} + 2*{p})/{s} + 1 = {numerator / s + 1:g}"
    if numerator < 0:
        raise SizeError(f"{_where(layer)}{formula} is not positive: the {w1}-wide input is smaller "
                        f"than the {f}-wide filter plus padding", layer=layer)
    if rounding == "exact" and numerator % s:
        fits = [w for w in (w1 - numerator % s, w1 + s - numerator % s) if w >= f - 2 * p]
        raise SizeError(f"{_where(layer)}{formula} is not a whole number: a {f}-wide filter with "
                        f"stride {s} does not tile a {w1}-wide input (widths that tile: "
                        f"{' or '.join(map(str, fits))})", layer=layer)
    rounder = math.ceil if rounding == "ceil" else math.floor
    return rounder(numerator / s) + 1


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


def _where(layer: str | None) -> str:
    return f"layer '{layer}': " if layer else ""
