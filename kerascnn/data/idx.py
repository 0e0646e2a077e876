"""MNIST's IDX files (``idx:PATH``): LeCun's format, read and written."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import tensorflow as tf

from ..files import atomic_write
from .base import GLYPH_DATASETS, DataError, Dataset, Split, dataset_name, stratified_split

__all__ = ["read_idx", "write_idx", "load_idx"]


_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzipped or not): magic ``00 00 type ndim``, big-endian int32 dims, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}i", raw[4:header])
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path} is truncated or corrupt: its header promises {dims} "
                        f"({expected} bytes) but it holds {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def write_idx(path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an IDX file, gzipped when ``path`` ends in ``.gz``."""
    array = np.ascontiguousarray(array, np.uint8)
    data = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    data += array.tobytes()
    atomic_write(path, gzip.compress(data) if str(path).endswith(".gz") else data)


def _find_idx(folder: Path, prefix: str, kind: str) -> Path | None:
    for ext in ("", ".gz"):
        candidate = folder / f"{prefix}-{kind}{ext}"
        if candidate.is_file():
            return candidate
    return None


def load_idx(path: Path, spec, val_split, seed, channels) -> Dataset:
    if not path.exists():
        raise DataError(f"IDX path {path} does not exist; idx:PATH needs the folder holding "
                        f"train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]")
    if path.is_file():
        folder, prefix = path.parent, path.name.split("-images")[0]
    else:
        folder, prefix = path, "train"
    images_file = _find_idx(folder, prefix, "images-idx3-ubyte")
    labels_file = _find_idx(folder, prefix, "labels-idx1-ubyte")
    if images_file is None or labels_file is None:
        raise DataError(f"{folder} lacks {prefix}-images-idx3-ubyte[.gz] and/or "
                        f"{prefix}-labels-idx1-ubyte[.gz]; idx:PATH needs both")
    images, labels = _read_pair(images_file, labels_file)
    test_images = _find_idx(folder, "t10k", "images-idx3-ubyte")
    test_labels = _find_idx(folder, "t10k", "labels-idx1-ubyte")
    if prefix == "train" and test_images and test_labels:
        val_images, val_labels = _read_pair(test_images, test_labels)
        train_idx, source = np.arange(len(labels)), "t10k (test set)"
    else:
        train_idx, val_idx = stratified_split(labels, val_split, seed)
        val_images, val_labels = images[val_idx], labels[val_idx]
        source = f"held-out {val_split:.0%} of each class (seed {seed})"
    images, labels = images[train_idx], labels[train_idx]
    order = np.random.RandomState(seed).permutation(len(labels))
    images, labels = images[order], labels[order]
    num_classes = int(max(labels.max(), val_labels.max())) + 1
    name = dataset_name(folder) if dataset_name(folder) in GLYPH_DATASETS else "mnist"
    native = tuple(images.shape[1:3])
    own_channels = 1

    def split(x, y, what):
        ds = tf.data.Dataset.from_tensor_slices((x[..., None], y.astype(np.int32)))
        return Split(ds, len(y), what)

    return Dataset(spec=spec, name=name, class_names=[str(i) for i in range(num_classes)],
                   channels=channels or own_channels, native_size=native,
                   train=split(images, labels, images_file.name),
                   val=split(val_images, val_labels, source), style="glyphs")


def _read_pair(images_file, labels_file):
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{images_file} must hold N x H x W images and {labels_file} N labels; got "
                        f"shapes {images.shape} and {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{images_file} holds {len(images)} images but {labels_file} holds "
                        f"{len(labels)} labels")
    return images.astype(np.uint8), labels.astype(np.int64)
