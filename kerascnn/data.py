"""Datasets into ``tf.data``: TFDS, image folders, MNIST's IDX files and the bundled sample.

A dataset *spec* names the source:

* ``tfds:NAME[/CONFIG]``: any TensorFlow Datasets image classification dataset (``tfds:mnist``,
  ``tfds:cifar10``, ``tfds:imagenette/160px-v2``); ``data_dir`` points at prepared data.
* ``folder:PATH``: one subfolder per class. ``PATH/train`` and ``PATH/val`` (or ``validation``,
  ``test``) when present, otherwise a seeded, stratified validation split of ``PATH``. An optional
  ``classes.txt`` (``folder human name`` per line, as Imagenette ships) gives readable class names.
* ``idx:PATH``: MNIST's IDX files (``train-images-idx3-ubyte[.gz]`` and ``train-labels-idx1-ubyte``,
  plus ``t10k-*`` for validation when present), PATH being their folder or the images file.
* ``sample``: the sample bundled with the package (``kerascnn/samples/imagenette5``), for offline demos.

Every source yields ``uint8`` images and ``int32`` labels: scaling and normalisation live inside the
model (:func:`kerascnn.layers.image_input`), and :func:`preprocessing_for` is the one place that
decides them per dataset. :func:`pipeline` fits images to the network's input (MNIST is padded from
28x28 to LeNet's 32x32, as in the paper; photos are resized), augments per recipe, caches and
prefetches. Unreadable images are found before training, skipped and named in one warning.
"""

from __future__ import annotations

import gzip
import socket
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from .cli import UserError
from .files import atomic_write

__all__ = ["DataError", "UnreadableImagesWarning", "Split", "Dataset", "SPEC_FORMS", "SAMPLE_DIR",
           "parse_spec", "load", "preprocessing_for", "augmentation_for", "pipeline",
           "stratified_split", "read_idx", "write_idx", "IMAGE_EXTENSIONS"]

#: The bundled offline sample (see its README for provenance and licence).
SAMPLE_DIR = Path(__file__).resolve().parent / "samples" / "imagenette5"

#: Spec forms, as ``--list`` prints them.
SPEC_FORMS = {
    "sample": "the bundled sample: 5 Imagenette classes, 100 train + 20 val images each (default)",
    "tfds:NAME[/CONFIG]": "a TensorFlow Datasets image classification dataset (tfds:mnist, "
                          "tfds:cifar10, tfds:imagenette); --data-dir for prepared data",
    "folder:PATH": "one subfolder per class; PATH/train and PATH/val|validation|test when present, "
                   "otherwise a seeded stratified --val-split",
    "idx:PATH": "MNIST's IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                "t10k-* for validation when present)",
}

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
_VAL_FOLDERS = ("val", "validation", "test")
#: Datasets of small centred glyphs: padded to the network's input (LeNet's 28 -> 32) and never
#: flipped (a mirrored digit is another symbol).
_GLYPH_DATASETS = {"mnist", "emnist", "kmnist", "fashion_mnist", "binarized_mnist"}
#: Photos are cached once resized to the crop's source size; above this many bytes the cache is
#: skipped (decoded every epoch) rather than filling the machine's memory.
CACHE_LIMIT_BYTES = 4 << 30
#: TFDS downloads are tried only when this host answers (offline machines fail fast and clearly,
#: instead of retrying each file for minutes).
DOWNLOAD_PROBE = ("storage.googleapis.com", 443)


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


# --------------------------------------------------------------------------------------------
# Specs


def parse_spec(spec: str | None) -> tuple[str, str]:
    """``"folder:PATH"`` -> ``("folder", "PATH")``; None or ``"sample"`` -> ``("sample", "")``."""
    if spec is None or spec == "sample":
        return "sample", ""
    kind, sep, value = str(spec).partition(":")
    if not sep or kind not in ("tfds", "folder", "idx") or not value:
        raise DataError(f"unknown dataset {spec!r}: use one of {', '.join(SPEC_FORMS)} "
                        f"(for example tfds:mnist, folder:../shared/data/cifar10, "
                        f"idx:../shared/data/mnist)")
    return kind, value


