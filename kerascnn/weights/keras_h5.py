"""keras.applications' ImageNet weights: ResNet-50/101/152 (v1) and VGG-16/19, in our networks.

keras.applications publishes Keras 2's legacy HDF5 layout: the root's ``layer_names`` attribute
lists the layers in order, each layer's group has a ``weight_names`` attribute, and the arrays
are datasets by those names (``conv1_conv/kernel:0``; VGG's older file names them
``block1_conv1_W_1:0``). Keras itself loads such a file by layer order; :func:`read` keeps the
layer names and the order within each layer, which is all :func:`convert` relies on.

What differs from our networks, and how it is folded exactly:

* ResNet v1 (``stride_on="1x1"``) has a bias in every conv, each followed by batch norm: the bias
  moves into the moving mean (``BN(conv + b)`` with mean ``m`` is ``BN(conv)`` with ``m - b``);
* its batch norm epsilon is 1.001e-5 (ours 1e-5): the difference moves into the moving variance;
* Caffe preprocessing (``preprocess_input(mode="caffe")``: RGB -> BGR, minus the BGR mean
  [103.939, 116.779, 123.68], no scaling) becomes our ``preprocessing={"mean": [123.68,
  116.779, 103.939]}`` on RGB pixels, with the first conv's input channels reversed;
* the last dense layer is ``predictions`` there, ``fc`` (ResNet) or ``fc3`` (VGG) here. Both flatten
  VGG's 7x7x512 map in the same (height, width, channel) order.
"""

from __future__ import annotations

import numpy as np

from ..errors import WeightsError
from .record import PublishedWeights

__all__ = ["SOURCES", "read", "convert", "CAFFE_MEAN_RGB", "KERAS_BN_EPSILON"]

#: keras.applications.imagenet_utils' Caffe mean, BGR [103.939, 116.779, 123.68], in RGB order.
CAFFE_MEAN_RGB = [123.68, 116.779, 103.939]
#: keras.applications' ResNet batch norm epsilon (resnet.py: ``epsilon=1.001e-5``).
KERAS_BN_EPSILON = 1.001e-5
#: their classifier -> ours
HEADS = {"resnet": "fc", "vgg": "fc3"}

_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"
_RESNET_LICENCE = ("MIT: ported by keras-applications from the Caffe weights Kaiming He released "
                   "under the MIT license")
_VGG_LICENCE = ("CC BY 4.0: ported by keras-applications from the weights the Visual Geometry "
                "Group (Oxford) released under the Creative Commons Attribution License")


def _entry(network, source, path, md5, top1, top5, licence, **options):
    return PublishedWeights(network, "keras.applications", f"keras.applications.{source}",
                            _BASE + path, md5, "md5", top1, top5,
                            preprocessing={"mean": list(CAFFE_MEAN_RGB)}, options=options,
                            input_size=224, licence=licence)


#: The md5 hashes are those keras' own source checks (keras/src/applications/resnet.py
#: WEIGHTS_HASHES, vgg16.py, vgg19.py); top-1/top-5 from keras.io/api/applications.
SOURCES = [
    _entry("resnet50", "ResNet50", "resnet/resnet50_weights_tf_dim_ordering_tf_kernels.h5",
           "2cb95161c43110f7111970584f804107", 74.9, 92.1, _RESNET_LICENCE, stride_on="1x1"),
    _entry("resnet101", "ResNet101", "resnet/resnet101_weights_tf_dim_ordering_tf_kernels.h5",
           "f1aeb4b969a6efcfb50fad2f0c20cfc5", 76.4, 92.8, _RESNET_LICENCE, stride_on="1x1"),
    _entry("resnet152", "ResNet152", "resnet/resnet152_weights_tf_dim_ordering_tf_kernels.h5",
           "100835be76be38e30d865e96f2aaae62", 76.6, 93.1, _RESNET_LICENCE, stride_on="1x1"),
    _entry("vgg16", "VGG16", "vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5",
           "64373286793e3c8b2b4e3219cbf3544b", 71.3, 90.1, _VGG_LICENCE),
    _entry("vgg19", "VGG19", "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels.h5",
           "cbe5617147190e668d6c5d5026f83318", 71.3, 90.0, _VGG_LICENCE),
]


