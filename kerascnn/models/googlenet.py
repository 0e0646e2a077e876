"""GoogLeNet (Szegedy et al. 2014, "Going Deeper with Convolutions", Table 1).

The network is data: :data:`INCEPTION_MODULES` holds one row of Table 1 per inception module, and
one function, :func:`inception_module`, turns a row into four branches joined by a filter
concatenation. The reference implementation is Caffe's ``bvlc_googlenet`` (its layer names, with
``/`` as ``_``): 5x5 convolutions in the 5x5 branch (torchvision's 3x3 there is a known bug), conv
biases, ReLU, LRN after pool1 and conv2, ceil-mode 3x3/2 max pools, dropout 0.4 and one linear
layer; Glorot ("xavier") weights and conv biases of 0.2 as Caffe initialises them. 6,998,552
parameters at 1000 classes; 13,378,280 with the two auxiliary classifiers.

``variant="torchvision"`` is torchvision's ``googlenet`` (ported from TF-slim's Inception v1, whose
ImageNet weights it publishes): batch norm (eps 1e-3) after every conv without conv biases, a 3x3
conv in the "5x5" branch, no LRN, a 2x2/2 ``pool4_3x3_s2``, dropout 0.2 and aux heads on an
adaptive 4x4 average pool; 6,624,904 parameters (13,004,888 with the aux heads). Its
``transform_input`` is preprocessing, not a layer (``kerascnn.weights.torchvision``). Layer names
stay the paper's, so the branch of 3x3 convs is still ``inception_{name}_5x5``.
"""

from __future__ import annotations

import keras
from keras import layers

from ..arithmetic import SizeError
from ..layers import LocalResponseNormalization, avg_pool, classifier, conv, image_input, max_pool
from ..catalog import register

__all__ = ["INCEPTION_MODULES", "AUX_HEADS", "AUX_LOSS_WEIGHT", "AUX_MIN_SIZE", "VARIANTS",
           "googlenet", "inception_module"]

PAPER = ("Szegedy et al. 2014, Going Deeper with Convolutions (arXiv:1409.4842), Table 1; "
         "layer names and LRN from Caffe bvlc_googlenet")

#: Table 1, one row per inception module: (name, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5,
#: pool proj). A string is the 3x3/2 max pool between two groups of modules.
INCEPTION_MODULES = [
    ("3a", 64, 96, 128, 16, 32, 32),
    ("3b", 128, 128, 192, 32, 96, 64),
    "pool3_3x3_s2",
    ("4a", 192, 96, 208, 16, 48, 64),
    ("4b", 160, 112, 224, 24, 64, 64),
    ("4c", 128, 128, 256, 24, 64, 64),
    ("4d", 112, 144, 288, 32, 64, 64),
    ("4e", 256, 160, 320, 32, 128, 128),
    "pool4_3x3_s2",
    ("5a", 256, 160, 320, 32, 128, 128),
    ("5b", 384, 192, 384, 48, 128, 128),
]

#: Section 5: the auxiliary classifiers sit on the outputs of 4a and 4d (Caffe's loss1, loss2).
AUX_HEADS = {"4a": ("loss1", "aux1_predictions"), "4d": ("loss2", "aux2_predictions")}
#: Section 5: "their loss gets added to the total loss of the network with a discount weight (the
#: losses of the auxiliary classifiers were weighted by 0.3)".
AUX_LOSS_WEIGHT = 0.3
#: The aux heads' 5x5/3 average pool needs a 5x5 map after 4a, i.e. an input of at least 79x79
#: (the main network alone needs 47x47: pool4's 3x3 window must fit a 3x3 map).
AUX_MIN_SIZE = 79
#: "paper": Table 1 as Caffe's bvlc_googlenet; "torchvision": torchvision's googlenet.
VARIANTS = ("paper", "torchvision")

_CAFFE_BIAS = keras.initializers.Constant(0.2)  # bvlc_googlenet's bias_filler for every conv