def load(spec: str | None = None, *, data_dir: str | None = None, val_split: float = 0.1,
         seed: int = 0, channels: int | None = None, verbose: bool = True) -> Dataset:
    """Open the dataset ``spec`` (see the module docstring) with its train and validation splits.

    ``val_split`` is the held-out fraction per class when the source has no validation split;
    ``seed`` fixes that split; ``channels`` forces 1 or 3 channels (default: the data's own).
    """
    if not 0 < val_split < 1:
        raise DataError(f"--val-split must be a fraction between 0 and 1 (exclusive), got "
                        f"{val_split!r}; 0.1 holds out 10% of each class")
    if channels not in (None, 1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels!r}")
    kind, value = parse_spec(spec)
    if kind == "sample":
        if not SAMPLE_DIR.is_dir():
            raise DataError(f"the bundled sample is missing ({SAMPLE_DIR}); reinstall kerascnn or "
                            f"pass --dataset")
        return _load_folder(SAMPLE_DIR, "sample", val_split, seed, channels, verbose,
                            name="imagenette")
    if kind == "folder":
        return _load_folder(Path(value).expanduser(), str(spec), val_split, seed, channels, verbose)
    if kind == "idx":
        return _load_idx(Path(value).expanduser(), str(spec), val_split, seed, channels)
    return _load_tfds(value, str(spec), data_dir, val_split, seed, channels, verbose)


# --------------------------------------------------------------------------------------------
# Preprocessing and augmentation: one home for the per-dataset decisions

#: Per-dataset statistics of the training images, in [0, 1] (mean, std per channel).
_DATASET_STATS = {
    "mnist": ([0.1307], [0.3081]),
    "fashion_mnist": ([0.2860], [0.3530]),
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]),
    "cifar100": ([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]),
}
_IMAGENET_STATS = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def preprocessing_for(name: str, channels: int) -> dict:
    """The in-model preprocessing for a dataset: pixels / 255, then the dataset's per-channel mean
    and std (MNIST's, CIFAR's); ImageNet's statistics for other photos (Imagenette is ImageNet),
    0.5/0.5 for other grayscale data. Recorded in the run's config.json."""
    mean, std = _DATASET_STATS.get(name, _IMAGENET_STATS if channels == 3 else ([0.5], [0.5]))
    if len(mean) != channels:  # e.g. MNIST read as RGB, CIFAR as grayscale
        mean, std = [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels
    return {"scale": 1 / 255, "mean": list(mean), "std": list(std)}


AUGMENTATIONS = {
    "none": "no augmentation (MNIST, as LeNet-5's 0.95% without distortions)",
    "pad_crop_flip": "pad 4 pixels, random crop back to size, random horizontal flip (CIFAR, "
                     "He et al. 2015 section 4.2)",
    "crop_flip": "resize the shorter side to size/0.875, random size x size crop, random flip; "
                 "validation takes the centre crop (AlexNet, VGG, GoogLeNet, ResNet)",
}


def augmentation_for(dataset: Dataset, image_size: int, requested: str = "auto") -> str:
    """Resolve a recipe's augmentation for a dataset: glyphs are never flipped or cropped, images
    used at their own size get CIFAR's pad-4 crop, other photos ImageNet-style random crops."""
    if requested != "auto":
        if requested not in AUGMENTATIONS:
            raise DataError(f"unknown augmentation {requested!r}; use auto or one of "
                            f"{', '.join(AUGMENTATIONS)}")
        return requested
    if dataset.style == "glyphs":
        return "none"
    if dataset.native_size == (image_size, image_size):
        return "pad_crop_flip"
    return "crop_flip"


# --------------------------------------------------------------------------------------------
# The input pipeline


def pipeline(split: Split, *, image_size: int, channels: int, style: str, training: bool,
             augment: str = "none", batch_size: int = 32, seed: int = 0,
             native_size: tuple[int, int] | None = None, repeat: bool = False,
             drop_remainder: bool = False, cache: bool = True) -> tf.data.Dataset:
    """Batches of ``(uint8 [N, size, size, channels], int32 [N])`` ready for ``model.fit``.

    Deterministic work (decode, fit to size) happens once and is cached; the random crop and flip
    run every epoch after the cache, in parallel, and batches are prefetched. Images that fail to
    decode are dropped (the loader already named them). With ``repeat`` the training stream never
    ends (``steps_per_epoch`` sets the epoch), which keeps workers in step under tf.distribute.
    """
    size = int(image_size)
    crop_source = round(size / 0.875) if augment == "crop_flip" else size
    # Upsampled images are cached at their native size (CIFAR at 224 would need 10 GB): resize
    # after the cache then. Otherwise the cache holds images already fitted.
    upsample = native_size is not None and max(native_size) < crop_source and style != "glyphs"

    def fit(image, label):
        image = _to_channels(image, channels)
        if not upsample:
            image = _fit(image, crop_source, style)
        return image, label

    ds = split.dataset.map(fit, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    per_image = (max(native_size) if upsample else crop_source) ** 2 * channels
    if cache and split.count * per_image <= CACHE_LIMIT_BYTES:
        ds = ds.cache()
    if training:
        # One image ~ per_image bytes: keep the shuffle buffer within ~512 MB.
        buffer = max(1, min(split.count, (512 << 20) // per_image))
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()

    def finish(image, label):
        if upsample:
            image = _fit(image, crop_source, style)
        if training and augment == "crop_flip":
            image = tf.image.random_crop(image, [size, size, channels])
            image = tf.image.random_flip_left_right(image)
        elif training and augment == "pad_crop_flip":
            image = tf.image.resize_with_crop_or_pad(image, size + 8, size + 8)
            image = tf.image.random_crop(image, [size, size, channels])
            image = tf.image.random_flip_left_right(image)
        elif crop_source != size:  # validation of crop_flip: the centre crop
            image = tf.image.resize_with_crop_or_pad(image, size, size)
        return tf.ensure_shape(image, [size, size, channels]), label

    ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)


def _to_channels(image, channels):
    have = image.shape[-1]
    if have == channels:
        return image
    if channels == 3:
        return tf.image.grayscale_to_rgb(image)
    return tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))), tf.uint8)


