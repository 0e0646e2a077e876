"""What every loader of :mod:`kerascnn.data` shares: the records of a loaded dataset, its errors,
the glyph/photo decision and the seeded stratified split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from ..errors import UserError

__all__ = ["DataError", "UnreadableImagesWarning", "Split", "Dataset", "VAL_FOLDERS",
           "GLYPH_DATASETS", "style_of", "dataset_name", "stratified_split", "check_classes"]

#: Folders that hold a folder dataset's validation split, in the order they are looked for.
VAL_FOLDERS = ("val", "validation", "test")
#: Datasets of small centred glyphs: padded to the network's input (LeNet's 28 -> 32) and never
#: flipped (a mirrored digit is another symbol).
GLYPH_DATASETS = {"mnist", "emnist", "kmnist", "fashion_mnist", "binarized_mnist"}
#: Photos are cached once resized to the crop's source size; above this many bytes the cache is

class DataError(UserError):
    """A dataset spec, path or file the user can fix; the CLI prints it and exits with code 2."""


class UnreadableImagesWarning(UserWarning):
    """Some images could not be decoded; they were skipped (counted, the first ones named)."""


@dataclass
class Split:
    """One split: element-wise ``tf.data`` of ``(uint8 image [H, W, C], int32 label)``."""

    dataset: tf.data.Dataset = field(repr=False)
    count: int
    source: str


@dataclass
class Dataset:
    """A loaded dataset: its splits and what the training needs to know about it.

    ``style`` is ``"glyphs"`` (MNIST-like: padded, never flipped) or ``"photos"``;
    ``native_size`` is the images' (H, W) when they all share it (None otherwise); ``skipped``
    lists the unreadable files.
    """

    spec: str
    name: str
    class_names: list[str]
    channels: int
    native_size: tuple[int, int] | None
    train: Split
    val: Split
    style: str = "photos"
    skipped: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def style_of(name: str) -> str:
    """``glyphs`` for MNIST-like datasets (padded, never flipped), else ``photos``."""
    return "glyphs" if str(name).lower().replace("-", "_") in GLYPH_DATASETS else "photos"


def dataset_name(path: Path) -> str:
    """The dataset's name from its folder (``../shared/data/cifar10`` -> ``cifar10``)."""
    path = path.resolve()
    name = path.name if path.name not in ("train", *VAL_FOLDERS) else path.parent.name
    return name.lower().replace("-", "_")


def stratified_split(labels, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)``: ``round(fraction * n_c)`` random images of each class ``c`` (at
    least one when the class has two or more), chosen with ``seed``; both sorted."""
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(round(fraction * len(idx)))
        k = max(k, 1) if len(idx) >= 2 else 0
        val.append(rng.permutation(idx)[:k])
    val = np.sort(np.concatenate(val)) if val else np.zeros(0, np.int64)
    mask = np.ones(len(labels), bool)
    mask[val] = False
    return np.flatnonzero(mask), val



def check_classes(class_names, where: str) -> None:
    """A classifier needs two classes or more: one class trains a 1-way softmax to a
    meaningless "100% top-1"."""
    if len(class_names) < 2:
        found = f"only {class_names[0]!r}" if class_names else "none"
        raise DataError(f"{where} has {found} as its class{'es' if not class_names else ''}: a "
                        f"classifier needs at least two classes (one subfolder of images each)")
