"""VGG (Simonyan & Zisserman 2014, "Very Deep Convolutional Networks for Large-Scale Image
Recognition", Table 1).

Each configuration is a list, as in torchvision: a number is a 3x3 convolution (stride 1, padding
1) with that many filters, ``(filters, 1)`` a 1x1 convolution (config C), ``"M"`` a 2x2/2 max-pool.
One builder reads any of them; ``batch_norm=True`` adds batch normalisation after every convolution
(the torchvision ``_bn`` models; conv biases are kept, so each adds 2 x channels parameters).
"""

from __future__ import annotations

import keras
from keras import layers

from ..layers import classifier, conv, image_input, max_pool
from ..catalog import register

__all__ = ["vgg", "CFGS"]

PAPER = ('Simonyan & Zisserman (2014), "Very Deep Convolutional Networks for Large-Scale Image '
         'Recognition", ICLR 2015, arXiv:1409.1556, Table 1')

#: Table 1, configurations A (11 weight layers), B (13), C (16, 1x1 convs), D (16) and E (19).
CFGS = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M", 512, 512, (512, 1), "M",
          512, 512, (512, 1), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"],
}


def vgg(num_classes: int = 1000, input_shape=(224, 224, 3), preprocessing=None, name: str = "vgg16",
        *, cfg: str = "D", batch_norm: bool = False, dropout: float = 0.5,
        classifier_activation="softmax"):
    """VGG configuration ``cfg`` of Table 1 (section 2.1): stacks of 3x3 convolutions with ReLU,
    five 2x2/2 max-pools, then fc1 4096 -> fc2 4096 -> fc3 ``num_classes``, with dropout 0.5 on fc1
    and fc2 as in the paper (section 3.1; keras.applications omits it).

    Layer names follow keras.applications: ``block1_conv1`` ... ``block5_pool``, ``fc1``, ``fc2``,
    then ``fc3`` and ``predictions``. Initialisation: Keras' Glorot uniform and zero biases, the
    "random initialisation procedure of Glorot & Bengio" that section 3.1 says works without
    pre-training (the paper first trained A from N(0, 1e-2) and initialised deeper nets from it).
    The input must be at least 32x32 (five halvings); the fc1 size follows the input.
    """
    if cfg not in CFGS:
        raise ValueError(f"vgg cfg must be one of {sorted(CFGS)} (Table 1), got {cfg!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    inputs, x = image_input(input_shape, preprocessing)
    block, index = 1, 1
    for item in CFGS[cfg]:
        if item == "M":
            x = max_pool(x, 2, 2, name=f"block{block}_pool")
            block, index = block + 1, 1
            continue
        filters, kernel = item if isinstance(item, tuple) else (item, 3)
        # "same" is P = (F - 1)/2: 1 for 3x3 and 0 for 1x1, so stride-1 sizes are always whole
        x = conv(x, filters, kernel, name=f"block{block}_conv{index}", padding="same",
                 batch_norm=batch_norm)
        index += 1
    x = layers.Flatten(name="flatten")(x)
    for fc in ("fc1", "fc2"):
        x = layers.Dense(4096, activation="relu", name=fc)(x)
        x = layers.Dropout(dropout, name=f"{fc}_dropout")(x)
    outputs = classifier(x, num_classes, name="fc3", activation=classifier_activation)
    return keras.Model(inputs, outputs, name=name)


def _register_all():
    for depth, cfg in (("11", "A"), ("13", "B"), ("16c", "C"), ("16", "D"), ("19", "E")):
        register(f"vgg{depth}", vgg, family="vgg", input_shape=(224, 224, 3), min_size=32,
                 paper=f"{PAPER}, configuration {cfg}", cfg=cfg,
                 description=f"VGG configuration {cfg} of Table 1")
        register(f"vgg{depth}_bn", vgg, family="vgg", input_shape=(224, 224, 3), min_size=32,
                 paper=f"{PAPER}, configuration {cfg}", cfg=cfg, batch_norm=True,
                 description=f"VGG configuration {cfg} with batch normalisation after each "
                             f"convolution")


_register_all()