def _names(group, attribute: str) -> list[str]:
    """A list attribute, also when Keras split a long one into ``name0``, ``name1`` ..."""
    if attribute in group.attrs:
        values = list(group.attrs[attribute])
    else:
        values, i = [], 0
        while f"{attribute}{i}" in group.attrs:
            values += list(group.attrs[f"{attribute}{i}"])
            i += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def read(path) -> dict[str, np.ndarray]:
    """The arrays of a keras.applications ``.h5`` file as ``{"LAYER/WEIGHT": array}``, layer by
    layer in the file's order and each layer's weights in their order (a weight name that does
    not start with its layer's name gets it as a prefix)."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise WeightsError(f"{path} is not an HDF5 file ({exc}); pass keras.applications' .h5 "
                           f"weights file") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f  # a whole-model legacy .h5
        layers = _names(root, "layer_names")
        if not layers:
            raise WeightsError(f"{path} has no layer_names: it is not keras.applications' legacy "
                               f"HDF5 layout (a Keras 3 .weights.h5 loads with "
                               f"model.load_weights)")
        tensors = {}
        for layer in layers:
            group = root[layer]
            for weight in _names(group, "weight_names"):
                key = weight if weight.startswith(f"{layer}/") else f"{layer}/{weight}"
                tensors[key] = np.asarray(group[weight])
    return tensors


def convert(model, tensors: dict, entry: PublishedWeights) -> None:
    """Assign keras.applications' ``tensors`` to our ``model`` (built with ``entry.options`` and
    ``entry.preprocessing``), folding conv biases, the epsilon and BGR as the module says."""
    from keras import layers as kl

    head = HEADS[next(f for f in HEADS if entry.network.startswith(f))]
    grouped: dict[str, list] = {}
    for key, value in tensors.items():
        grouped.setdefault(key.split("/", 1)[0], []).append(value)
    ours = {layer.name: layer for layer in model.layers}
    first_conv = next(layer for layer in model.layers if isinstance(layer, kl.Conv2D))
    values, folded = {}, {}
    for source, arrays in grouped.items():
        name = head if source == "predictions" else source
        layer = ours.get(name)
        if layer is None:
            raise WeightsError(f"{entry.file_name} has weights for a layer {source!r} that "
                               f"{entry.network} does not have; is it {entry.source_name}'s file?")
        if isinstance(layer, kl.BatchNormalization):
            continue
        kernel, *bias = arrays
        if layer is first_conv:  # the model takes RGB; keras.applications' first conv sees BGR
            kernel = kernel[:, :, ::-1, :]
        if getattr(layer, "use_bias", True) or not bias:
            values[name] = [kernel, *bias]
        else:  # ResNet v1's conv bias: into the moving mean of the batch norm that follows
            values[name] = [kernel]
            folded[f"{name.removesuffix('_conv')}_bn"] = bias[0]
    for source, arrays in grouped.items():
        layer = ours[source]
        if isinstance(layer, kl.BatchNormalization):
            gamma, beta, mean, variance = arrays
            mean = mean - folded.pop(source, 0.0)
            variance = variance + (KERAS_BN_EPSILON - layer.epsilon)
            values[source] = [gamma, beta, mean, variance]
    if folded:
        raise WeightsError(f"{entry.file_name}: no batch norm to fold the biases of "
                           f"{', '.join(sorted(folded))} into")
    unset = [layer.name for layer in model.layers if layer.weights and layer.name not in values]
    if unset:
        raise WeightsError(f"{entry.file_name} has no weights for {', '.join(unset[:5])} of "
                           f"{entry.network}; is it {entry.source_name}'s file (with its top)?")
    for name, arrays in values.items():
        layer = ours[name]
        expected = [tuple(w.shape) for w in layer.weights]
        given = [tuple(np.shape(a)) for a in arrays]
        if expected != given:
            raise WeightsError(f"{entry.file_name}: {name} is {given} there but {expected} in "
                               f"{entry.network} (built with {entry.options or 'no options'} at "
                               f"{model.input.shape[1]}x{model.input.shape[2]})")
        layer.set_weights([np.asarray(a, dtype=w.dtype) for a, w in zip(arrays, layer.weights)])