def googlenet(num_classes: int = 1000, input_shape=(224, 224, 3), preprocessing=None,
              name: str = "googlenet", *, variant: str = "paper", aux_logits: bool = False,
              batch_norm: bool | None = None, lrn: bool | None = None, dropout: float | None = None,
              aux_dropout: float = 0.7, classifier_activation: str | None = "softmax") -> keras.Model:
    """GoogLeNet as in Table 1: 224x224x3 -> 112, 56, 28, 14, 7 -> global average -> linear.

    ``aux_logits`` adds the two auxiliary classifiers of section 5 as extra outputs
    ``aux1_predictions`` and ``aux2_predictions`` after the main ``predictions`` (training only:
    :func:`kerascnn.inference.inference_model` drops them). ``batch_norm`` puts batch
    normalisation after every convolution and drops the conv biases (the common "Inception v1 BN" variant: 7,005,832
    parameters, torchvision's count with 5x5 convs in the 5x5 branch). ``lrn`` defaults to on
    without batch norm and off with it (BN made LRN redundant, Ioffe & Szegedy 2015).
    ``variant="torchvision"`` builds torchvision's network (module docstring; batch norm always).
    """
    if variant not in VARIANTS:
        raise ValueError(f"googlenet variant must be one of {VARIANTS}, got {variant!r}")
    torchvision = variant == "torchvision"
    if torchvision and batch_norm is False:
        raise ValueError("googlenet variant='torchvision' always has batch norm; drop "
                         "batch_norm=False or use variant='paper'")
    batch_norm = torchvision or bool(batch_norm)
    dropout = (0.2 if torchvision else 0.4) if dropout is None else dropout
    lrn = (not batch_norm) if lrn is None else lrn
    conv_options = dict(use_bias=not batch_norm, batch_norm=batch_norm, bn_epsilon=1e-3,
                        bias_initializer=_CAFFE_BIAS)  # eps 1e-3 as torchvision and TF-slim
    inputs, x = image_input(input_shape, preprocessing)

    x = conv(x, 64, 7, stride=2, padding=3, name="conv1_7x7_s2", **conv_options)
    x = max_pool(x, 3, 2, name="pool1_3x3_s2", rounding="ceil")
    if lrn:  # Caffe: local_size 5, alpha 1e-4, beta 0.75, k 1
        x = LocalResponseNormalization(2, bias=1.0, alpha=1e-4, beta=0.75, name="pool1_norm1")(x)
    x = conv(x, 64, 1, name="conv2_3x3_reduce", **conv_options)
    x = conv(x, 192, 3, padding="same", name="conv2_3x3", **conv_options)
    if lrn:
        x = LocalResponseNormalization(2, bias=1.0, alpha=1e-4, beta=0.75, name="conv2_norm2")(x)
    x = max_pool(x, 3, 2, name="pool2_3x3_s2", rounding="ceil")

    aux_outputs = []
    for row in INCEPTION_MODULES:
        if isinstance(row, str):  # torchvision's maxpool4 is 2x2/2 (same 7x7 map at 224)
            pool = 2 if torchvision and row == "pool4_3x3_s2" else 3
            x = max_pool(x, pool, 2, name=row, rounding="ceil")
            continue
        x = inception_module(x, *row, conv_options=conv_options, kernel_5x5=3 if torchvision else 5)
        if aux_logits and row[0] in AUX_HEADS:
            aux_outputs.append(_aux_classifier(x, num_classes, *AUX_HEADS[row[0]], aux_dropout,
                                               classifier_activation, conv_options,
                                               adaptive=torchvision))

    # Table 1's "avg pool 7x7/1" covers the whole 7x7 map at 224x224; a global average gives the
    # same numbers there and lets the network take other input sizes with the same weights.
    x = layers.GlobalAveragePooling2D(name="pool5_7x7_s1")(x)
    x = layers.Dropout(dropout, name="pool5_drop_7x7_s1")(x)
    outputs = classifier(x, num_classes, name="loss3_classifier", activation=classifier_activation)
    return keras.Model(inputs, [outputs, *aux_outputs] if aux_outputs else outputs, name=name)


