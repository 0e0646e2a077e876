"""``python -m kerascnn visualize occlusion|gradcam|top-patches``: what a network looks at, as PNGs.

::

    visualize occlusion MODEL IMAGE... [--class-index C] [--patch P] [--stride S]
                                   the drop in the class's probability as a grey square slides
                                   over each image (Zeiler & Fergus 2013, Fig. 7)
    visualize gradcam MODEL IMAGE... [--class-index C] [--layer NAME]
                                   Grad-CAM at the last convolution (Selvaraju et al. 2017)
    visualize top-patches MODEL --dataset SPEC --layer NAME [--k 9] [--channels N]
                                   for N feature maps of a layer, the k validation-image patches
                                   that excite each most, cut out by its receptive field (ZF Fig. 2)

MODEL is what :func:`kerascnn.pictures.load_model_source` takes (a run directory, a ``.keras``
file, shipped weights ``MODEL:TAG`` or a registered name); images are read as the model sees them
(the run's evaluation transform). The heat map's title names the class and its probability (the
predicted class unless ``--class-index``). The computations are :mod:`kerascnn.explain`'s; the
figures :mod:`kerascnn.explain.figures`'. The library functions return a
:class:`kerascnn.pictures.Saved`; the command (:mod:`kerascnn.visualize`) prints where the PNG
went.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..pictures import (OUT_DIR, Saved, choices, load_model_source, model_image, read_image,
                        save_png, slug)

__all__ = ["heatmap_png", "occlusion_png", "gradcam_png", "top_patches_png", "default_patch"]

_NAMES = {"occlusion": "occlusion (Zeiler & Fergus 2013)",
          "gradcam": "Grad-CAM (Selvaraju et al. 2017)"}


def default_patch(height: int, width: int) -> tuple[int, int]:
    """Occlusion's square and step without ``--patch``/``--stride``: an eighth of the shorter
    side (4 pixels on LeNet's 32, 28 on 224, about ZF's 1/9) and half of that."""
    patch = max(2, min(height, width) // 8)
    return patch, max(1, patch // 2)


def _keras_source(model, command: str):
    source = model if not isinstance(model, (str, Path)) else \
        load_model_source(model, preprocessing="auto")
    if source.model is None:
        raise UserError(f"{source.saved_model} is an exported SavedModel: it keeps only its "
                        f"serving signatures, so {command} cannot reach the layers inside; pass "
                        f"the run directory or its model.keras instead")
    return source


def _row_title(source, probabilities, chosen: int) -> str:
    predicted = int(np.argmax(probabilities))
    text = f"{source.class_name(chosen)}: {probabilities[chosen]:.1%}"
    if chosen == predicted:
        return f"predicted {text}"
    return (f"class {text} (predicted {source.class_name(predicted)}: "
            f"{probabilities[predicted]:.1%})")


def heatmap_png(method: str, model, image_paths, out=None, *, class_index: int | None = None,
                layer: str | None = None, patch: int | None = None,
                stride: int | None = None) -> Saved:
    """One PNG for ``image_paths``: per image, the image as the model sees it and ``method``'s
    map over it (``"occlusion"`` or ``"gradcam"``), titled with the class and its probability."""
    from . import grad_cam, occlusion, predict_proba
    from .figures import heatmap_figure

    paths = [Path(p) for p in ([image_paths] if isinstance(image_paths, (str, Path))
                               else image_paths)]
    if not paths:
        raise UserError("pass at least one IMAGE file")
    for path in paths:
        read_image(path)  # a missing or unreadable image fails before the model loads
    source = _keras_source(model, f"visualize {method}")
    net = source.model
    images = np.stack([model_image(source, p) for p in paths])
    probs = predict_proba(net, images)
    classes = probs.shape[1]
    if class_index is not None and not 0 <= class_index < classes:
        raise UserError(f"--class-index {class_index} is out of range: {source.name} has "
                        f"{classes} classes (0 to {classes - 1})")
    chosen = probs.argmax(axis=1) if class_index is None else np.full(len(paths), class_index)
    if method == "occlusion":
        height, width = images.shape[1:3]
        auto_patch, auto_stride = default_patch(height, width)
        patch = patch or auto_patch
        stride = stride or (auto_stride if patch == auto_patch else max(1, patch // 2))
        if patch > min(height, width):
            raise UserError(f"--patch {patch} is larger than the {width}x{height} input")
        maps = occlusion(net, images, patch, stride, class_index=chosen)
        what = f"a {patch}×{patch} grey square every {stride} pixels"
        details = {"patch": patch, "stride": stride}
    elif method == "gradcam":
        from .maps import default_cam_layer
        try:
            layer = layer or default_cam_layer(net)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if layer not in {lyr.name for lyr in net.layers}:
            raise UserError(f"no layer named {layer!r} in {net.name}; layers with feature maps: "
                            f"{choices(_spatial(net))}")
        try:
            maps = grad_cam(net, images, class_index=chosen, layer=layer)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        what = f"at layer {layer}"
        details = {"layer": layer}
    else:
        raise ValueError(f"method must be occlusion or gradcam, got {method!r}")
    state = "" if source.trained else " (untrained: random weights)"
    titles = [_row_title(source, probs[i], int(chosen[i])) for i in range(len(paths))]
    fig = heatmap_figure(images, maps, method, titles,
                         title=f"{source.name}{state}: {_NAMES[method]}, {what}")
    if out is None:
        more = f"-and-{len(paths) - 1}-more" if len(paths) > 1 else ""
        out = OUT_DIR / f"{slug(source.name)}-{method}-{slug(paths[0].stem)}{more}.png"
    return save_png(fig, out, images=images, maps=maps, probabilities=probs,
                    classes=chosen, titles=titles, **details)


def occlusion_png(model, image_paths, out=None, *, class_index=None, patch=None,
                  stride=None) -> Saved:
    """:func:`heatmap_png` with Zeiler & Fergus' occlusion."""
    return heatmap_png("occlusion", model, image_paths, out, class_index=class_index,
                       patch=patch, stride=stride)


