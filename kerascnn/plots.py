"""Plots as PNG files, drawn with matplotlib's object API on the Agg canvas.

No ``pyplot``: figures are plain :class:`matplotlib.figure.Figure` objects, so nothing touches a
display or global state and plotting works on headless machines and in threads. Each function
writes its PNG to a temporary file and renames it, so a plot is never half-written.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["save_figure", "read_history", "training_curves", "confusion_matrix"]


def save_figure(fig: Figure, path, dpi: int = 120) -> Path:
    """Render ``fig`` to ``path`` (PNG) via a temporary file and an atomic rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    try:
        FigureCanvasAgg(fig)
        fig.savefig(tmp, dpi=dpi, format="png")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_history(path) -> dict[str, np.ndarray]:
    """``history.csv`` (Keras' CSVLogger) as columns of floats."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    keys = rows[0].keys() if rows else []
    return {k: np.array([float(r[k]) if r[k] not in ("", None) else np.nan for r in rows])
            for k in keys}


def _metric(history: dict, name: str, prefix: str = "") -> np.ndarray | None:
    """``top1`` or GoogLeNet's ``predictions_top1`` (with ``prefix="val_"`` the validation one)."""
    for key in (f"{prefix}{name}", f"{prefix}predictions_{name}"):
        if key in history:
            return history[key]
    return None


def training_curves(history, path, *, title: str | None = None) -> Path:
    """Loss, top-1 accuracy and learning rate per epoch, training and validation side by side.

    ``history`` is a ``history.csv`` path or a dict of columns (``epoch``, ``loss``, ``val_loss``,
    ``top1``/``val_top1``, ``learning_rate``).
    """
    if not isinstance(history, dict):
        history = read_history(history)
    epochs = history.get("epoch", np.arange(len(history.get("loss", [])))) + 1
    fig = Figure(figsize=(12, 3.6), layout="constrained")
    panels = [("loss", "loss (total)", False), ("top1", "top-1 accuracy", False),
              ("learning_rate", "learning rate", True)]
    for i, (name, label, log) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        train = history.get(name) if name in ("loss", "learning_rate") else _metric(history, name)
        val = history.get("val_loss") if name == "loss" else _metric(history, name, "val_")
        if train is not None:
            ax.plot(epochs, train, marker="o", ms=3, label="train" if name != "learning_rate"
                    else None)
        if val is not None and name != "learning_rate":
            ax.plot(epochs, val, marker="o", ms=3, label="validation")
        if log and train is not None and np.all(train[~np.isnan(train)] > 0):
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        if name != "learning_rate" and (train is not None or val is not None):
            ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def confusion_matrix(matrix, class_names, path, *, title: str | None = None,
                     normalize: bool = True) -> Path:
    """The confusion matrix (rows: true class, columns: predicted), row-normalised by default,
    with counts written in the cells when there are few classes."""
    matrix = np.asarray(matrix, np.float64)
    n = len(class_names)
    shown = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1) if normalize else matrix
    side = min(2.5 + 0.45 * n, 24)
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class" if normalize
                 else "images")
    if n <= 40:
        ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), class_names, fontsize=8)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if shown[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title or "confusion matrix")
    return save_figure(fig, path)