def _fit(image, size, style):
    """Glyphs: centre-pad (or crop) to ``size`` as LeNet-5 did (28x28 digits in a 32x32 field).
    Photos: resize the shorter side to ``size`` (antialiased), then take the centre square."""
    if style == "glyphs":
        return tf.image.resize_with_crop_or_pad(image, size, size)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = size / tf.reduce_min(shape)
    new = tf.maximum(tf.cast(tf.math.ceil(shape * scale - 1e-3), tf.int32), size)
    image = tf.image.resize(image, new, antialias=True)
    image = tf.image.resize_with_crop_or_pad(image, size, size)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


# --------------------------------------------------------------------------------------------
# Image folders


def _load_folder(path: Path, spec: str, val_split, seed, channels, verbose, name=None) -> Dataset:
    if not path.exists():
        raise DataError(f"dataset folder {path} does not exist; folder:PATH needs a folder with "
                        f"one subfolder of images per class")
    if not path.is_dir():
        raise DataError(f"{path} is not a folder; folder:PATH needs a folder with one subfolder of "
                        f"images per class")
    train_root = path / "train" if (path / "train").is_dir() else path
    val_root = next((path / v for v in _VAL_FOLDERS if (path / v).is_dir()), None)
    if train_root == path:
        val_root = None  # a bare class folder: hold out a split of it
    class_dirs = _class_dirs(train_root)
    class_names = [d.name for d in class_dirs]
    readable = _class_names_file(path)
    files, labels = _list_images(class_dirs, train_root)

    if val_root is not None:
        val_class_dirs = _class_dirs(val_root)
        unknown = sorted({d.name for d in val_class_dirs} - set(class_names))
        if unknown:
            raise DataError(f"{val_root} has class folders that {train_root} lacks: "
                            f"{', '.join(unknown[:5])}; the validation classes must be training "
                            f"classes")
        index = {n: i for i, n in enumerate(class_names)}
        val_files, val_labels = _list_images(val_class_dirs, val_root,
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
    if not files or not val_files:
        raise DataError(f"no readable images left in {path} after skipping {len(skipped)} "
                        f"unreadable file(s), e.g. {', '.join(skipped[:3])}")

    # Shuffle the file order once (seeded): the cache then holds a mixed order, so a bounded
    # shuffle buffer still mixes classes.
    order = np.random.RandomState(seed).permutation(len(files))
    files, labels = [files[i] for i in order], labels[order]
    name = name or _dataset_name(path)
    return Dataset(
        spec=spec, name=name,
        class_names=[readable.get(c, c) for c in class_names],
        channels=channels, native_size=sizes.pop() if len(sizes) == 1 else None,
        train=Split(_file_dataset(files, labels, channels), len(files), f"{train_root.name}/"),
        val=Split(_file_dataset(val_files, val_labels, channels), len(val_files), val_source),
        style="glyphs" if name in _GLYPH_DATASETS else "photos", skipped=skipped)


def _class_dirs(root: Path) -> list[Path]:
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not dirs:
        raise DataError(f"{root} has no class subfolders: folder:PATH expects PATH/<class>/<image> "
                        f"(optionally under PATH/train and PATH/val)")
    return dirs


def _list_images(class_dirs, root, labels=None):
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


def _dataset_name(path: Path) -> str:
    """The dataset's name from its folder (``../shared/data/cifar10`` -> ``cifar10``)."""
    path = path.resolve()
    name = path.name if path.name not in ("train", *_VAL_FOLDERS) else path.parent.name
    return name.lower().replace("-", "_")


# --------------------------------------------------------------------------------------------
# Stratified split


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


# --------------------------------------------------------------------------------------------
# IDX files (LeCun's MNIST format)

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


def _load_idx(path: Path, spec, val_split, seed, channels) -> Dataset:
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
    name = _dataset_name(folder) if _dataset_name(folder) in _GLYPH_DATASETS else "mnist"
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


# --------------------------------------------------------------------------------------------
# TensorFlow Datasets


def _online(timeout: float = 3.0) -> bool:
    """Whether TFDS' download host answers (a socket, no data is fetched)."""
    try:
        socket.create_connection(DOWNLOAD_PROBE, timeout=timeout).close()
        return True
    except OSError:
        return False


def _load_tfds(name, spec, data_dir, val_split, seed, channels, verbose) -> Dataset:
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as exc:  # DatasetNotFoundError, bad config names, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"TFDS has no dataset {name!r} ({first}); see "
                        f"https://www.tensorflow.org/datasets/catalog, or use folder:PATH"
                        ) from None
    features = builder.info.features
    keys = builder.info.supervised_keys
    simple = keys and len(keys) == 2 and all(isinstance(k, str) for k in keys)
    image_key, label_key = keys if simple else ("image", "label")
    if not (image_key in features and label_key in features
            and isinstance(features[image_key], tfds.features.Image)
            and isinstance(features[label_key], tfds.features.ClassLabel)):
        raise DataError(f"tfds:{name} is not an image classification dataset (it needs an image "
                        f"and a class label feature)")

    if not builder.is_prepared():
        where = data_dir or "~/tensorflow_datasets"
        ways_out = (f"pass --data-dir DIR pointing at a prepared copy (DIR/{builder.name}/...), or "
                    f"use an image folder: --dataset folder:PATH (one subfolder per class)")
        if not _online():
            raise DataError(f"tfds:{name} is not prepared in {where} and cannot be downloaded "
                            f"(no network connection); {ways_out}")
        if verbose:
            print(f"downloading and preparing tfds:{name} into {where} (once)")
        before = _snapshot(builder)
        try:
            builder.download_and_prepare()
        except Exception as exc:
            _remove_new(builder, before)
            raise DataError(f"downloading tfds:{name} failed ({type(exc).__name__}: "
                            f"{str(exc)[:200]}); {ways_out}") from None

    # tfds.testing.mock_data builds datasets from code and knows no splits: assume train/test.
    splits = list(builder.info.splits) or ["train", "test"]
    if "train" not in splits:
        raise DataError(f"tfds:{name} has no 'train' split (it has {', '.join(splits)})")
    image_shape = features[image_key].shape
    own_channels = image_shape[-1] or 3
    channels = channels or own_channels
    class_names = list(features[label_key].names)

    def supervised(split):
        ds = builder.as_dataset(split=split, shuffle_files=False)
        return ds.map(lambda ex: (_to_channels(ex[image_key], channels),
                                  tf.cast(ex[label_key], tf.int32)),
                      num_parallel_calls=tf.data.AUTOTUNE)

    def count(ds, split):
        n = int(ds.cardinality())
        return n if n >= 0 else builder.info.splits[split].num_examples

    val_name = next((s for s in ("validation", "test") if s in splits), None)
    train = supervised("train")
    if val_name:
        val = supervised(val_name)
        train_split = Split(train, count(train, "train"), "train")
        val_split_ = Split(val, count(val, val_name), val_name)
    else:
        labels_only = builder.as_dataset(split="train", shuffle_files=False,
                                         decoders={image_key: tfds.decode.SkipDecoding()})
        labels = np.concatenate([b.numpy() for b in
                                 labels_only.map(lambda ex: ex[label_key]).batch(4096)])
        train_idx, val_idx = stratified_split(labels, val_split, seed)
        is_val = np.zeros(len(labels), bool)
        is_val[val_idx] = True
        is_val = tf.constant(is_val)

        def pick(want_val):
            return (train.enumerate().filter(lambda i, xy: tf.equal(is_val[i], want_val))
                    .map(lambda i, xy: xy))

        train_split = Split(pick(False), len(train_idx), "train")
        val_split_ = Split(pick(True), len(val_idx),
                           f"held-out {val_split:.0%} of each class (seed {seed})")
    native = tuple(image_shape[:2]) if None not in image_shape[:2] else None
    return Dataset(spec=spec, name=builder.name, class_names=class_names, channels=channels,
                   native_size=native, train=train_split, val=val_split_,
                   style="glyphs" if builder.name in _GLYPH_DATASETS else "photos")


def _snapshot(builder) -> set:
    root = Path(str(builder.data_dir_root))
    return {p for p in root.rglob("*")} if root.exists() else {None}


def _remove_new(builder, before: set) -> None:
    """Remove what a failed download created under the TFDS data dir (nothing half-written)."""
    import shutil
    root = Path(str(builder.data_dir_root))
    if None in before:
        shutil.rmtree(root, ignore_errors=True)
        return
    for p in sorted(root.rglob("*"), key=lambda p: len(p.parts)):
        if p not in before and p.exists():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
