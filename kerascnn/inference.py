"""The one inference model: what evaluation, export and serving run of a trained network.

A network as trained may carry things only training needs: GoogLeNet's auxiliary classifiers
(extra outputs), augmentation layers, a mixed-precision dtype policy. :func:`inference_model`
returns the same layers (so the same weights) without them: one output, ``predictions``;
augmentation layers replaced by Identity; every layer computing in float32. A model that needs
none of this is returned as it is.
"""

from __future__ import annotations

import numpy as np

__all__ = ["inference_model", "is_augmentation", "AUGMENTATION_LAYERS"]

#: Keras layers that only act in training (identity at inference) beside the ``Random*`` family;
#: they also break ONNX conversion (keras-team/keras#21346).
AUGMENTATION_LAYERS = {"AugMix", "CutMix", "MixUp", "RandAugment"}


def is_augmentation(layer) -> bool:
    """A Keras augmentation layer (or a Pipeline of only such layers)."""
    import keras

    name = type(layer).__name__
    if isinstance(layer, keras.layers.Pipeline):
        return all(map(is_augmentation, layer.layers))
    return type(layer).__module__.startswith("keras.") and (name.startswith("Random")
                                                             or name in AUGMENTATION_LAYERS)


def _mixed(layer) -> bool:
    policy = getattr(layer, "dtype_policy", None)
    return policy is not None and policy.name.startswith("mixed_")


def inference_model(model, *, copy: bool = False):
    """``model`` for evaluation and export: the ``predictions`` output only, augmentation layers
    as Identity, float32 compute (see the module docstring). Weights are shared with ``model``,
    or copied into new layers when a mixed precision policy is undone, or when ``copy`` asks
    for a model of its own (one trained under a tf.distribute strategy: outside its scope the
    copy predicts on this worker only)."""
    import keras

    if len(model.outputs) > 1:
        inputs = model.input if len(model.inputs) == 1 else model.inputs
        model = keras.Model(inputs, model.get_layer("predictions").output, name=model.name)
    augmented = any(is_augmentation(layer) for layer in model.layers)
    mixed = any(_mixed(layer) for layer in model.layers)
    if not (augmented or mixed or copy):
        return model

    def clone(layer):
        if is_augmentation(layer):
            return keras.layers.Identity(name=layer.name)
        if _mixed(layer):
            return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})
        return layer.__class__.from_config(layer.get_config()) if copy else layer

    fresh = keras.models.clone_model(model, clone_function=clone)
    if mixed or copy:
        for layer in fresh.layers:
            source = model.get_layer(layer.name)
            if layer is not source and layer.weights:
                layer.set_weights([np.asarray(w) for w in source.get_weights()])
    return fresh
