"""``python -m kerascnn visualize``: see what the networks do, as PNG files.

::

    visualize kernels IMAGE                       the lecture's blur, sharpen and edge kernels
                                                  applied to a photo with the primer's conv2d
    visualize filters MODEL [--layer NAME]        a convolution layer's kernels as a grid (the
                                                  first one by default; RGB for 3 input channels)
    visualize feature-maps MODEL IMAGE [--layers NAME ...]
                                                  activation maps for one image (default: the last
                                                  layer at each spatial size, one per stage)
    visualize architecture NAME|MODEL             the volume W x H x D after each layer or block,
                                                  to scale on a log axis, stages labelled
    visualize occlusion|gradcam MODEL IMAGE...    heat maps of what the class depends on
    visualize top-patches MODEL --dataset SPEC --layer NAME
                                                  the patches that excite each feature map
                                                  most (these three: kerascnn.explain.pngs)
    visualize report RUN_DIR                      (re)write a run's report.html

MODEL is a run directory, a ``.keras`` file, shipped weights ``MODEL:TAG``, an exported
SavedModel (``export/NAME/VERSION``, or ``export/NAME`` for its newest version) or a registered
name (untrained: random weights). A
SavedModel keeps its variables but not the Keras graph: its filters can be drawn (the 4-D variables
named ``LAYER/kernel``), its feature maps cannot (the run directory or ``.keras`` file can).

The library functions return a :class:`Saved` (where the PNG went and what it shows); only
:func:`run` prints. Files go to ``visualizations/`` unless ``--out`` says otherwise, each written
to a temporary name and renamed (:func:`kerascnn.plots.save_figure`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import plots, primer
from .architecture import BLOCKS, architecture_volumes
from .arithmetic import SizeError
from .errors import UserError
from .pictures import (OUT_DIR, ModelSource, Saved, load_model_source, model_image,  # noqa: F401
                       read_image)
from .pictures import choices as _choices
from .pictures import save_png as _save
from .pictures import slug as _slug

__all__ = ["Saved", "ModelSource", "LECTURE_KERNELS", "BLOCKS", "OUT_DIR", "read_image",
           "apply_kernels", "load_model_source", "conv_layers", "conv_kernel",
           "default_feature_layers", "spatial_layers", "feature_maps", "model_image",
           "architecture_volumes", "kernels", "filters", "feature_maps_png", "architecture",
           "add_arguments", "run"]

#: The lecture's three kernels, in the order the figure shows them.
LECTURE_KERNELS = {"blur": primer.BLUR, "sharpen": primer.SHARPEN, "edge": primer.EDGE}
#: ``kernels`` shrinks larger photos to this longest side first (the primer is plain NumPy).
KERNELS_MAX_SIZE = 512

#: Layers whose outputs are never offered as feature maps (input handling, not features).
_NOT_FEATURES = {"InputLayer", "Rescaling", "Normalization", "ZeroPadding2D", "Dropout",
                 "SpatialDropout2D"}


# --------------------------------------------------------------------------------------------
# Images


def apply_kernels(image, kernels: dict | None = None) -> dict:
    """``name -> (kernel, result)``: each kernel applied to every channel of ``image`` with the
    primer's 2D convolution (padding "same", so the result keeps the image's size)."""
    kernels = LECTURE_KERNELS if kernels is None else kernels
    return {name: (kernel, primer.filter_image(image, kernel)) for name, kernel in kernels.items()}


# --------------------------------------------------------------------------------------------
# MODEL


def conv_layers(model) -> list[str]:
    """The names of ``model``'s convolution layers (Keras ``Conv2D`` and subclasses), in order."""
    import keras
    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def _savedmodel_kernels(directory: Path) -> dict[str, np.ndarray]:
    """The 4-D ``LAYER/kernel`` variables of a SavedModel (the convolutions' F x F x D1 x K)."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(directory))
    except Exception as exc:  # a truncated or foreign export: say which, not a deep traceback
        raise UserError(f"cannot load the SavedModel in {directory} ({type(exc).__name__}); "
                        f"re-export it with python -m kerascnn export") from None
    found = {}
    for variable in getattr(loaded, "variables", []):
        name = variable.name.split(":")[0]
        if name.endswith("/kernel") and len(variable.shape) == 4:
            found[name[:-len("/kernel")]] = variable.numpy()
    return found


def conv_kernel(source: ModelSource, layer: str | None = None) -> tuple[str, np.ndarray]:
    """``(layer name, kernel F x F x D1 x K)`` of ``layer``, by default the first convolution."""
    if source.saved_model is not None:
        kernels = _savedmodel_kernels(source.saved_model)
        names = list(kernels)
    else:
        names = conv_layers(source.model)
    if not names:
        raise UserError(f"{source.name} has no convolution layers")
    if layer is None:
        layer = names[0]
    if layer not in names:
        what = f"no convolution layer named {layer!r} in {source.name}"
        if source.model is not None and layer in {lyr.name for lyr in source.model.layers}:
            kind = type(source.model.get_layer(layer)).__name__
            what = f"layer {layer!r} of {source.name} is a {kind}, not a convolution"
        raise UserError(f"{what}; its convolution layers are: {_choices(names)}")
    if source.saved_model is not None:
        return layer, kernels[layer]
    return layer, np.asarray(source.model.get_layer(layer).kernel)


def spatial_layers(model) -> list[tuple[str, tuple]]:
    """``(name, (H, W, D))`` of every layer with a spatial output, in the graph's order (branches
    of an inception module before its concatenation), input handling left out."""
    from . import inspect

    found = []
    for row in inspect.layer_table(model, all_layers=True):
        nested = "/" in row.name  # a nested model's layer: not reachable by get_layer
        if len(row.output_shape) == 3 and row.layer_class not in _NOT_FEATURES and not nested:
            found.append((row.name, tuple(row.output_shape)))
    return found


def default_feature_layers(model) -> list[str]:
    """One layer per stage: the last layer at each spatial size (down to 2x2), e.g. ResNet-20's
    conv2_block3_out, conv3_block3_out, conv4_block3_out."""
    last: dict[tuple, str] = {}
    for name, shape in spatial_layers(model):
        if min(shape[:2]) >= 2:
            last.pop(shape[:2], None)  # keep the sizes in the order the network reaches them
            last[shape[:2]] = name
    return list(last.values())


def feature_maps(model, image, layers) -> list[tuple[str, np.ndarray]]:
    """The activations ``(name, H x W x D)`` of ``layers`` for one uint8 ``image``.

    A model with float input (no preprocessing layers) gets the pixels scaled to [0, 1].
    """
    import keras

    available = dict(spatial_layers(model))
    for name in layers:
        if name not in available:
            names = list(available)
            if name in {layer.name for layer in model.layers}:
                shape = model.get_layer(name).output.shape[1:]
                raise UserError(f"layer {name!r} outputs {tuple(shape)}, not maps; layers with "
                                f"feature maps: {_choices(names)}")
            raise UserError(f"no layer named {name!r} in {model.name}; layers with feature maps: "
                            f"{_choices(names)}")
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    probe = keras.Model(inputs, [model.get_layer(n).output for n in layers])
    batch = np.asarray(image)[None]
    if str(model.inputs[0].dtype) != "uint8":
        batch = batch.astype("float32") / 255.0
    outputs = probe(batch, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [(n, np.asarray(keras.ops.convert_to_numpy(o))[0]) for n, o in zip(layers, outputs)]


# --------------------------------------------------------------------------------------------
# The PNGs


def kernels(image_path, out=None, *, max_size: int = KERNELS_MAX_SIZE) -> Saved:
    """The original image beside its blur, sharpen and edge versions (the primer's conv2d)."""
    image = read_image(image_path, max_size=max_size)
    results = apply_kernels(image)
    name = Path(image_path).name
    fig = plots.kernels_figure(image, results, title=f"{name}: the lecture's kernels applied with "
                               f"the primer's 2D convolution (zero padding P = (F-1)/2, each "
                               f"channel on its own)")
    out = out or OUT_DIR / f"{_slug(Path(image_path).stem)}-kernels.png"
    return _save(fig, out, image=image, results=results)


def filters(model, layer: str | None = None, out=None, *, max_filters: int = 128) -> Saved:
    """A grid of ``layer``'s kernels (default: the first convolution) of MODEL."""
    source = model if isinstance(model, ModelSource) else load_model_source(model)
    layer, kernel = conv_kernel(source, layer)
    note = None if source.trained else "untrained (random initial weights)"
    fig = plots.filters_figure(kernel, layer=f"{source.name} {layer}", max_filters=max_filters,
                               note=note)
    out = out or OUT_DIR / f"{_slug(source.name)}-filters-{_slug(layer)}.png"
    return _save(fig, out, layer=layer, kernel=kernel)


def feature_maps_png(model, image_path, layers=None, out=None, *, channels: int = 8) -> Saved:
    """The activation maps of ``layers`` (default :func:`default_feature_layers`) for one image."""
    read_image(image_path)  # a missing or unreadable image fails before the model loads
    source = model if isinstance(model, ModelSource) else load_model_source(model,
                                                                            preprocessing="auto")
    if source.model is None:
        raise UserError(f"{source.saved_model} is an exported SavedModel: it keeps only its "
                        f"serving signatures (image -> probabilities), so the activations inside "
                        f"the network cannot be reached; pass the run directory or its "
                        f"model.keras instead (filters work on a SavedModel)")
    image = model_image(source, image_path)
    layers = list(layers) if layers else default_feature_layers(source.model)
    if not layers:
        raise UserError(f"{source.name} has no layers with feature maps of at least 2x2")
    maps = feature_maps(source.model, image, layers)
    state = "" if source.trained else " (untrained: random weights)"
    fig = plots.feature_maps_figure(
        image, maps, channels=channels,
        title=f"{source.name}{state}: feature maps for {Path(image_path).name}, the {channels} "
              f"most active channels per layer")
    out = out or OUT_DIR / f"{_slug(source.name)}-feature-maps-{_slug(Path(image_path).stem)}.png"
    return _save(fig, out, layers=layers, image=image, maps=maps)


def architecture(model, out=None, *, input_shape=None, num_classes=None, **options) -> Saved:
    """The volume after each layer or block of a registered network (built at ``input_shape``,
    the paper's by default), a run directory or a ``.keras`` file."""
    from . import inspect

    try:
        keras_model = inspect.resolve_model(model, input_shape=input_shape,
                                            num_classes=num_classes, **options)
    except SizeError:
        raise
    except ValueError as exc:
        raise UserError(str(exc)) from None
    volumes = architecture_volumes(keras_model)
    totals = inspect.table_totals(inspect.layer_table(keras_model))
    first = volumes[0]
    title = (f"{keras_model.name}: the volume W×H×D after each layer or block\n"
             f"{first.shape_text} input, {totals.params:,} parameters, "
             f"{inspect.human(totals.macs)}MACs")
    fig = plots.architecture_figure(volumes, title=title)
    if out is None:
        name = keras_model.name
        if isinstance(model, (str, Path)):
            from .sources import resolve
            ref = resolve(model)
            name = keras_model.name if ref.kind == "name" else ref.display_name
        out = OUT_DIR / f"{_slug(name)}-architecture.png"
    return _save(fig, out, volumes=volumes)


# --------------------------------------------------------------------------------------------
# The command


def add_arguments(parser) -> None:
    from .inspect import _input_shape, _positive

    sub = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    out_help = "the PNG to write (default: visualizations/...)"

    p = sub.add_parser("kernels", help="blur, sharpen and edge kernels applied to an image")
    p.add_argument("image", metavar="IMAGE", help="a JPEG or PNG file (grayscale or colour)")
    p.add_argument("--max-size", type=_positive, default=KERNELS_MAX_SIZE, metavar="PIXELS",
                   help=f"shrink larger images to this longest side first (default "
                        f"{KERNELS_MAX_SIZE})")
    p.add_argument("--out", help=out_help)

    p = sub.add_parser("filters", help="a grid of a convolution layer's kernels")
    p.add_argument("model", metavar="MODEL", help="run directory, .keras file, exported "
                   "SavedModel (export/NAME[/VERSION]) or registered name (untrained)")
    p.add_argument("--layer", metavar="NAME", help="convolution layer (default: the first)")
    p.add_argument("--max-filters", type=_positive, default=128, metavar="N",
                   help="draw at most N filters (default 128)")
    p.add_argument("--out", help=out_help)

    p = sub.add_parser("feature-maps", help="activation maps of chosen layers for one image")
    p.add_argument("model", metavar="MODEL", help="run directory, .keras file or registered name")
    p.add_argument("image", metavar="IMAGE", help="a JPEG or PNG file")
    p.add_argument("--layers", nargs="+", metavar="NAME",
                   help="layers to show (default: the last layer at each spatial size)")
    p.add_argument("--channels", type=_positive, default=8, metavar="N",
                   help="the N most active channels per layer (default 8)")
    p.add_argument("--out", help=out_help)

    p = sub.add_parser("architecture", help="the volume W x H x D after each layer or block")
    p.add_argument("model", metavar="NAME", help="registered model name, .keras file or run "
                   "directory")
    p.add_argument("--input-shape", type=_input_shape, metavar="H,W,C",
                   help="build the network for this input (default: the paper's)")
    p.add_argument("--num-classes", type=_positive, metavar="N",
                   help="classifier width (default: the family's)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a model option, e.g. --option batch_norm=true (repeatable)")
    p.add_argument("--out", help=out_help)

    _explain_arguments(sub, out_help)

    p = sub.add_parser("report", help="(re)write a training run's report.html")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by train.py")


def _explain_arguments(sub, out_help: str) -> None:
    """occlusion, gradcam and top-patches (:mod:`kerascnn.explain.pngs`)."""
    from .inspect import _positive

    model_help = ("run directory, .keras file, shipped weights MODEL:TAG (e.g. lenet5:mnist) or "
                  "registered name (untrained)")
    for kind, text in (("occlusion", "the drop in the class's probability as a grey square "
                                     "slides over each image (Zeiler & Fergus 2013)"),
                       ("gradcam", "Grad-CAM heat maps (Selvaraju et al. 2017)")):
        p = sub.add_parser(kind, help=text)
        p.add_argument("model", metavar="MODEL", help=model_help)
        p.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG or PNG files")
        p.add_argument("--class-index", type=int, metavar="C",
                       help="explain this class (default: each image's predicted class)")
        if kind == "occlusion":
            p.add_argument("--patch", type=_positive, metavar="PIXELS",
                           help="side of the grey square (default: an eighth of the input)")
            p.add_argument("--stride", type=_positive, metavar="PIXELS",
                           help="step between squares (default: half the patch)")
        else:
            p.add_argument("--layer", metavar="NAME", help="the convolutional layer (default: "
                           "the last convolution's rectified output)")
        p.add_argument("--out", help=out_help)
    p = sub.add_parser("top-patches", help="the image patches that excite a layer's feature "
                                           "maps most (Zeiler & Fergus 2013, Fig. 2)")
    p.add_argument("model", metavar="MODEL", help=model_help)
    p.add_argument("--dataset", required=True, metavar="SPEC", help="its validation split is "
                   "searched (sample, idx:PATH, folder:PATH, tfds:NAME)")
    p.add_argument("--layer", required=True, metavar="NAME", help="a layer with feature maps")
    p.add_argument("--k", type=_positive, default=9, metavar="K",
                   help="patches per feature map (default 9)")
    p.add_argument("--channels", type=_positive, default=8, metavar="N",
                   help="the first N feature maps, one row each (default 8)")
    p.add_argument("--max-images", type=_positive, metavar="N",
                   help="stop after about N images (default: the whole validation split)")
    p.add_argument("--out", help=out_help)


def _options(pairs) -> dict:
    from .inspect import _option_value
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--option takes KEY=VALUE (e.g. batch_norm=true), got {pair!r}")
        options[key.strip().replace("-", "_")] = _option_value(value)
    return options


def run(args) -> int:
    if args.kind == "report":
        from .report import write_report
        print(f"saved {write_report(args.run_dir)}")
        return 0
    if args.kind == "kernels":
        saved = kernels(args.image, args.out, max_size=args.max_size)
    elif args.kind == "filters":
        saved = filters(args.model, args.layer, args.out, max_filters=args.max_filters)
    elif args.kind in ("occlusion", "gradcam"):
        from .explain import pngs
        saved = pngs.heatmap_png(args.kind, args.model, args.images, args.out,
                                 class_index=args.class_index, layer=getattr(args, "layer", None),
                                 patch=getattr(args, "patch", None),
                                 stride=getattr(args, "stride", None))
    elif args.kind == "top-patches":
        from .explain import pngs
        saved = pngs.top_patches_png(args.model, args.dataset, args.layer, args.out, k=args.k,
                                     channels=args.channels, max_images=args.max_images)
    elif args.kind == "feature-maps":
        saved = feature_maps_png(args.model, args.image, args.layers, args.out,
                                 channels=args.channels)
    else:
        saved = architecture(args.model, args.out, input_shape=args.input_shape,
                             num_classes=args.num_classes, **_options(args.option))
    print(f"saved {saved.path} ({saved.size[0]}x{saved.size[1]} pixels)")
    return 0