def inception_module(x, name: str, n1x1: int, n3x3_reduce: int, n3x3: int, n5x5_reduce: int,
                     n5x5: int, pool_proj: int, *, conv_options: dict | None = None,
                     kernel_5x5: int = 5):
    """One inception module (Figure 2b): 1x1 | 1x1 -> 3x3 | 1x1 -> 5x5 | 3x3 max pool -> 1x1.

    The four branches keep the spatial size (stride 1, "same" padding = Caffe's pad (F-1)/2) and
    are joined along the channels: ``inception_{name}_output`` has n1x1 + n3x3 + n5x5 + pool_proj
    channels. ``kernel_5x5=3`` is torchvision's (and TF-slim's) 3x3 in the 5x5 branch.
    """
    options = conv_options or {"bias_initializer": _CAFFE_BIAS}
    prefix = f"inception_{name}"
    branch1 = conv(x, n1x1, 1, name=f"{prefix}_1x1", **options)
    branch2 = conv(x, n3x3_reduce, 1, name=f"{prefix}_3x3_reduce", **options)
    branch2 = conv(branch2, n3x3, 3, padding="same", name=f"{prefix}_3x3", **options)
    branch3 = conv(x, n5x5_reduce, 1, name=f"{prefix}_5x5_reduce", **options)
    branch3 = conv(branch3, n5x5, kernel_5x5, padding="same", name=f"{prefix}_5x5", **options)
    branch4 = max_pool(x, 3, 1, padding="same", name=f"{prefix}_pool")
    branch4 = conv(branch4, pool_proj, 1, name=f"{prefix}_pool_proj", **options)
    branches = [branch1, branch2, branch3, branch4]
    return layers.Concatenate(axis=-1, name=f"{prefix}_output")(branches)  # filter concatenation


def _aux_classifier(x, num_classes, name, output_name, dropout, activation, conv_options,
                    adaptive=False):
    """Section 5's side classifier: avg pool 5x5/3 (14x14 -> 4x4), 1x1 conv 128 + ReLU, FC 1024 +
    ReLU, dropout 0.7, linear + softmax. Layer names follow Caffe's ``loss1``/``loss2``.
    ``adaptive``: torchvision's adaptive 4x4 average pool (windows of 4 at 14x14, not 5x5/3)."""
    if adaptive:
        if any(d is not None and d < 4 for d in x.shape[1:3]):
            raise SizeError(f"layer '{name}_ave_pool': its input is {x.shape[1]}x{x.shape[2]}, but "
                            f"the adaptive 4x4 average pool of aux_logits=True needs at least 4x4; "
                            f"use aux_logits=False or a larger input", layer=f"{name}_ave_pool")
        x = layers.AdaptiveAveragePooling2D(4, name=f"{name}_ave_pool")(x)
    else:
        try:
            x = avg_pool(x, 5, 3, name=f"{name}_ave_pool")
        except SizeError as exc:
            raise SizeError(f"{exc} (the auxiliary classifiers of aux_logits=True need an input of "
                            f"at least {AUX_MIN_SIZE}x{AUX_MIN_SIZE}; use aux_logits=False for "
                            f"smaller inputs)", layer=exc.layer, min_size=AUX_MIN_SIZE) from None
    x = conv(x, 128, 1, name=f"{name}_conv", **conv_options)
    x = layers.Flatten(name=f"{name}_flatten")(x)
    x = layers.Dense(1024, activation="relu", bias_initializer=_CAFFE_BIAS, name=f"{name}_fc")(x)
    x = layers.Dropout(dropout, name=f"{name}_drop_fc")(x)
    return classifier(x, num_classes, name=f"{name}_classifier", activation=activation,
                      output_name=output_name)


register("googlenet", googlenet, family="googlenet", input_shape=(224, 224, 3), min_size=47,
         paper=PAPER, description="GoogLeNet / Inception v1: 9 inception modules, 22 layers, "
         "LRN, optional auxiliary classifiers (aux_logits), batch norm (batch_norm) and "
         "torchvision's network (variant='torchvision')")
