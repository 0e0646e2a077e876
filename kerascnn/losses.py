"""The one loss the Keras library lacks: sparse cross-entropy with label smoothing.

Keras' ``CategoricalCrossentropy`` smooths one-hot targets but its sparse twin takes no
``label_smoothing``; the budget recipes need it on integer labels (Szegedy et al. 2016, section 7):
the target puts ``1 - eps`` on the true class and ``eps / K`` on every class, so the loss is
``(1 - eps) * (-log p_y) + eps * mean_k(-log p_k)``. Pure ``keras.ops`` (every backend).
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["SparseSmoothedCrossentropy"]


@keras.saving.register_keras_serializable(package="kerascnn")
class SparseSmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy of probabilities against integer labels smoothed by ``label_smoothing``;
    ``label_smoothing=0`` is exactly ``SparseCategoricalCrossentropy``."""

    def __init__(self, label_smoothing: float = 0.1, name: str = "smoothed_crossentropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        log_p = ops.log(ops.clip(y_pred, 1e-7, 1.0))
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        num_classes = ops.shape(y_pred)[-1]
        nll = -ops.sum(ops.one_hot(labels, num_classes) * log_p, axis=-1)
        uniform = -ops.mean(log_p, axis=-1)
        eps = self.label_smoothing
        return (1.0 - eps) * nll + eps * uniform

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}
