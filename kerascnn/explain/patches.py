"""The image patches of a dataset that excite each feature map most (Zeiler & Fergus 2013, Fig. 2),
cut out by the layer's receptive field (:func:`kerascnn.receptive_fields.receptive_fields`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from .maps import _as_images, _batches, _input
from ..arithmetic import ReceptiveField
from ..receptive_fields import receptive_fields

__all__ = ["top_patches", "TopPatches"]


# --- the patches that excite a feature map (Zeiler & Fergus 2013, Fig. 2) -------------------------

@dataclass
class TopPatches:
    """The ``k`` strongest activations of each feature map of ``layer`` over a dataset.

    Arrays are indexed ``[map, rank]`` (rank 0 the strongest): ``channels[map]`` is the feature
    map's index in the layer; ``scores`` the activation; ``image_index`` the image's position in the
    pass over the dataset; ``labels`` its label (-1 when the dataset has none); ``position`` the
    unit's ``(row, col)`` in the map; ``box`` its receptive field ``(top, left, bottom, right)`` in
    input pixels (bottom/right exclusive, not clipped: ``field.box(row, col)``); ``patches`` the
    pixels of that box, ``[maps, k, r_h, r_w, C]`` in the images' dtype, zero where the field
    reaches past the image. A map with fewer than ``k`` images seen has score ``-inf`` and image -1
    in the rest.
    """

    layer: str
    field: ReceptiveField
    channels: np.ndarray
    scores: np.ndarray
    image_index: np.ndarray
    labels: np.ndarray
    position: np.ndarray
    box: np.ndarray
    patches: np.ndarray
    images_seen: int = 0


def _dataset_batches(dataset, batch_size):
    """(images, labels or None) NumPy batches from a tf.data dataset, an array or an iterable."""
    if isinstance(dataset, np.ndarray):
        for batch in _batches(dataset, batch_size):
            yield batch, None
        return
    items = dataset.as_numpy_iterator() if hasattr(dataset, "as_numpy_iterator") else dataset
    for item in items:
        if isinstance(item, dict):
            item = (item.get("image"), item.get("label"))
        if isinstance(item, (tuple, list)):
            images = np.asarray(item[0])
            labels = None if len(item) < 2 or item[1] is None else np.asarray(item[1])
        else:
            images, labels = np.asarray(item), None
        yield images, labels


def _steps(dataset, batch_size, steps):
    if steps is not None:
        return steps
    if isinstance(dataset, np.ndarray):
        return math.ceil(len(dataset) / batch_size)
    cardinality = getattr(dataset, "cardinality", None)
    if cardinality is not None:
        try:
            count = int(cardinality())
        except (TypeError, ValueError):
            return None
        return count if count >= 0 else None
    try:
        return len(dataset)
    except TypeError:
        return None


def top_patches(model, dataset, layer: str, k: int = 9, *, channels=None, steps: int | None = None,
                batch_size: int = 32, verbose: int = 1) -> TopPatches:
    """For each feature map of ``layer``, the ``k`` patches of ``dataset`` that excite it most.

    One pass over ``dataset``: a ``tf.data`` dataset of batches (``(images, labels)`` as
    :func:`kerascnn.data.pipeline` yields, or images alone), any iterable of such batches, or an
    array of images (cut into ``batch_size`` batches). Each image counts once per map, at its
    strongest unit (so the ``k`` patches come from ``k`` different images, as in Zeiler & Fergus'
    Fig. 2); the patch is that unit's receptive field
    (:func:`kerascnn.receptive_fields.receptive_fields`).
    ``channels`` restricts the search to some feature maps (indices; all by default); ``steps``
    stops after that many batches; ``verbose=1`` shows a progress bar over the pass.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    target = model.get_layer(layer)
    field = receptive_fields(model).get(layer)
    if field is None:  # strict=True says why
        receptive_fields(model, strict=True)
    if field.output is None:
        raise ValueError(f"layer {layer!r} has no spatial map (shape {target.output.shape}); "
                         f"top_patches needs a convolutional layer")
    depth = int(target.output.shape[-1])
    chosen = np.arange(depth) if channels is None else np.asarray(channels, dtype="int64").ravel()
    if chosen.size == 0 or chosen.min() < 0 or chosen.max() >= depth:
        raise ValueError(f"channels must be indices of {layer!r}'s {depth} feature maps, got "
                         f"{channels!r}")
    features = keras.Model(_input(model), target.output, name=f"{model.name}_{layer}")
    maps, (rh, rw) = len(chosen), field.size
    scores = np.full((maps, k), -np.inf, "float32")
    image_index = np.full((maps, k), -1, "int64")
    labels = np.full((maps, k), -1, "int64")
    position = np.zeros((maps, k, 2), "int64")
    box = np.zeros((maps, k, 4), "int64")
    patches = None
    total = _steps(dataset, batch_size, steps)
    bar = keras.utils.Progbar(total, verbose=verbose, unit_name="batch") if verbose else None
    seen = 0
    for step, (images, batch_labels) in enumerate(_dataset_batches(dataset, batch_size)):
        if steps is not None and step >= steps:
            break
        images = _as_images(model, images)
        if patches is None:
            patches = np.zeros((maps, k, rh, rw, images.shape[-1]), images.dtype)
        acts = ops.convert_to_numpy(features(images, training=False)).astype("float32")
        acts = acts[..., chosen]                                   # [B, h, w, maps]
        b, h, w, _ = acts.shape
        flat = acts.reshape(b, h * w, maps)
        best = flat.argmax(axis=1)                                 # [B, maps]
        best_scores = np.take_along_axis(flat, best[:, None, :], axis=1)[:, 0, :].T  # [maps, B]
        merged = np.concatenate([scores, best_scores], axis=1)     # [maps, k + B]
        order = np.argsort(-merged, axis=1, kind="stable")[:, :k]  # ties keep the earlier image
        scores = np.take_along_axis(merged, order, axis=1)
        kept = np.where(order < k, order, 0)                       # entries carried over
        rows = np.arange(maps)[:, None]
        image_index, labels = image_index[rows, kept], labels[rows, kept]
        position, box, patches = position[rows, kept], box[rows, kept], patches[rows, kept]
        for m, rank in zip(*np.nonzero(order >= k)):               # entries from this batch
            i = int(order[m, rank]) - k
            row, col = divmod(int(best[i, m]), w)
            top, left, bottom, right = field.box(row, col)
            image_index[m, rank] = seen + i
            labels[m, rank] = -1 if batch_labels is None else int(np.ravel(batch_labels)[i])
            position[m, rank] = (row, col)
            box[m, rank] = (top, left, bottom, right)
            patches[m, rank] = _crop(images[i], top, left, rh, rw)
        seen += b
        if bar is not None:
            bar.update(step + 1)
    if patches is None:
        raise ValueError("the dataset yielded no images")
    return TopPatches(layer, field, chosen, scores, image_index, labels, position, box, patches,
                      seen)


def _crop(image, top, left, rh, rw):
    """``image[top:top+rh, left:left+rw]`` with zeros where the box leaves the image."""
    height, width = image.shape[:2]
    out = np.zeros((rh, rw, image.shape[-1]), image.dtype)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + rh, height), min(left + rw, width)
    if y1 > y0 and x1 > x0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
    return out
