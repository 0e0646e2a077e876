"""Compiling a network per its recipe: the loss, the optimizer and its schedule, the papers'
weight decay (an L2 penalty on kernels, see :mod:`kerascnn.recipes`) and mixed precision."""

from __future__ import annotations

from pathlib import Path

from ..recipes import Recipe

__all__ = ["compile_model", "add_weight_decay", "mixed_policy", "cpu_has_bfloat16"]


def add_weight_decay(model, weight_decay: float) -> int:
    """L2 on every trainable kernel (conv, dense), added to the loss as the papers' SGD did:
    ``wd/2 * ||w||^2`` per kernel. Biases and batch-norm parameters are not decayed. The
    regularizer lives on the variables, not in the layer configs, so the saved model is clean."""
    import keras
    if not weight_decay:
        return 0
    n = 0
    for variable in model.trainable_weights:
        if variable.path.split("/")[-1] in ("kernel", "depthwise_kernel"):
            variable.regularizer = keras.regularizers.L2(weight_decay / 2)
            n += 1
    return n


def _optimizer(recipe: Recipe, steps_per_epoch: int):
    """The recipe's optimizer; the per-step ``cosine`` schedule lives inside it (Keras'
    ``CosineDecay`` with its linear warm-up), the per-epoch schedules in a callback."""
    import keras
    lr = recipe.effective_lr()
    if recipe.schedule == "cosine":
        warmup = recipe.warmup_epochs * steps_per_epoch
        decay = max(1, recipe.epochs * steps_per_epoch - warmup)
        lr = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else lr, decay, alpha=0.0, warmup_target=lr if warmup else None,
            warmup_steps=warmup)
    if recipe.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=recipe.momentum, nesterov=recipe.nesterov)
    return keras.optimizers.Adam(lr)


def _loss(recipe: Recipe):
    import keras
    if recipe.label_smoothing:
        from ..losses import SparseSmoothedCrossentropy
        return SparseSmoothedCrossentropy(recipe.label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy()


def compile_model(model, recipe: Recipe, num_classes: int, steps_per_epoch: int = 1):
    """Cross-entropy on ``predictions`` (+ the auxiliary heads, weighted per the recipe);
    top-1 and top-5 accuracy."""
    import keras
    from .evaluation import top_k_for
    k = top_k_for(num_classes)  # no top-k where every class is in it
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="top1"),
               *([keras.metrics.SparseTopKCategoricalAccuracy(k=k, name=f"top{k}")] if k else [])]
    optimizer = _optimizer(recipe, steps_per_epoch)
    names = list(model.output_names)
    if len(names) == 1:
        model.compile(optimizer, _loss(recipe), metrics=metrics)
        return "val_top1", names
    aux = recipe.aux_loss_weight if recipe.aux_loss_weight is not None else 0.3
    model.compile(optimizer,
                  loss={n: _loss(recipe) for n in names},
                  loss_weights={n: 1.0 if n == "predictions" else aux for n in names},
                  metrics={"predictions": metrics})
    return "val_predictions_top1", names


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX, read from
    /proc/cpuinfo). Elsewhere oneDNN emulates it, several times slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def mixed_policy(notes: list | None = None) -> str | None:
    """float16 on GPUs; bfloat16 on CPUs that compute it natively (no loss scaling needed); on
    other CPUs None (float32), with a note: emulated bfloat16 measured 5x slower here."""
    import tensorflow as tf
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    if cpu_has_bfloat16():
        return "mixed_bfloat16"
    if notes is not None:
        notes.append("--mixed-precision: this CPU has no native bfloat16 (no avx512_bf16/amx_bf16 "
                     "in /proc/cpuinfo), where emulated bfloat16 trains ~5x slower; training in "
                     "float32")
    return None
