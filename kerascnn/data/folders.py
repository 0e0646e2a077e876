"""Image folders (``folder:PATH``, and the bundled sample): one subfolder per class.

Every image is decoded once before training, in parallel: unreadable files are skipped and named
in one warning; a class left without a readable image is an error.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

from ..transforms import IMAGE_EXTENSIONS
from .base import (VAL_FOLDERS, DataError, Dataset, Split, UnreadableImagesWarning, check_classes,
                   dataset_name, stratified_split, style_of)

__all__ = ["load_folder", "list_images", "class_dirs"]


def load_folder(path: Path, spec: str, val_split, seed, channels, verbose, name=None) -> Dataset:
    if not path.exists():
        raise DataError(f"dataset folder {path} does not exist; folder:PATH needs a folder with "
                        f"one subfolder of images per class")
    if not path.is_dir():
        raise DataError(f"{path} is not a folder; folder:PATH needs a folder with one subfolder of "
                        f"images per class")
    train_root = path / "train" if (path / "train").is_dir() else path
    val_root = next((path / v for v in VAL_FOLDERS if (path / v).is_dir()), None)
    if train_root == path:
        val_root = None  # a bare class folder: hold out a split of it
    train_dirs = class_dirs(train_root)
    class_names = [d.name for d in train_dirs]
    check_classes(class_names, str(train_root))
    readable = _class_names_file(path)
    files, labels = list_images(train_dirs, train_root)

    if val_root is not None:
        val_class_dirs = class_dirs(val_root)
        unknown = sorted({d.name for d in val_class_dirs} - set(class_names))
        if unknown:
            raise DataError(f"{val_root} has class folders that {train_root} lacks: "
                            f"{', '.join(unknown[:5])}; the validation classes must be training "
                            f"classes")
        index = {n: i for i, n in enumerate(class_names)}
        val_files, val_labels = list_images(val_class_dirs, val_root,
                                             [index[d.name] for d in val_class_dirs])
        val_source = f"{val_root.name}/"
    else:
        train_idx, val_idx = stratified_split(labels, val_split, seed)
        val_files, val_labels = [files[i] for i in val_idx], labels[val_idx]
        files, labels = [files[i] for i in train_idx], labels[train_idx]
        val_source = f"held-out {val_split:.0%} of each class (seed {seed})"
    if not len(val_files):
        raise DataError(f"no validation images in {path}: add images to {val_root or path} or "
                        f"raise --val-split")

    channels = channels or _peek_channels(files[:20])
    all_files = files + val_files
    ok, sizes = _scan(all_files, channels, verbose)
    skipped = [f for f, good in zip(all_files, ok) if not good]
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s) of {len(all_files)}: "
                      f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}",
                      UnreadableImagesWarning, stacklevel=3)
    n = len(files)
    train_ok, val_ok = ok[:n], ok[n:]
    files = [f for f, good in zip(files, train_ok) if good]
    labels = labels[train_ok]
    val_files = [f for f, good in zip(val_files, val_ok) if good]
    val_labels = val_labels[val_ok]
    unseen = [class_names[c] for c in range(len(class_names)) if not np.any(labels == c)]
    if unseen:  # a class whose every training image is unreadable would never be learnt
        raise DataError(f"no readable training image left in class {', '.join(unseen[:5])} of "
                        f"{train_root} (all its files failed to decode, e.g. "
                        f"{', '.join(skipped[:3])}); fix or remove those files, or the folder")
    if not files or not val_files:
        raise DataError(f"no readable images left in {path} after skipping {len(skipped)} "
                        f"unreadable file(s), e.g. {', '.join(skipped[:3])}")

    # Shuffle the file order once (seeded): the cache then holds a mixed order, so a bounded
    # shuffle buffer still mixes classes.
    order = np.random.RandomState(seed).permutation(len(files))
    files, labels = [files[i] for i in order], labels[order]
    name = name or dataset_name(path)
    return Dataset(
        spec=spec, name=name,
        class_names=[readable.get(c, c) for c in class_names],
        channels=channels, native_size=sizes.pop() if len(sizes) == 1 else None,
        train=Split(_file_dataset(files, labels, channels), len(files), f"{train_root.name}/"),
        val=Split(_file_dataset(val_files, val_labels, channels), len(val_files), val_source),
        style=style_of(name), skipped=skipped)


def class_dirs(root: Path) -> list[Path]:
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not dirs:
        raise DataError(f"{root} has no class subfolders: folder:PATH expects PATH/<class>/<image> "
                        f"(optionally under PATH/train and PATH/val)")
    return dirs


def list_images(class_dirs, root, labels=None):
    files, out = [], []
    for i, d in enumerate(class_dirs):
        images = sorted(str(f) for f in d.iterdir()
                        if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
        if not images:
            raise DataError(f"class folder {d} has no images ({', '.join(IMAGE_EXTENSIONS)}); add "
                            f"images or remove the folder")
        files += images
        out += [i if labels is None else labels[i]] * len(images)
    return files, np.asarray(out, np.int32)


def _class_names_file(path: Path) -> dict:
    """``classes.txt`` beside the class folders: ``n01440764 tench`` -> {"n01440764": "tench"}."""
    names = {}
    file = path / "classes.txt"
    if file.is_file():
        for line in file.read_text(encoding="utf-8").splitlines():
            key, _, readable = line.strip().partition(" ")
            if key and readable.strip():
                names[key] = readable.strip()
    return names


def _peek_channels(files) -> int:
    """1 when every peeked image is grayscale, else 3 (headers only, via Pillow)."""
    from PIL import Image
    modes = set()
    for f in files:
        try:
            with Image.open(f) as im:
                modes.add(im.mode)
        except Exception:  # unreadable files are the scan's business
            continue
    return 1 if modes and modes <= {"1", "L", "LA", "I", "I;16", "F"} else 3


def _decode(path, channels):
    image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])
    return image


def _file_dataset(files, labels, channels) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((files, labels))
    return ds.map(lambda f, y: (_decode(f, channels), y), num_parallel_calls=tf.data.AUTOTUNE)


def _scan(files, channels, verbose) -> tuple[np.ndarray, set]:
    """Decode every image once, in parallel: which ones are readable, and their sizes."""
    ok = np.zeros(len(files), bool)
    sizes = set()
    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(files)), files))
    ds = ds.map(lambda i, f: (i, tf.shape(_decode(f, channels))[:2]),
                num_parallel_calls=tf.data.AUTOTUNE).ignore_errors().batch(512)
    progress = None
    if verbose and len(files) > 2000:
        import keras
        print(f"checking {len(files)} images")
        progress = keras.utils.Progbar(len(files), unit_name="image")
    seen = 0
    for index, shape in ds:
        ok[index.numpy()] = True
        sizes.update(map(tuple, shape.numpy().tolist()))
        seen += len(index)
        if progress:
            progress.update(seen)
    if progress:
        progress.update(len(files), finalize=True)
    return ok, sizes
