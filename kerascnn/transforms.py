"""The evaluation transform as data, and the image functions that apply it.

How an image of any size becomes a model's uint8 input is decided once, when a run is trained
(:meth:`EvalTransform.for_training`), recorded in the run's ``config.json`` (and so in shipped
weights and the export's model card), and read back by export, predict, report, visualize and
serving: the same record as torchvision's ``weights.transforms()`` or timm's
``resolve_data_config``. Two styles:

* ``photos``: resize the shorter side to ``resize`` (bilinear, antialiased), centre ``crop``.
  ``resize`` is ``round(size / 0.875)`` after ImageNet-style ``crop_flip`` training (the
  evaluation crop of AlexNet, VGG, ResNet), else the input size itself;
* ``glyphs`` (MNIST-like): centre-pad to ``crop`` (LeNet's 28 -> 32); larger images, which
  training never saw, are first shrunk to fit inside it (aspect kept).

The TensorFlow functions below are the one home of these pixel operations: the training input
pipeline (:mod:`kerascnn.data`), the SavedModel's ``serving_bytes`` signature and ``predict`` all
call them, so every path sees the same pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import UserError

__all__ = ["EvalTransform", "EVAL_CROP_FRACTION", "STYLES", "IMAGE_EXTENSIONS", "to_channels",
           "fit_to_size", "decode_image", "load_images", "image_files", "why_undecodable"]

#: The centre crop of ImageNet evaluation: the image is resized to size / 0.875 (256 for 224).
EVAL_CROP_FRACTION = 0.875
STYLES = ("photos", "glyphs")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclass(frozen=True)
class EvalTransform:
    """How an image becomes the model's ``[crop[0], crop[1], channels]`` uint8 input."""

    style: str
    resize: int
    crop: tuple[int, int]
    channels: int

    def __post_init__(self):
        if self.style not in STYLES:
            raise UserError(f"unknown image style {self.style!r}; use one of {', '.join(STYLES)}")
        object.__setattr__(self, "crop", tuple(int(d) for d in self.crop))

    @classmethod
    def for_training(cls, style: str, image_size: int, augment: str, channels: int):
        """The validation transform of a run trained at ``image_size`` with ``augment``."""
        size = int(image_size)
        resize = round(size / EVAL_CROP_FRACTION) if augment == "crop_flip" and \
            style == "photos" else size
        return cls(style, resize, (size, size), int(channels))

    @classmethod
    def default(cls, input_shape, style: str = "photos"):
        """No run to read it from: resize photos to the input's size (no crop margin)."""
        height, width, channels = (int(d) for d in input_shape)
        return cls(style, max(height, width), (height, width), channels)

    @classmethod
    def from_dict(cls, record: dict, input_shape=None):
        """From ``config.json``'s ``eval_transform`` (or a model card's ``image_pipeline``)."""
        channels = record.get("channels") or (int(input_shape[-1]) if input_shape else 3)
        return cls(record["style"], int(record["resize"]), tuple(record["crop"]), int(channels))

    def to_dict(self) -> dict:
        record = asdict(self)
        record["crop"] = list(self.crop)
        return record

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (*self.crop, self.channels)

    def describe(self) -> str:
        height, width = self.crop
        if self.style == "glyphs":
            return (f"centre-padded to {height}x{width} (larger images first shrunk to fit, "
                    f"aspect kept), as training fitted its glyphs")
        return (f"shorter side resized to {self.resize} (bilinear, antialiased), centre "
                f"{height}x{width} crop: the run's validation transform")

    def apply(self, image):
        """A decoded uint8 ``[h, w, C]`` tensor -> the model's uint8 ``[H, W, C]`` input."""
        import tensorflow as tf

        height, width = self.crop
        image = to_channels(image, self.channels)
        if self.style == "glyphs":
            image = _shrink_to_fit(image, height, width)
            return tf.image.resize_with_crop_or_pad(image, height, width)
        image = fit_to_size(image, self.resize, "photos")
        return tf.image.resize_with_crop_or_pad(image, height, width)


