"""torchvision's ImageNet weights converted into our networks, exactly.

:data:`SOURCES` lists torchvision's published ImageNet-1k weights for the networks that are ours:
``alexnet`` (our ``alexnet_owt``), ``vgg11``..``vgg19`` and their ``_bn``, ``resnet18``..``resnet152``
(``IMAGENET1K_V1``; the stride on the 3x3, our default "v1.5") and ``googlenet`` (our
``variant="torchvision"``). Each carries torchvision's preprocessing as our ``preprocessing`` dict,
so the converted model takes raw uint8 RGB as every model here does; torchvision's resize 256 and
centre crop 224 stay outside the model.

:func:`read` loads a ``.pth`` state dict (PyTorch needed: the ``torchvision`` extra);
:func:`convert` places each tensor into our model by :func:`module_names`, the table from
torchvision's module names to our layer names. What differs only in layout is converted exactly:

* conv ``weight`` (O, I, H, W) -> ``kernel`` (H, W, I, O); linear (out, in) -> (in, out);
* a linear layer after a flatten of a (C, H, W) map (AlexNet's fc6, VGG's fc1, GoogLeNet's aux
  fc) has its inputs re-ordered from torch's C, H, W flatten to Keras' H, W, C;
* batch norm ``weight, bias, running_mean, running_var`` -> ``gamma, beta, moving_mean,
  moving_variance``, an epsilon difference folded into the variance (var + eps is what counts);
  ``num_batches_tracked`` is a training counter and is ignored.

torchvision's adaptive average pools (AlexNet's 6x6, VGG's 7x7) are the identity at 224x224, and
GoogLeNet's ``transform_input`` (ImageNet-normalised input back to Google's [-1, 1]) composed with
its normalisation is exactly ``x / 127.5 - 1``: that is its preprocessing here.
"""

from __future__ import annotations

import numpy as np

from ..errors import WeightsError
from .record import PublishedWeights

__all__ = ["SOURCES", "BN_EPSILON", "module_names", "read", "convert"]

_ROOT = "https://download.pytorch.org/models/"
_LICENCE = ("torchvision (BSD-3-Clause); trained on ImageNet-1k, for non-commercial research and "
            "education")
