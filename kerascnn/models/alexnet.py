"""AlexNet (Krizhevsky, Sutskever & Hinton 2012) and ZFNet (Zeiler & Fergus 2013).

Both are five convolutions and three fully connected layers; each network is one table of rows
below (filters, kernel, stride, padding, groups, and the normalisation/pooling after the ReLU),
read by one builder. Layer names are Caffe's: ``conv1``, ``norm1``, ``pool1`` ... ``fc6``, ``fc7``,
``fc8``, then ``predictions``.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
from keras import layers

from ..arithmetic import SizeError
from ..layers import LocalResponseNormalization, classifier, conv, image_input, max_pool
from ..catalog import register

__all__ = ["alexnet", "zfnet", "NETWORKS"]

ALEXNET_PAPER = ('Krizhevsky, Sutskever & Hinton (2012), "ImageNet Classification with Deep '
                 'Convolutional Neural Networks", NIPS 2012')
OWT_PAPER = ('Krizhevsky (2014), "One weird trick for parallelizing convolutional neural '
             'networks", arXiv:1404.5997 (the torchvision alexnet)')
ZFNET_PAPER = ('Zeiler & Fergus (2013), "Visualizing and Understanding Convolutional Networks", '
               'ECCV 2014, arXiv:1311.2901, Fig. 3')


class Conv(NamedTuple):
    """One convolution row: ``then`` lists what follows its ReLU ("norm", "pool"), in order;
    ``bias`` is the constant its biases start at."""
    filters: int
    kernel: int
    stride: int = 1
    pad: int = 0
    groups: int = 1
    then: tuple = ()
    bias: float = 0.0


class Network(NamedTuple):
    """A network of this module: its convolutions, how sizes round (``"exact"`` is the lecture's
    rule, ``"floor"`` Keras', ``"ceil"`` Caffe's pooling), its initialisation (``std``: weights
    N(0, std); ``None``: Keras' Glorot defaults), the biases of fc6/fc7, and an optional adaptive
    average pool before fc6."""
    convs: tuple
    conv_rounding: str = "exact"
    pool_rounding: str = "exact"
    std: float | None = 0.01
    fc_bias: float = 0.0
    adaptive_pool: int | None = None


NETWORKS = {
    # Section 3.5 and Fig. 2: two towers, so conv2/4/5 see only their own tower's maps (groups=2)
    # while conv3 and the FC layers see both; LRN after the ReLU of conv1/2, overlapping 3x3/2
    # max-pooling; biases 1 in conv2/4/5 and fc6/7 (section 5). 227x227 input: 224 does not tile.
    "2012": Network((Conv(96, 11, 4, then=("norm", "pool")),
                     Conv(256, 5, 1, 2, groups=2, then=("norm", "pool"), bias=1.0),
                     Conv(384, 3, 1, 1),
                     Conv(384, 3, 1, 1, groups=2, bias=1.0),
                     Conv(256, 3, 1, 1, groups=2, then=("pool",), bias=1.0)),
                    fc_bias=1.0),
    # One tower, 64-192-384-256-256, no LRN, conv1 padded by 2 (floor rounding makes 224 work),
    # adaptive 6x6 average pool before fc6 as torchvision; Glorot init.
    "owt": Network((Conv(64, 11, 4, 2, then=("pool",)),
                    Conv(192, 5, 1, 2, then=("pool",)),
                    Conv(384, 3, 1, 1),
                    Conv(256, 3, 1, 1),
                    Conv(256, 3, 1, 1, then=("pool",))),
                   conv_rounding="floor", pool_rounding="floor", std=None, adaptive_pool=6),
    # The lecture's layer-by-layer AlexNet: one tower, no padding anywhere, no LRN:
    # 227 -> 55 -> 27 -> 23 -> 11 -> 9 -> 7 -> 5 -> 2 (x256) -> 4096 -> 4096 -> classes.
    "lecture": Network((Conv(96, 11, 4, then=("pool",)),
                        Conv(256, 5, 1, 0, then=("pool",), bias=1.0),
                        Conv(384, 3),
                        Conv(384, 3, bias=1.0),
                        Conv(256, 3, then=("pool",), bias=1.0)),
                       fc_bias=1.0),
    # Zeiler & Fergus Fig. 3: 7x7/2 conv1 (pad 1: 224 -> 110), pool then contrast normalisation
    # (LRN) after conv1/2, 5x5/2 conv2; Caffe's ceil-mode pools give 110 -> 55 and 26 -> 13.
    # Section 3: weights N(0, 1e-2), biases 0.
    "zfnet": Network((Conv(96, 7, 2, 1, then=("pool", "norm")),
                      Conv(256, 5, 2, 0, then=("pool", "norm")),
                      Conv(384, 3, 1, 1),
                      Conv(384, 3, 1, 1),
                      Conv(256, 3, 1, 1, then=("pool",))),
                     conv_rounding="floor", pool_rounding="ceil"),
}

ALEXNET_VARIANTS = ("2012", "owt", "lecture")


def alexnet(num_classes: int = 1000, input_shape=(227, 227, 3), preprocessing=None,
            name: str = "alexnet", *, variant: str = "2012", dropout: float = 0.5,
            classifier_activation="softmax"):
    """AlexNet (Krizhevsky et al. 2012, Fig. 2 and section 3).

    ``variant="2012"``: the paper's two-tower network as one graph, ``groups=2`` in conv2/4/5, LRN
    (n=5, k=2, alpha=1e-4, beta=0.75, across all 96/256 maps as in Caffe's bvlc_alexnet),
    overlapping 3x3/2 max-pools, dropout 0.5 on fc6/fc7, weights N(0, 0.01) and biases 1 in
    conv2/4/5 and fc6/7: 60,965,224 parameters at 1000 classes. Sizes must divide exactly: 227
    works, the paper's "224" does not.
    ``variant="owt"``: "one weird trick" (Krizhevsky 2014) as torchvision builds it, 61,100,840.
    ``variant="lecture"``: the lecture's unpadded single-tower walk-through (see ``NETWORKS``).

    The towers are :class:`kerascnn.layers.GroupedConv2D` layers (same weights as ``Conv2D(groups=2)``).
    """
    if variant not in ALEXNET_VARIANTS:
        raise ValueError(f"alexnet variant must be one of {ALEXNET_VARIANTS}, got {variant!r}")
    return _build(NETWORKS[variant], num_classes, input_shape, preprocessing, name, dropout,
                  classifier_activation)


def zfnet(num_classes: int = 1000, input_shape=(224, 224, 3), preprocessing=None,
          name: str = "zfnet", *, dropout: float = 0.5, classifier_activation="softmax"):
    """ZFNet (Zeiler & Fergus 2013, Fig. 3): AlexNet with a 7x7/2 first layer and a 5x5/2 second,
    one tower, pool-then-normalise, 62,357,608 parameters at 1000 classes."""
    return _build(NETWORKS["zfnet"], num_classes, input_shape, preprocessing, name, dropout,
                  classifier_activation)


def _build(net: Network, num_classes, input_shape, preprocessing, name, dropout,
           classifier_activation):
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    inputs, x = image_input(input_shape, preprocessing)
    for i, c in enumerate(net.convs, start=1):
        options = dict(kernel_initializer=_weights(net.std),
                       bias_initializer=keras.initializers.Constant(c.bias))
        x = conv(x, c.filters, c.kernel, name=f"conv{i}", stride=c.stride, padding=c.pad,
                 groups=c.groups, rounding=net.conv_rounding, **options)
        for step in c.then:
            if step == "norm":
                x = LocalResponseNormalization(name=f"norm{i}")(x)
            else:
                x = max_pool(x, 3, 2, name=f"pool{i}", rounding=net.pool_rounding)
    if net.adaptive_pool:
        # Keras 3.15's adaptive pooling cannot spread a 1x1 map over 6x6 in graph mode (predict,
        # fit and SavedModel export fail), so a 1x1 pool5 is a size error like any other here.
        if any(d is not None and d < 2 for d in x.shape[1:3]):
            raise SizeError(f"layer 'avgpool': its input is {x.shape[1]}x{x.shape[2]}, but the "
                            f"adaptive {net.adaptive_pool}x{net.adaptive_pool} average pool needs "
                            f"at least 2x2", layer="avgpool")
        x = layers.AdaptiveAveragePooling2D(net.adaptive_pool, name="avgpool")(x)
    x = layers.Flatten(name="flatten")(x)
    for fc in ("fc6", "fc7"):
        x = layers.Dense(4096, activation="relu", kernel_initializer=_weights(net.std),
                         bias_initializer=keras.initializers.Constant(net.fc_bias), name=fc)(x)
        x = layers.Dropout(dropout, name=f"{fc}_dropout")(x)
    outputs = classifier(x, num_classes, name="fc8", activation=classifier_activation,
                         kernel_initializer=_weights(net.std))
    return keras.Model(inputs, outputs, name=name)


def _weights(std):
    # a fresh initializer per layer: an unseeded Keras initializer repeats its values when reused
    return "glorot_uniform" if std is None else keras.initializers.RandomNormal(0.0, std)


register("alexnet", alexnet, family="alexnet", input_shape=(227, 227, 3), min_size=67,
         paper=ALEXNET_PAPER,
         description="the paper's two-tower AlexNet (groups=2 in conv2/4/5, LRN), 227x227 input")
register("alexnet_owt", alexnet, family="alexnet", input_shape=(224, 224, 3), min_size=95,
         paper=OWT_PAPER, variant="owt",
         description="single-tower 'one weird trick' AlexNet (64-192-384-256-256, as torchvision)")
register("alexnet_lecture", alexnet, family="alexnet", input_shape=(227, 227, 3), min_size=195,
         paper=ALEXNET_PAPER, variant="lecture",
         description="the lecture's AlexNet: no padding, one tower, 227 -> 55 -> 27 -> 23 -> 11 -> "
                     "9 -> 7 -> 5 -> 2")
register("zfnet", zfnet, family="zfnet", input_shape=(224, 224, 3), min_size=63, paper=ZFNET_PAPER,
         description="ZFNet: AlexNet with 7x7/2 conv1 and 5x5/2 conv2, ceil-mode pools, 224 input")