# --------------------------------------------------------------------------------------------
# Pixel operations (TensorFlow), shared by training, export and serving


def to_channels(image, channels: int):
    """A uint8 ``[h, w, c]`` image with ``channels`` channels (gray <-> RGB, ITU-R 601 luma)."""
    import tensorflow as tf

    have = image.shape[-1]
    if have == channels:
        return image
    if channels == 3:
        return tf.image.grayscale_to_rgb(image)
    return tf.cast(tf.round(tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))), tf.uint8)


def fit_to_size(image, size: int, style: str):
    """Glyphs: centre-pad (or crop) to ``size`` as LeNet-5 did (28x28 digits in a 32x32 field).
    Photos: resize the shorter side to ``size`` (antialiased), then take the centre square."""
    import tensorflow as tf

    if style == "glyphs":
        return tf.image.resize_with_crop_or_pad(image, size, size)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = size / tf.reduce_min(shape)
    new = tf.maximum(tf.cast(tf.math.ceil(shape * scale - 1e-3), tf.int32), size)
    image = tf.image.resize(image, new, antialias=True)
    image = tf.image.resize_with_crop_or_pad(image, size, size)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _shrink_to_fit(image, height, width):
    import tensorflow as tf

    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.minimum(1.0, tf.reduce_min(tf.constant([height, width], tf.float32) / shape))

    def shrink():
        new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), 1)
        resized = tf.image.resize(image, new, antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)

    return tf.cond(scale < 1.0, shrink, lambda: image)


def decode_image(data, transform: EvalTransform):
    """Encoded JPEG/PNG/GIF/BMP bytes -> the model's uint8 input, through ``transform``.

    The one home of the serving-side image path: ``serving_bytes`` runs it in the graph and
    ``kerascnn predict`` runs it for ONNX, so both see the same pixels. It decodes to the model's
    channels (a colour JPEG becomes grayscale for LeNet), then :meth:`EvalTransform.apply`.
    """
    import tensorflow as tf

    if transform.channels == 1:  # GIF and BMP decoders only give colour: convert those
        magic = tf.strings.substr(data, 0, 3)
        image = tf.cond(
            tf.logical_or(tf.equal(magic, "GIF"), tf.strings.regex_full_match(magic, "BM.")),
            lambda: to_channels(tf.io.decode_image(data, channels=3, expand_animations=False), 1),
            lambda: tf.io.decode_image(data, channels=1, expand_animations=False))
        image.set_shape([None, None, 1])
    else:
        image = tf.io.decode_image(data, channels=transform.channels, expand_animations=False)
    return transform.apply(image)


def load_images(paths, transform: EvalTransform) -> np.ndarray:
    """Read image files into a uint8 ``[N, H, W, C]`` batch through :func:`decode_image`."""
    import tensorflow as tf

    batch = []
    for path in map(Path, paths):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UserError(f"cannot read image {path}: {exc.strerror or exc}") from None
        try:
            batch.append(decode_image(tf.constant(data), transform).numpy())
        except (tf.errors.InvalidArgumentError, ValueError):
            raise UserError(f"cannot decode {path}: {why_undecodable(data)}") from None
    return np.stack(batch) if batch else np.zeros((0, *transform.input_shape), np.uint8)


def why_undecodable(data: bytes) -> str:
    """Why bytes that failed to decode did: a truncated JPEG or PNG (the start is right, the end
    marker missing) is not "not an image"."""
    if data[:3] == b"\xff\xd8\xff":
        if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            return ("it is a truncated JPEG (the file ends before its end-of-image marker); copy "
                    "it again or remove it")
        return "it is a damaged JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" not in data[-12:]:
            return ("it is a truncated PNG (the file ends before its IEND chunk); copy it again "
                    "or remove it")
        return "it is a damaged PNG"
    return "it is not a JPEG, PNG, GIF or BMP image"


def image_files(paths) -> list[Path]:
    """Image files named by ``paths``: files as given, folders searched recursively (sorted)."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            files.append(path)
    return files
