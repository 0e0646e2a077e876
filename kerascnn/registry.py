"""The model registry: every network of the zoo by name, with its metadata.

Family modules (``kerascnn.models.*``) call :func:`kerascnn.catalog.register` once per named
network; a variant is the family's builder plus fixed options (``vgg16`` = ``vgg(cfg="D")``),
never a copy of the code. This module imports the families and builds, finds and loads them.
"""

from __future__ import annotations

import difflib
import fnmatch

from .arithmetic import SizeError
from .catalog import CATALOG as _REGISTRY
from .catalog import ModelInfo, UnknownModelError, register  # noqa: F401  (the public names)

__all__ = ["ModelInfo", "register", "list_models", "model_info", "get_model", "load_model",
           "UnknownModelError"]


def _load_families() -> None:
    from . import models  # noqa: F401  (importing the families fills the registry)


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern`` (``"resnet*"``), sorted naturally."""
    _load_families()
    return sorted((n for n in _REGISTRY if fnmatch.fnmatch(n, pattern.lower())), key=_natural)


def _natural(name: str):
    import re
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def model_info(name: str) -> ModelInfo:
    """Metadata of ``name``; an unknown name raises :class:`UnknownModelError` with suggestions."""
    _load_families()
    key = str(name).lower()
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=5, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else "see kerascnn.list_models()"
        raise UnknownModelError(f"unknown model {name!r}: {hint} "
                                f"(all models: {', '.join(list_models())})")
    return _REGISTRY[key]


def _check_input_shape(name: str, input_shape, info: ModelInfo):
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                  for d in shape):
        raise ValueError(f"input_shape for {name} must be (height, width, channels) with positive "
                         f"integers, e.g. {info.input_shape}; got {input_shape!r}")
    if min(shape[:2]) < info.min_size:
        raise SizeError(f"{name} needs an input of at least {info.min_size}x{info.min_size}, got "
                        f"{shape[0]}x{shape[1]}; pass input_shape=({info.min_size}, "
                        f"{info.min_size}, {shape[2]}) or larger (train.py --image-size "
                        f"{info.min_size})")
    return shape


class _Default(int):
    """The default ``num_classes`` (1000, ImageNet's), told apart from an explicit 1000 so that
    shipped weights can supply their own class count when the caller passes none."""


_IMAGENET_CLASSES = _Default(1000)


def get_model(name: str, num_classes: int = _IMAGENET_CLASSES, input_shape=None, *,
              weights: str | None = None, preprocessing=None, include_top: bool = True,
              pooling: str | None = None, **options):
    """Build the network ``name`` as a Keras functional model.

    ``num_classes`` sizes the classifier; ``input_shape`` is (H, W, C), the paper's by default;
    ``preprocessing`` (a name of :data:`kerascnn.layers.PREPROCESSING` or a dict) makes the model
    take raw uint8 pixels; other keyword arguments are the family's options (``batch_norm``,
    ``aux_logits``, ``stride_on`` ...). Options left as ``None`` take the paper's default
    (``classifier_activation=None`` is the logits, as in keras.applications).
    ``weights`` names shipped weights (``get_model("resnet20", weights="cifar10")``, see
    :mod:`kerascnn.weights`): the class count, input shape, preprocessing and options then default
    to the training's, so the model takes raw uint8 pixels. ``weights="imagenet"`` (or
    ``"imagenet:keras"``, ``"imagenet:torchvision"``, a publisher's ``.h5``/``.pth`` file) loads
    published ImageNet weights (:mod:`kerascnn.weights.published`: downloaded once, converted
    once, cached under ``$KERAS_HOME``).

    ``include_top=False`` returns the network up to its last feature map, as keras.applications
    does (ResNet-50 at 224: 7x7x2048), then ``pooling="avg"`` or ``"max"`` pools it to a vector.
    """
    info = model_info(name)
    # --- shipped weights (kerascnn.weights): the manifest supplies what the caller left out ---
    if weights is not None:
        from .weights import build_arguments
        given = None if num_classes is _IMAGENET_CLASSES or not include_top else num_classes
        shipped = build_arguments(info.name, weights, given, input_shape, preprocessing, options)
        num_classes, input_shape = shipped["num_classes"], shipped["input_shape"]
        preprocessing = shipped["preprocessing"]
        options = {**shipped["options"], **options}
    # --- end of shipped weights ---
    num_classes = int(num_classes) if type(num_classes) is _Default else num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    shape = _check_input_shape(info.name, input_shape or info.input_shape, info)
    # None means "the paper's default", except for classifier_activation, where None is the
    # logits (keras.applications' meaning of classifier_activation=None)
    options = {k: v for k, v in options.items()
               if v is not None or k == "classifier_activation"}
    unknown = set(options) - set(info.accepted_options())
    if unknown:
        raise ValueError(f"{info.name} has no option {', '.join(sorted(unknown))}; its options are: "
                         f"{', '.join(info.accepted_options()) or 'none'}")
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', got {pooling!r}")
    if pooling is not None and include_top:
        raise ValueError(f"pooling={pooling!r} applies to a headless model: pass include_top=False")

    def build(input_shape):
        return info.builder(num_classes=num_classes, input_shape=input_shape,
                            preprocessing=preprocessing, name=info.name,
                            **{**info.options, **options})
    try:
        model = build(shape)
    except SizeError as exc:
        h, w, c = shape
        least = exc.min_size or info.min_size
        raise SizeError(f"{info.name} cannot take a {h}x{w}x{c} input: {exc}. The smallest input "
                        f"that works for {info.name} is {least}x{least}; pass a larger "
                        f"input_shape (train.py --image-size {least} or more)",
                        layer=exc.layer, min_size=least) from None
    if weights is not None:
        from .weights import load_weights
        load_weights(model, info.name, weights, build=build, skip_mismatch=not include_top)
    return model if include_top else _headless(model, pooling)


def _headless(model, pooling):
    """``model`` without its classifier (keras.applications' ``include_top=False``): the same
    layers up to the last spatial map on the way to ``predictions`` (an adaptive pool before the
    classifier, AlexNet-OWT's, belongs to the head), then global ``avg_pool`` or ``max_pool``."""
    import keras

    producer = {id(layer.output): layer for layer in model.layers}
    tensor = model.get_layer("predictions").input
    while len(tensor.shape) != 4 or \
            isinstance(producer[id(tensor)], keras.layers.AdaptiveAveragePooling2D):
        tensor = producer[id(tensor)].input
    if pooling == "avg":
        tensor = keras.layers.GlobalAveragePooling2D(name="avg_pool")(tensor)
    elif pooling == "max":
        tensor = keras.layers.GlobalMaxPooling2D(name="max_pool")(tensor)
    return keras.Model(model.input, tensor, name=model.name)


def load_model(path):
    """Load a saved ``.keras`` model of the zoo (for inference: not compiled).

    The zoo's custom layers (LRN, grouped convs, LeNet-1998's layers, ResNet's zero-pad shortcut)
    are registered when their modules are imported; this is the one place that makes sure of it.
    """
    import keras

    from . import layers  # noqa: F401
    _load_families()
    return keras.models.load_model(path, compile=False)