#: torchvision's ImageClassification transform: to [0, 1], then ImageNet mean and std.
_IMAGENET = {"scale": 1 / 255, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
#: googlenet's transform_input after that normalisation: x * std / 0.5 + (mean - 0.5) / 0.5 =
#: (p / 255 - 0.5) / 0.5 for every channel.
_GOOGLE = {"scale": 1 / 127.5, "offset": -1.0}

#: torchvision's BatchNorm2d epsilon per network (BasicConv2d of googlenet: 0.001).
BN_EPSILON = {"googlenet": 1e-3}
_DEFAULT_EPSILON = 1e-5
#: Modules torchvision publishes but drops itself when built without them (googlenet's aux heads,
#: "NOT pretrained"): placed if our model has the layers, skipped if it has not.
_OPTIONAL = {"googlenet": ("aux1.", "aux2.")}


def _entry(network, enum, file, top1, top5, preprocessing=_IMAGENET, **options):
    return PublishedWeights(network=network, publisher="torchvision",
                            source_name=f"{enum}.IMAGENET1K_V1", url=_ROOT + file,
                            file_hash=file.rsplit("-", 1)[1].split(".")[0],
                            hash_kind="sha256-prefix", top1=top1, top5=top5,
                            preprocessing=dict(preprocessing), options=options, licence=_LICENCE)


#: torchvision 0.29's ``*_Weights.IMAGENET1K_V1``: file, acc@1 and acc@5 from the enums' meta.
SOURCES = [
    _entry("alexnet_owt", "AlexNet_Weights", "alexnet-owt-7be5be79.pth", 56.522, 79.066),
    _entry("vgg11", "VGG11_Weights", "vgg11-8a719046.pth", 69.02, 88.628),
    _entry("vgg11_bn", "VGG11_BN_Weights", "vgg11_bn-6002323d.pth", 70.37, 89.81),
    _entry("vgg13", "VGG13_Weights", "vgg13-19584684.pth", 69.928, 89.246),
    _entry("vgg13_bn", "VGG13_BN_Weights", "vgg13_bn-abd245e5.pth", 71.586, 90.374),
    _entry("vgg16", "VGG16_Weights", "vgg16-397923af.pth", 71.592, 90.382),
    _entry("vgg16_bn", "VGG16_BN_Weights", "vgg16_bn-6c64b313.pth", 73.36, 91.516),
    _entry("vgg19", "VGG19_Weights", "vgg19-dcbb9e9d.pth", 72.376, 90.876),
    _entry("vgg19_bn", "VGG19_BN_Weights", "vgg19_bn-c79401a0.pth", 74.218, 91.842),
    _entry("resnet18", "ResNet18_Weights", "resnet18-f37072fd.pth", 69.758, 89.078,
           stride_on="3x3"),
    _entry("resnet34", "ResNet34_Weights", "resnet34-b627a593.pth", 73.314, 91.42,
           stride_on="3x3"),
    _entry("resnet50", "ResNet50_Weights", "resnet50-0676ba61.pth", 76.13, 92.862,
           stride_on="3x3"),
    _entry("resnet101", "ResNet101_Weights", "resnet101-63fe2227.pth", 77.374, 93.546,
           stride_on="3x3"),
    _entry("resnet152", "ResNet152_Weights", "resnet152-394f9c45.pth", 78.312, 94.046,
           stride_on="3x3"),
    _entry("googlenet", "GoogLeNet_Weights", "googlenet-1378be20.pth", 69.778, 89.53, _GOOGLE,
           variant="torchvision"),
]

# --- torchvision module name -> our layer name -------------------------------------------------

#: alexnet: features = conv, relu, pool, conv, relu, pool, conv, relu, conv, relu, conv, relu, pool;
#: classifier = dropout, linear, relu, dropout, linear, relu, linear.
_ALEXNET = {"features.0": "conv1", "features.3": "conv2", "features.6": "conv3",
            "features.8": "conv4", "features.10": "conv5",
            "classifier.1": "fc6", "classifier.4": "fc7", "classifier.6": "fc8"}
#: torchvision's cfgs "A", "B", "D", "E" are Table 1's, as ours.
_VGG_CFGS = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}
#: googlenet's Inception branches -> our branch names (branch3 is the "5x5" one, a 3x3 there).
_BRANCHES = {"branch1": "1x1", "branch2.0": "3x3_reduce", "branch2.1": "3x3",
             "branch3.0": "5x5_reduce", "branch3.1": "5x5", "branch4.1": "pool_proj"}


def module_names(network: str) -> dict[str, str]:
    """torchvision's module names for ``network`` (our registry name) -> our layer names.

    Each table is built by torchvision's own construction rule from the data our builders read
    (``CFGS``, ``LAYOUTS``, ``INCEPTION_MODULES``), so it is complete for every depth:
    ``layer3.0.downsample.1`` -> ``conv4_block1_0_bn``, ``features.7`` -> ``block2_conv2``.
    """
    if network == "alexnet_owt":
        return dict(_ALEXNET)
    if network.removesuffix("_bn") in _VGG_CFGS:
        return _vgg_names(_VGG_CFGS[network.removesuffix("_bn")], network.endswith("_bn"))
    if network.startswith("resnet") and network[6:].isdigit():
        return _resnet_names(int(network[6:]))
    if network == "googlenet":
        return _googlenet_names()
    raise WeightsError(f"torchvision publishes no ImageNet weights for {network!r}; networks "
                       f"with them: {', '.join(entry.network for entry in SOURCES)}")


def _vgg_names(cfg: str, batch_norm: bool) -> dict[str, str]:
    from ..models.vgg import CFGS
    names, index, block, conv = {}, 0, 1, 1
    for item in CFGS[cfg]:  # torchvision's make_layers: conv [, bn], relu per number; pool per "M"
        if item == "M":
            index, block, conv = index + 1, block + 1, 1
            continue
        names[f"features.{index}"] = f"block{block}_conv{conv}"
        if batch_norm:
            names[f"features.{index + 1}"] = f"block{block}_conv{conv}_bn"
        index, conv = index + (3 if batch_norm else 2), conv + 1
    # classifier = linear, relu, dropout, linear, relu, dropout, linear
    names.update({"classifier.0": "fc1", "classifier.3": "fc2", "classifier.6": "fc3"})
    return names