def gradcam_png(model, image_paths, out=None, *, class_index=None, layer=None) -> Saved:
    """:func:`heatmap_png` with Grad-CAM."""
    return heatmap_png("gradcam", model, image_paths, out, class_index=class_index, layer=layer)


def _spatial(model) -> list[str]:
    """The layers whose units have a receptive field on a map (not nested models' layers)."""
    from ..receptive_fields import receptive_fields
    return [name for name, f in receptive_fields(model).items()
            if f.output and None not in f.output and "/" not in name]


def _validation_batches(source, spec, batch_size):
    """The validation split of ``spec``, fitted to the model's input as its run's were."""
    from .. import data

    h, _, c = (int(d) for d in source.model.input.shape[1:])
    ds = data.load(spec, channels=c, verbose=False)
    transform = source.transform
    if transform is not None and transform.resize > max(transform.crop):
        augment = "crop_flip"  # the run's centre crop
    else:
        augment = data.augmentation_for(ds, h, "auto") if transform is None else "none"
    batches = data.pipeline(ds.val, image_size=h, channels=c, style=ds.style, training=False,
                            augment=augment, batch_size=batch_size, native_size=ds.native_size)
    return ds, batches


def top_patches_png(model, dataset, layer: str, out=None, *, k: int = 9, channels: int = 8,
                    max_images: int | None = None, batch_size: int = 64,
                    verbose: int = 1) -> Saved:
    """The ``k`` patches of ``dataset``'s validation images that excite each of the first
    ``channels`` feature maps of ``layer`` most, one row per map (Zeiler & Fergus 2013, Fig. 2).
    ``max_images`` stops the pass early (whole batches)."""
    from . import top_patches
    from .figures import top_patches_figure

    source = _keras_source(model, "visualize top-patches")
    net = source.model
    spatial = _spatial(net)
    if layer not in spatial:
        what = f"layer {layer!r} of {net.name} has no feature maps" if layer in \
            {lyr.name for lyr in net.layers} else f"no layer named {layer!r} in {net.name}"
        raise UserError(f"{what}; layers with feature maps: {choices(spatial)}")
    depth = int(net.get_layer(layer).output.shape[-1])
    ds, batches = _validation_batches(source, dataset, batch_size)
    images = ds.val.count if max_images is None else min(ds.val.count, max_images)
    steps = max(1, math.ceil(images / batch_size))  # also the progress bar's length
    try:
        result = top_patches(net, batches, layer, k=k, channels=list(range(min(channels, depth))),
                             steps=steps, verbose=verbose)
    except ValueError as exc:
        raise UserError(f"{exc} ({dataset}'s validation split)") from None
    field = result.field
    state = "" if source.trained else " (untrained: random weights)"
    size = f"{field.size[1]}×{field.size[0]}"
    title = (f"{source.name}{state} {layer}: the {k} patches that excite each feature map most\n"
             f"{result.images_seen} validation images of {ds.name}; receptive field {size} "
             f"pixels, jump {field.j}\n(Zeiler & Fergus 2013, Fig. 2); the first "
             f"{len(result.channels)} of {depth} maps")
    fig = top_patches_figure(result, title=title)
    if out is None:
        out = OUT_DIR / f"{slug(source.name)}-top-patches-{slug(layer)}.png"
    return save_png(fig, out, result=result, dataset=dataset)
