"""Multi-worker training: the tf.distribute strategies and the two Keras-internal patches they need.

The patches work around keras-team/keras#20585 (open): Keras 3's TensorFlow trainer reduces each
replica's scalar logs with ``strategy.reduce("MEAN", v, axis=0)`` and builds metrics from a first
batch reduced across replicas, both of which fail under ``MultiWorkerMirroredStrategy``. They
touch private Keras modules, so they live here alone: a Keras upgrade that fixes #20585 (or moves
those internals) needs only this file changed. Nothing else in kerascnn patches Keras.
"""

from __future__ import annotations

import os

from ..errors import UserError

__all__ = ["STRATEGIES", "make_strategy", "worker_identity",
           "symbolic_build_from_first_replica"]

STRATEGIES = ("none", "mirrored", "multiworker")


def make_strategy(name: str | None):
    import tensorflow as tf
    if name in (None, "none"):
        return None
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise UserError("--strategy multiworker needs the TF_CONFIG environment variable "
                            '(e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                            '"task": {"type": "worker", "index": 0}}) on every worker')
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        _patch_keras_multiworker()
        return strategy
    raise UserError(f"unknown --strategy {name!r}; use one of {', '.join(STRATEGIES)}")


def worker_identity(strategy) -> tuple[bool, str | None]:
    """(is_chief, "worker-1" style name) under a multi-worker strategy."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type is None:
        return True, None
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)
    return chief, None if chief else f"{task_type}-{task_id}"


def _patch_keras_multiworker() -> None:
    """Work around keras-team/keras#20585 (open): Keras 3's TF trainer reduces each replica's
    scalar logs with ``strategy.reduce("MEAN", v, axis=0)``, which fails under
    MultiWorkerMirroredStrategy. Reduce scalars with ``axis=None`` (the cross-worker mean)."""
    from keras import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer
    if getattr(tf_trainer.reduce_per_replica, "_kerascnn_patched", False):
        return
    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        multi_worker = tf_trainer._collective_all_reduce_multi_worker(strategy)
        if multi_worker and reduction in ("auto", "mean"):
            return tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None if v.shape.rank == 0 else 0), values)
        return original(values, strategy, reduction)

    reduce_per_replica._kerascnn_patched = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def symbolic_build_from_first_replica(model, strategy) -> None:
    """The other half of the keras#20585 workaround: Keras builds metrics from a first batch it
    reduces across replicas (which fails for a nested batch under tf.distribute); only shapes
    matter, so use the first local replica's batch."""
    from keras import tree

    def build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, it in iterator:
                data_batch = tree.map_structure(
                    lambda v: strategy.experimental_local_results(v)[0], next(it))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = build