def _resnet_names(depth: int) -> dict[str, str]:
    from ..models.resnet import LAYOUTS, STAGES
    if depth not in LAYOUTS:
        raise WeightsError(f"torchvision publishes no ImageNet weights for 'resnet{depth}'; "
                           f"use one of resnet{', resnet'.join(map(str, LAYOUTS))}")
    block, counts = LAYOUTS[depth]
    expansion, convs = (4, 3) if block == "bottleneck" else (1, 2)
    names = {"conv1": "conv1_conv", "bn1": "conv1_bn", "fc": "fc"}
    inplanes = 64
    for i, ((stage, width, stride), count) in enumerate(zip(STAGES, counts), start=1):
        for j in range(count):  # torchvision layer{i}.{j} is our {stage}_block{j + 1}
            ours = f"{stage}_block{j + 1}"
            for k in range(1, convs + 1):
                names[f"layer{i}.{j}.conv{k}"] = f"{ours}_{k}_conv"
                names[f"layer{i}.{j}.bn{k}"] = f"{ours}_{k}_bn"
            # torchvision's _make_layer: a projection where the stride or the width changes
            if j == 0 and (stride != 1 or inplanes != width * expansion):
                names[f"layer{i}.{j}.downsample.0"] = f"{ours}_0_conv"
                names[f"layer{i}.{j}.downsample.1"] = f"{ours}_0_bn"
            inplanes = width * expansion
    return names


def _googlenet_names() -> dict[str, str]:
    from ..models.googlenet import AUX_HEADS, INCEPTION_MODULES
    # BasicConv2d = .conv (no bias) + .bn; conv2/conv3 are Caffe's conv2 3x3_reduce and 3x3
    layers = {"conv1": "conv1_7x7_s2", "conv2": "conv2_3x3_reduce", "conv3": "conv2_3x3"}
    for row in INCEPTION_MODULES:
        if not isinstance(row, str):
            for branch, ours in _BRANCHES.items():
                layers[f"inception{row[0]}.{branch}"] = f"inception_{row[0]}_{ours}"
    names = {}
    for module, ours in layers.items():
        names[f"{module}.conv"], names[f"{module}.bn"] = ours, f"{ours}_bn"
    for aux, (head, _) in zip(("aux1", "aux2"), AUX_HEADS.values()):  # on 4a and 4d
        names.update({f"{aux}.conv.conv": f"{head}_conv", f"{aux}.conv.bn": f"{head}_conv_bn",
                      f"{aux}.fc1": f"{head}_fc", f"{aux}.fc2": f"{head}_classifier"})
    names["fc"] = "loss3_classifier"
    return names


# --- reading and converting ----------------------------------------------------------------------

def read(path) -> dict[str, np.ndarray]:
    """The tensors of a torchvision ``.pth`` state dict, by torchvision's names, as numpy arrays."""
    try:
        import torch
    except ImportError:
        raise WeightsError(f"reading torchvision weights ({path}) needs PyTorch; install the "
                           f"extra: pip install 'kerascnn[torchvision]'") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"torchvision weights file {path} does not exist; give the path of a "
                           f"downloaded .pth") from None
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError ...
        raise WeightsError(f"{path} is not a readable torchvision state dict "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); download "
                           f"it again") from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise WeightsError(f"{path} holds no state dict of tensors; save model.state_dict()")
    return {key: value.detach().cpu().numpy() for key, value in state.items()}


def convert(model, tensors: dict[str, np.ndarray], entry: PublishedWeights) -> None:
    """Assign torchvision ``tensors`` to our ``model`` (built with ``entry``'s options and
    preprocessing at 224x224): each tensor placed once, each of our weights set, else a
    :class:`WeightsError` naming the tensor or the layer."""
    table = module_names(entry.network)
    optional = _OPTIONAL.get(entry.network, ())
    have = {layer.name: layer for layer in model.layers}
    by_module: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        module, _, param = key.rpartition(".")
        if param == "num_batches_tracked":
            continue
        if module not in table:
            raise WeightsError(f"tensor {key!r} of {entry.source_name} has no place in our "
                               f"{entry.network}; is the file torchvision's {entry.source_name}?")
        if table[module] not in have and module.startswith(optional):
            continue  # e.g. googlenet's untrained aux heads when our model has none
        by_module.setdefault(module, {})[param] = np.asarray(value)
    epsilon = BN_EPSILON.get(entry.network, _DEFAULT_EPSILON)
    values = {}  # every tensor checked before any weight of the model changes
    for module, params in by_module.items():
        name = table[module]
        if name not in have:
            raise WeightsError(f"tensor {module}.* of {entry.source_name} goes to layer {name!r}, "
                               f"which our model lacks; build it with options {entry.options}")
        values[name] = _layer_values(have[name], module, params, epsilon)
    unset = [layer.name for layer in model.layers if layer.weights and layer.name not in values]
    if unset:
        source = {ours: module for module, ours in table.items()}
        missing = ", ".join(f"{source[n]}.*" if n in source else f"(none for {n})"
                            for n in unset[:4])
        raise WeightsError(f"{entry.source_name} lacks the tensors {missing} for our layer(s) "
                           f"{', '.join(unset[:4])}; use torchvision's file, and build "
                           f"{entry.network} with options {entry.options} and no extra heads")
    for name, arrays in values.items():
        have[name].set_weights(arrays)


