"""Plots as PNG files, drawn with matplotlib's object API on the Agg canvas: the one plotting
module of the project.

No ``pyplot``: figures are plain :class:`matplotlib.figure.Figure` objects, so nothing touches a
display or global state and plotting works on headless machines and in threads.
:func:`save_figure` writes a PNG to a temporary file and renames it, so a plot is never
half-written.

- training: :func:`training_curves`, :func:`confusion_matrix` (each writes its PNG);
- what the networks do (``python -m kerascnn visualize`` and the run report), figure builders that
  return the :class:`Figure` for :func:`save_figure`: :func:`kernels_figure` (the lecture's blur,
  sharpen and edge kernels on a photo), :func:`filters_figure` (a conv layer's kernels),
  :func:`feature_maps_figure`, :func:`architecture_figure` (the volume after each layer or block)
  and :func:`predictions_figure` (validation images with predicted and true labels);
- :func:`panels` and :func:`figure_texts` say what a figure shows (the tests check them).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .files import atomic_path

__all__ = ["save_figure", "read_history", "training_curves", "confusion_matrix", "Panel", "Volume",
           "panels", "figure_texts", "kernels_figure", "filters_figure", "feature_maps_figure",
           "architecture_figure", "predictions_figure", "kernel_text", "DPI"]

#: Every PNG is rendered at this resolution: a w x h inch figure is (w * DPI) x (h * DPI) pixels.
DPI = 120


def save_figure(fig: Figure, path, dpi: int = DPI) -> Path:
    """Render ``fig`` to ``path`` (PNG) via a temporary file and an atomic rename."""
    path = Path(path)
    with atomic_path(path, keep_suffix=True) as tmp:
        FigureCanvasAgg(fig)
        fig.savefig(tmp, dpi=dpi, format="png")
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


# --------------------------------------------------------------------------------------------
# What the networks do: kernels, filters, feature maps, architecture, predictions


@dataclass(frozen=True)
class Panel:
    """One image panel of a figure: its title and the array it draws."""

    title: str
    array: np.ndarray


@dataclass(frozen=True)
class Volume:
    """One box of the architecture diagram: the volume ``width x height x depth`` after a layer or
    block. ``kind`` picks the colour (input, conv, pool, fc, inception, residual, other); ``stage``
    names the band the box sits in (``"conv3_x"``, ``"inception (4)"``) or is None."""

    label: str
    kind: str
    height: int
    width: int
    depth: int
    stage: str | None = None

    @property
    def shape_text(self) -> str:
        """W x H x D, as the lecture writes it."""
        return f"{self.width}×{self.height}×{self.depth}"


def panels(fig: Figure) -> list[Panel]:
    """The image panels of ``fig`` in drawing order (every axes that shows an image)."""
    found = []
    for ax in _all_axes(fig):
        for image in ax.images:
            found.append(Panel(ax.get_title(), np.asarray(image.get_array())))
    return found


def figure_texts(fig: Figure, *, draw: bool = True) -> list[str]:
    """Every non-empty text drawn in ``fig``: titles, labels, annotations and tick labels
    (``draw=False`` when the figure was just saved, which drew it)."""
    from matplotlib.text import Text
    if draw:  # tick labels exist once the figure has been drawn
        FigureCanvasAgg(fig).draw()
    return [t.get_text() for t in fig.findobj(Text) if t.get_text() and t.get_visible()]


def _all_axes(fig) -> list:
    """Every axes of ``fig`` and its subfigures, once each, in the order they were added."""
    axes = list(fig.axes)
    for sub in getattr(fig, "subfigs", []):
        axes += [ax for ax in _all_axes(sub) if all(ax is not seen for seen in axes)]
    return axes


def _bare(ax) -> None:
    """An image panel: no ticks, a thin frame."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_linewidth(0.5)
        spine.set_color("#888888")


