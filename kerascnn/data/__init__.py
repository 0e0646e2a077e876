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

The loaders live beside this module (:mod:`.folders`, :mod:`.idx`; TFDS here), their shared
records in :mod:`.base`. Every source yields ``uint8`` images and ``int32`` labels: scaling and normalisation live inside the
model (:func:`kerascnn.layers.image_input`), and :func:`preprocessing_for` is the one place that
decides them per dataset. :func:`pipeline` fits images to the network's input (MNIST is padded from
28x28 to LeNet's 32x32, as in the paper; photos are resized), augments per recipe, caches and
prefetches. Unreadable images are found before training, skipped and named in one warning.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import numpy as np
import tensorflow as tf

from ..transforms import IMAGE_EXTENSIONS, EvalTransform, fit_to_size, to_channels
from .base import (GLYPH_DATASETS, VAL_FOLDERS, DataError, Dataset, Split,  # noqa: F401
                   UnreadableImagesWarning, check_classes, dataset_name, stratified_split,
                   style_of)
from .folders import class_dirs, list_images, load_folder  # noqa: F401
from .idx import load_idx, read_idx, write_idx  # noqa: F401

__all__ = ["DataError", "UnreadableImagesWarning", "Split", "Dataset", "SPEC_FORMS", "SAMPLE_DIR",
           "parse_spec", "load", "preprocessing_for", "augmentation_for", "pipeline",
           "stratified_split", "read_idx", "write_idx", "IMAGE_EXTENSIONS", "VAL_FOLDERS",
           "GLYPH_DATASETS", "dataset_name", "style_of", "eval_transform", "spec_slug"]

#: The bundled offline sample (see its README for provenance and licence).
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "samples" / "imagenette5"

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

CACHE_LIMIT_BYTES = 4 << 30
#: TFDS downloads are tried only when this host answers (offline machines fail fast and clearly,
#: instead of retrying each file for minutes).
DOWNLOAD_PROBE = ("storage.googleapis.com", 443)

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


def spec_slug(spec: str | None) -> str:
    """A short file-name-safe name of a dataset spec (``folder:../data/cifar10/train`` ->
    ``cifar10``), for run directories and evaluation files."""
    kind, value = parse_spec(spec)
    if kind == "sample":
        return "sample"
    if kind == "tfds":
        return value.replace("/", "-")
    path = Path(value).expanduser().resolve()
    name = path.parent.name if path.name in ("train", "val", "validation", "test") else path.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or kind


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
        return load_folder(SAMPLE_DIR, "sample", val_split, seed, channels, verbose,
                            name="imagenette")
    if kind == "folder":
        return load_folder(Path(value).expanduser(), str(spec), val_split, seed, channels, verbose)
    if kind == "idx":
        return load_idx(Path(value).expanduser(), str(spec), val_split, seed, channels)
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


def eval_transform(dataset: Dataset, image_size: int, augment: str) -> EvalTransform:
    """The validation transform of ``dataset`` at ``image_size`` after ``augment`` training:
    computed once, at training time, and recorded in the run."""
    return EvalTransform.for_training(dataset.style, image_size, augment, dataset.channels)


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
    # the validation transform's resize is the crop's source size in training too
    crop_source = EvalTransform.for_training("photos", size, augment, channels).resize
    # Upsampled images are cached at their native size (CIFAR at 224 would need 10 GB): resize
    # after the cache then. Otherwise the cache holds images already fitted.
    upsample = native_size is not None and max(native_size) < crop_source and style != "glyphs"

    def fit(image, label):
        image = to_channels(image, channels)
        if not upsample:
            image = fit_to_size(image, crop_source, style)
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
            image = fit_to_size(image, crop_source, style)
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


# --------------------------------------------------------------------------------------------
# Image folders


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
        return ds.map(lambda ex: (to_channels(ex[image_key], channels),
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
                   style=style_of(builder.name))


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