def _layer_values(layer, module: str, params: dict, epsilon: float) -> list[np.ndarray]:
    """The torchvision tensors of ``module`` as ``layer``'s weights, in Keras layout."""
    kind = type(layer).__name__
    if kind == "BatchNormalization":
        order = ("weight", "bias", "running_mean", "running_var")
        _expect(params, order, module)
        gamma, beta, mean, var = (params[p] for p in order)
        var = var.astype(np.float64) + epsilon - layer.epsilon  # var + eps is what normalises
        if (var < 0).any():
            raise WeightsError(f"tensor {module}.running_var cannot absorb torchvision's "
                               f"epsilon {epsilon} into {layer.name}'s {layer.epsilon}; build "
                               f"it with epsilon {epsilon}")
        values = [gamma, beta, mean, var]
    elif kind == "Dense":
        _expect(params, ("weight", "bias"), module)
        values = [_dense_kernel(layer, module, params["weight"]), params["bias"]]
    elif "Conv2D" in kind:  # Conv2D and our GroupedConv2D (same kernel layout)
        _expect(params, ("weight", "bias") if layer.use_bias else ("weight",), module)
        weight = params["weight"]
        if weight.ndim != 4:
            raise WeightsError(f"tensor {module}.weight has shape {weight.shape}, not a conv "
                               f"weight (O, I, H, W) for our {layer.name}")
        values = [weight.transpose(2, 3, 1, 0)] + ([params["bias"]] if layer.use_bias else [])
    else:
        raise WeightsError(f"tensors {module}.* map to our layer {layer.name} ({kind}), which "
                           f"takes no torchvision weights")
    ours = layer.get_weights()
    for value, current, param in zip(values, ours, _PARAM_NAMES[kind if "Conv2D" not in kind
                                                               else "Conv2D"]):
        if tuple(value.shape) != tuple(current.shape):
            raise WeightsError(f"tensor {module}.{param} has shape {params[param].shape}, but our "
                               f"{layer.name} needs {tuple(current.shape)} in Keras layout; "
                               f"build the model at 224x224 with the file's classes")
    return [np.asarray(v, dtype=c.dtype) for v, c in zip(values, ours)]


_PARAM_NAMES = {"BatchNormalization": ("weight", "bias", "running_mean", "running_var"),
                "Dense": ("weight", "bias"), "Conv2D": ("weight", "bias")}


def _expect(params: dict, names: tuple, module: str) -> None:
    if set(params) != set(names):
        missing, extra = sorted(set(names) - set(params)), sorted(set(params) - set(names))
        what = (f"lacks {', '.join(f'{module}.{p}' for p in missing)}" if missing else
                f"has unexpected {', '.join(f'{module}.{p}' for p in extra)}")
        raise WeightsError(f"the state dict {what}; is it torchvision's file for this network?")


def _dense_kernel(layer, module: str, weight: np.ndarray) -> np.ndarray:
    """(out, in) -> (in, out); after a flatten of an (H, W, C) map, torch's inputs are in C, H, W
    order and are re-ordered to Keras' H, W, C."""
    if weight.ndim != 2:
        raise WeightsError(f"tensor {module}.weight has shape {weight.shape}, not a linear "
                           f"weight (out, in) for our {layer.name}")
    source = layer.input._keras_history[0]
    if type(source).__name__ == "Flatten" and len(source.input.shape) == 4:
        h, w, c = (int(d) for d in source.input.shape[1:])
        if weight.shape[1] != c * h * w:
            raise WeightsError(f"tensor {module}.weight takes {weight.shape[1]} inputs, but our "
                               f"{layer.name} gets a {h}x{w}x{c} map ({h * w * c}); build the "
                               f"model at 224x224")
        return weight.reshape(-1, c, h, w).transpose(2, 3, 1, 0).reshape(h * w * c, -1)
    return weight.T