def _show(ax, image, **kwargs):
    """``image`` as uint8 RGB or grayscale (``(H, W)`` or ``(H, W, 1)``)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        kwargs = {"cmap": "gray", "vmin": 0, "vmax": 255, **kwargs}
    return ax.imshow(image, interpolation="nearest", **kwargs)


def kernel_text(kernel) -> str:
    """A small kernel as the lecture writes it: ``1/9 ×`` then integer rows, when it has them."""
    kernel = np.asarray(kernel, dtype=float)
    fractions = [Fraction(float(v)).limit_denominator(256) for v in kernel.ravel()]
    exact = all(abs(float(f) - v) < 1e-9 for f, v in zip(fractions, kernel.ravel()))
    denominator = math.lcm(*(f.denominator for f in fractions)) if exact else 0
    if not 0 < denominator <= 256:
        return "\n".join(" ".join(f"{v:6.3f}" for v in row) for row in kernel)
    ints = np.rint(kernel * denominator).astype(int)
    width = max(len(str(v)) for v in ints.ravel())
    rows = ["[" + " ".join(f"{v:>{width}d}" for v in row) + "]" for row in ints]
    return "\n".join(([f"1/{denominator} ×"] if denominator > 1 else []) + rows)


def kernels_figure(image, filtered: dict, *, title: str | None = None) -> Figure:
    """The original image and each filtered version side by side, the kernel written under each.

    ``filtered`` maps a name to ``(kernel, result)``; a result is shown clipped to ``[0, 255]``
    (the edge kernel's response is 0 on flat regions, so edges come out bright on black).
    Each panel is 3.2 inches wide; the figure is ``3.2 * panels`` by ``3.2 * H/W + 1.3`` inches.
    """
    image = np.asarray(image)
    height, width = image.shape[:2]
    n = 1 + len(filtered)
    fig = Figure(figsize=(3.2 * n, 3.2 * height / width + 1.3), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    _show(axes[0], image)
    axes[0].set_title("original", fontsize=11)
    axes[0].set_xlabel(f"{width}×{height}×{image.shape[2] if image.ndim == 3 else 1} pixels",
                       fontsize=9)
    for ax, (name, (kernel, result)) in zip(axes[1:], filtered.items()):
        shown = np.clip(np.rint(np.asarray(result, float)), 0, 255).astype(np.uint8)
        _show(ax, shown)
        ax.set_title(f"{name} ({len(kernel)}×{len(kernel[0])})", fontsize=11)
        ax.set_xlabel(kernel_text(kernel), fontsize=8, family="monospace")
    for ax in axes:
        _bare(ax)
    fig.suptitle(title or "the lecture's kernels, applied with the primer's 2D convolution",
                 fontsize=12)
    return fig


def _normalise_each(kernels):
    """Scale every filter (last axis) to [0, 1] on its own range (flat filters become 0.5)."""
    lo = kernels.min(axis=tuple(range(kernels.ndim - 1)), keepdims=True)
    hi = kernels.max(axis=tuple(range(kernels.ndim - 1)), keepdims=True)
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.where(hi > lo, (kernels - lo) / span, 0.5)


def filters_figure(kernel, *, layer: str, max_filters: int = 128, max_channels: int = 16,
                   note: str | None = None) -> Figure:
    """A convolution layer's kernels (Keras layout ``F x F x D1 x K``) as a grid.

    With ``D1 = 3`` every filter is one RGB panel and with ``D1 = 1`` one grayscale panel, each
    scaled to its own range (as in AlexNet's Figure 3); otherwise row ``k`` shows filter ``k``'s
    slice for each input channel on one diverging colour scale shared by the grid (blue negative,
    red positive), so the weights' signs and sizes compare. At most ``max_filters`` filters (and
    32 rows, ``max_channels`` input channels in the second form) are drawn; the title says so.
    ``note`` is added to the title (e.g. "untrained").
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 4:
        raise ValueError(f"a convolution kernel is F x F x D1 x K, got shape {kernel.shape}")
    fh, fw, d1, k = kernel.shape
    single = d1 in (1, 3)
    shown = min(k, max_filters if single else min(max_filters, 32))
    what = f"{layer}: {k} filters of {fw}×{fh}×{d1}"
    if shown < k:
        what += f" (the first {shown})"
    if note:
        what += f", {note}"
    if single:
        cols = shown if shown <= 8 else math.ceil(math.sqrt(shown * 1.6))
        rows = math.ceil(shown / cols)
        side = 0.75 if shown > 32 else 1.0
        grid_w, grid_h = cols * side, rows * (side + (0.2 if shown <= 32 else 0.05))
        width, height = max(grid_w + 0.4, 7.0), grid_h + 1.0
        margin = (width - grid_w) / 2 / width
        fig = Figure(figsize=(width, height))
        fig.subplots_adjust(left=margin, right=1 - margin, bottom=0.15 / height,
                            top=1 - 0.85 / height, wspace=0.08,
                            hspace=0.25 if shown <= 32 else 0.08)
        scaled = _normalise_each(kernel[..., :shown])
        for i in range(shown):
            ax = fig.add_subplot(rows, cols, i + 1)
            if d1 == 3:
                ax.imshow(scaled[..., i], interpolation="nearest")
            else:
                ax.imshow(scaled[..., 0, i], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if shown <= 32:
                ax.set_title(f"#{i}", fontsize=7, pad=2)
            _bare(ax)
        mode = "RGB" if d1 == 3 else "grayscale"
        fig.suptitle(f"{what}\n{mode}, each filter scaled to its own range", fontsize=11)
        return fig
    channels = min(d1, max_channels)
    limit = float(np.max(np.abs(kernel[:, :, :channels, :shown]))) or 1.0
    side = 0.55
    width, height = max(channels * side + 1.6, 7.0), shown * side + 1.1
    fig = Figure(figsize=(width, height))
    grid_w = channels * side
    left = max(0.7, (width - grid_w) / 2) / width
    fig.subplots_adjust(left=left, right=left + grid_w / width, bottom=0.35 / height,
                        top=1 - 0.75 / height, wspace=0.08, hspace=0.08)
    image = None
    for r in range(shown):
        for c in range(channels):
            ax = fig.add_subplot(shown, channels, r * channels + c + 1)
            image = ax.imshow(kernel[:, :, c, r], cmap="RdBu_r", vmin=-limit, vmax=limit,
                              interpolation="nearest")
            _bare(ax)
            if c == 0:
                ax.set_ylabel(f"#{r}", fontsize=7, rotation=0, ha="right", va="center")
            if r == shown - 1:
                ax.set_xlabel(f"in {c}", fontsize=7)
    cax = fig.add_axes([left + grid_w / width + 0.2 / width, 0.35 / height, 0.15 / width,
                        1 - 1.1 / height])
    fig.colorbar(image, cax=cax, label="weight").ax.tick_params(labelsize=7)
    more = f", first {channels} of {d1} input channels" if channels < d1 else ""
    fig.suptitle(f"{what}{more}\nrows: filters, columns: input channels; one colour scale",
                 fontsize=10)
    return fig


def feature_maps_figure(image, maps: Sequence[tuple[str, np.ndarray]], *, channels: int = 8,
                        title: str | None = None) -> Figure:
    """The input image, then one row per layer: the ``channels`` most active maps of that layer.

    ``maps`` holds ``(layer name, activations H x W x D)``; a row's maps are the ``channels``
    with the highest mean activation (their indices in the titles), drawn on one colour scale
    per row so that strong and weak maps compare.
    """
    image = np.asarray(image)
    rows = len(maps)
    cols = max(1, min(channels, max(m.shape[-1] for _, m in maps)))
    side = 1.15
    fig = Figure(figsize=(2.6 + cols * side + 0.9, max(rows * (side + 0.25) + 1.0, 3.4)),
                 layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[2.6, cols * side + 0.9])
    ax = left.subplots()
    _show(ax, image)
    _bare(ax)
    h, w = image.shape[:2]
    ax.set_title("input", fontsize=10)
    ax.set_xlabel(f"{w}×{h}×{image.shape[2] if image.ndim == 3 else 1} (as the model sees it)",
                  fontsize=8)
    grid = right.subplots(rows, cols, squeeze=False)
    for r, (name, act) in enumerate(maps):
        act = np.asarray(act, dtype=np.float32)
        order = np.argsort(-act.mean(axis=(0, 1)), kind="stable")[:cols]
        lo, hi = float(act[..., order].min()), float(act[..., order].max())
        shown = None
        for c in range(cols):
            ax = grid[r, c]
            _bare(ax)
            if c >= len(order):
                ax.set_axis_off()
                continue
            shown = ax.imshow(act[..., order[c]], cmap="viridis", vmin=lo, vmax=hi if hi > lo
                              else lo + 1, interpolation="nearest")
            ax.set_title(f"ch {order[c]}", fontsize=7, pad=2)
        ah, aw, ad = act.shape
        grid[r, 0].set_ylabel(f"{name}\n{aw}×{ah}×{ad}", fontsize=8, rotation=0, ha="right",
                              va="center", labelpad=6)
        if shown is not None:
            right.colorbar(shown, ax=grid[r, :], fraction=0.02, pad=0.01).ax.tick_params(
                labelsize=6)
    fig.suptitle(title or f"feature maps: the {cols} most active channels of each layer",
                 fontsize=12)
    return fig


#: Box colours of the architecture diagram, by kind.
VOLUME_COLOURS = {"input": "#bdbdbd", "conv": "#4c72b0", "pool": "#dd8452", "inception": "#8172b3",
                  "residual": "#55a868", "fc": "#937860", "other": "#8c8c8c"}


def architecture_figure(volumes: Sequence[Volume], *, title: str | None = None) -> Figure:
    """The lecture's drawing of a network: one box per layer or block, left to right.

    A box's height is the volume's spatial size (its top sits at H on a log axis, so every halving
    is one step down) and its width grows with log2 of the depth D; ``W×H×D`` is written above.
    Stages (``volume.stage``) are shaded bands named at the top.
    """
    from matplotlib.patches import Patch, Rectangle

    n = len(volumes)
    fig = Figure(figsize=(max(9.0, 0.42 * n + 3.0), 6.2), layout="constrained")
    ax = fig.add_subplot()
    top = max(max(v.height for v in volumes), 2)
    depth_max = max(max(v.depth for v in volumes), 2)
    base = 0.5  # 1x1 volumes (fc layers) still get a box, from 0.5 to 1
    for i, v in enumerate(volumes):
        width = 0.12 + 0.76 * math.log2(max(v.depth, 1)) / math.log2(depth_max)
        colour = VOLUME_COLOURS.get(v.kind, VOLUME_COLOURS["other"])
        ax.add_patch(Rectangle((i - width / 2, base), width, v.height - base, facecolor=colour,
                               edgecolor="black", linewidth=0.6, alpha=0.9))
        ax.text(i, v.height * 1.12, v.shape_text, rotation=90, ha="center", va="bottom",
                fontsize=7.5)
    # stage bands: consecutive boxes of one stage
    i = 0
    shade = 0
    while i < n:
        stage = volumes[i].stage
        j = i
        while j + 1 < n and volumes[j + 1].stage == stage:
            j += 1
        if stage:
            ax.axvspan(i - 0.5, j + 0.5, color="#4c72b0" if shade % 2 == 0 else "#55a868",
                       alpha=0.07, linewidth=0)
            count = j - i + 1
            label = stage if count == 1 else f"{stage}\n×{count}"
            ax.text((i + j) / 2, top * 20, label, ha="center", va="top", fontsize=8.5,
                    fontweight="bold", color="#333333")
            shade += 1
        i = j + 1
    ax.set_yscale("log", base=2)
    ax.set_ylim(base * 0.8, top * 24)
    ax.set_xlim(-0.7, n - 0.3)
    ticks = [2 ** k for k in range(0, int(math.log2(top)) + 1)]
    ax.set_yticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xticks(range(n), [v.label for v in volumes], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("spatial size H (pixels, log scale)")
    ax.set_xlabel("layer or block (box width grows with log2 of the depth D)")
    ax.grid(axis="y", alpha=0.25)
    kinds = [k for k in VOLUME_COLOURS if any(v.kind == k for v in volumes)]
    fig.legend(handles=[Patch(facecolor=VOLUME_COLOURS[k], edgecolor="black", label=k)
                        for k in kinds], loc="outside lower center", fontsize=8.5,
               ncols=len(kinds), frameon=False)
    fig.suptitle(title or "the volume W×H×D after each layer or block", fontsize=12)
    return fig


def predictions_figure(images, true, predicted, confidence, class_names, *,
                       title: str | None = None, columns: int = 8) -> Figure:
    """Images with their predicted and true labels: a red title marks a mistake, green a hit.

    ``confidence`` is the predicted class's probability; images are uint8 ``[N, H, W, C]``.
    """
    images = np.asarray(images)
    n = len(images)
    cols = max(1, min(columns, n))
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(cols * 1.75, rows * 2.15 + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        _bare(ax)
        if i >= n:
            ax.set_axis_off()
            continue
        _show(ax, images[i])
        right = int(predicted[i]) == int(true[i])
        ax.set_title(f"{_short(class_names[int(predicted[i])])} {confidence[i]:.0%}\n"
                     f"true: {_short(class_names[int(true[i])])}", fontsize=7.5,
                     color="#1a7f37" if right else "#c62828")
    fig.suptitle(title or "validation images: predicted (probability) and true class",
                 fontsize=11)
    return fig


def _short(name: str, limit: int = 16) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "…"
