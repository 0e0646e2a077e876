"""Evaluating a trained network: top-1, top-k, per-class accuracy and the confusion matrix.

:func:`evaluate_model` computes them in NumPy from a model's probabilities over batches;
:func:`evaluate` runs a finished run on its own validation split (or another dataset's) through
:meth:`kerascnn.runs.RunDir.validation_data`, the one way back from a run to its data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import data as data_lib
from ..errors import UserError
from ..files import write_json
from ..runs import RunDir

__all__ = ["evaluate", "evaluate_model", "write_plots", "TOP_K", "top_k_for"]

#: The k of the top-k accuracy, reported only where it is below the number of classes: with 5
#: classes or fewer every label is in the top 5, a metric that cannot fail.
TOP_K = 5


def top_k_for(num_classes: int) -> int | None:
    """:data:`TOP_K` when it is below ``num_classes``, else None (no top-k is reported)."""
    return TOP_K if TOP_K < num_classes else None


def evaluate_model(model, dataset, class_names, label_map=None, *, flip: bool = False) -> dict:
    """Top-1, top-k (k = 5 where there are more classes, else None), loss, per-class accuracy and confusion matrix of
    ``model`` (probabilities out) over a batched ``(image, label)`` dataset.

    ``flip`` is test-time flip averaging: the mean of the probabilities of each image and of its
    mirror image (photos only: a mirrored digit is another symbol). It is an evaluation option,
    reported beside the plain figure (``val_top1_flip``), never in its place."""
    num_classes = len(class_names)
    probs, labels = [], []
    for x, y in dataset:
        # NumPy in: JAX's jitted predict takes no tf.Tensor (train.py on KERAS_BACKEND=jax)
        x = np.asarray(x)
        p = np.asarray(model.predict_on_batch(x), np.float64)
        if flip:
            p = (p + np.asarray(model.predict_on_batch(x[:, :, ::-1]), np.float64)) / 2
        probs.append(p)
        labels.append(np.asarray(y))
    probs = np.concatenate(probs) if probs else np.zeros((0, num_classes))
    labels = np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64)
    if label_map is not None:
        labels = label_map[labels]
    k = top_k_for(num_classes)
    top = np.argsort(-probs, axis=1)[:, :k or 1]
    hit1 = top[:, 0] == labels
    hitk = (top == labels[:, None]).any(axis=1) if k else None
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))))
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (labels, top[:, 0]), 1)
    support = confusion.sum(axis=1)
    per_class = {name: (float(confusion[i, i] / support[i]) if support[i] else None)
                 for i, name in enumerate(class_names)}
    return {"top1": float(hit1.mean()) if len(labels) else 0.0,
            "top5": (float(hitk.mean()) if len(labels) else 0.0) if k else None, "k": k,
            "loss": loss,
            "images": int(len(labels)), "per_class_accuracy": per_class,
            "confusion_matrix": confusion.tolist()}


def write_plots(run_dir: Path, results: dict, class_names) -> None:
    from .. import plots
    if (run_dir / "history.csv").exists():
        plots.training_curves(run_dir / "history.csv", run_dir / "training_curves.png")
    plots.confusion_matrix(np.asarray(results["confusion_matrix"]), class_names,
                           run_dir / "confusion_matrix.png",
                           title=f"validation top-1 {results['top1']:.1%}")


def evaluate(run_dir, dataset: str | None = None, *, data_dir: str | None = None,
             batch_size: int = 128, save: bool = True, verbose: bool = True,
             flip: bool = False) -> dict:
    """Top-1, top-5 and per-class accuracy of a trained run on the validation split of ``dataset``
    (default: the run's own; another spec is matched to the run's classes by name). Saved as
    ``RUN_DIR/evaluation.json`` (``evaluation-<dataset>.json`` for another dataset)."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise UserError(f"{run.path} is not a run directory (train one with train.py --arch NAME)")
    if not run.has_config() or not run.model_file.is_file():
        raise UserError(f"{run.path} has no config.json and model.keras: it is not a finished run "
                        f"(re-run its training command to finish it)")
    config = run.read_config()
    spec = dataset or config.dataset
    ds, batches, label_map = run.validation_data(dataset, data_dir=data_dir,
                                                 batch_size=batch_size, verbose=verbose)
    from ..registry import load_model
    model = load_model(run.model_file)
    results = evaluate_model(model, batches, config.class_names, label_map)
    report = {"run_dir": str(run.path), "dataset": spec, "split": ds.val.source,
              "top1": results["top1"], "top5": results["top5"], "top5_k": results["k"],
              "loss": results["loss"], "images": results["images"],
              "skipped_images": len(ds.skipped),
              "per_class_accuracy": results["per_class_accuracy"]}
    if flip:  # beside the plain figure, never in its place
        if ds.style == "glyphs":
            raise UserError("--flip averages each image with its mirror image, which for glyphs "
                            "(MNIST-like data) is another symbol; evaluate without --flip")
        report["top1_flip"] = evaluate_model(model, batches, config.class_names, label_map,
                                             flip=True)["top1"]
    if save:
        name = "evaluation.json" if dataset in (None, config.dataset) else \
            f"evaluation-{data_lib.spec_slug(spec)}.json"
        report["saved"] = str(run.path / name)
        write_json(run.path / name, report)
    return report
