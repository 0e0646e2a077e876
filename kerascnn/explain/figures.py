"""Figures of what a network looks at, for :func:`kerascnn.plots.save_figure`: heat maps over the
images (occlusion, Grad-CAM) and the grid of top activating patches (Zeiler & Fergus 2013, Fig. 2).

Matplotlib's object API on the Agg canvas, as :mod:`kerascnn.plots`; every figure has a fixed size
(``DPI`` pixels per inch), so the tests can check the PNG's size.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from ..plots import _bare, _show

__all__ = ["heatmap_figure", "heatmap_grid_figure", "top_patches_figure", "HEATMAP_STYLES"]

#: How each method's map is drawn: colour map, whether its values are signed, the colour bar label.
HEATMAP_STYLES = {
    "occlusion": ("RdBu_r", True, "drop in probability"),
    "gradcam": ("jet", False, "Grad-CAM (scaled to its maximum)"),
}
#: Opacity of the heat map over the image.
ALPHA = 0.55


def _limits(maps, signed: bool):
    """One colour scale for all maps: symmetric around 0 for signed maps, else [0, max]."""
    peak = float(np.max(np.abs(maps))) if np.size(maps) else 0.0
    peak = peak if peak > 0 else 1.0
    return (-peak, peak) if signed else (0.0, peak)


def _overlay(ax, image, heat, method: str, limits):
    cmap, _, _ = HEATMAP_STYLES[method]
    _show(ax, image)
    shown = ax.imshow(np.asarray(heat, np.float32), cmap=cmap, vmin=limits[0], vmax=limits[1],
                      alpha=ALPHA, interpolation="bilinear")
    _bare(ax)
    return shown


def heatmap_figure(images, maps, method: str, row_titles, *, title: str) -> Figure:
    """One row per image: the image as the model sees it, then the heat map over it.

    ``images`` uint8 ``[N, H, W, C]``, ``maps`` ``[N, H, W]`` (:func:`kerascnn.explain.occlusion`
    or :func:`~kerascnn.explain.grad_cam`), ``method`` a key of :data:`HEATMAP_STYLES`;
    ``row_titles[i]`` heads the heat map (the class and its probability). The figure is 6.4 by
    ``2.9 * N + 0.7`` inches.
    """
    if method not in HEATMAP_STYLES:
        raise ValueError(f"method must be one of {', '.join(HEATMAP_STYLES)}, got {method!r}")
    images, maps = np.asarray(images), np.asarray(maps, np.float32)
    n = len(images)
    _, signed, label = HEATMAP_STYLES[method]
    limits = _limits(maps, signed)
    height = 2.9 * n + 0.7
    fig = Figure(figsize=(6.4, height))
    fig.subplots_adjust(left=0.03, right=0.86, bottom=0.2 / height, top=1 - 0.7 / height,
                        wspace=0.08, hspace=0.28)
    axes = fig.subplots(n, 2, squeeze=False)
    shown = None
    for i in range(n):
        _show(axes[i, 0], images[i])
        _bare(axes[i, 0])
        h, w = images[i].shape[:2]
        channels = images[i].shape[2] if images[i].ndim == 3 else 1
        axes[i, 0].set_title(f"input {w}×{h}×{channels}", fontsize=9)
        shown = _overlay(axes[i, 1], images[i], maps[i], method, limits)
        axes[i, 1].set_title(row_titles[i], fontsize=9)
    cax = fig.add_axes([0.89, 0.2 / height, 0.025, 1 - 0.9 / height])
    fig.colorbar(shown, cax=cax, label=label).ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def heatmap_grid_figure(images, maps, method: str, panel_titles, *, title: str,
                        columns: int = 4, colours=None) -> Figure:
    """The heat maps over their images in a grid, one panel each (the run report's mistakes).
    ``colours[i]`` colours panel ``i``'s title. The figure is ``2.1 * columns`` by
    ``2.4 * rows + 0.6`` inches."""
    images, maps = np.asarray(images), np.asarray(maps, np.float32)
    n = len(images)
    cols = max(1, min(columns, n))
    rows = max(1, math.ceil(n / cols))
    _, signed, _ = HEATMAP_STYLES[method]
    limits = _limits(maps, signed)
    fig = Figure(figsize=(2.1 * cols, 2.4 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        _bare(ax)
        if i >= n:
            ax.set_axis_off()
            continue
        _overlay(ax, images[i], maps[i], method, limits)
        ax.set_title(panel_titles[i], fontsize=7.5,
                     color=colours[i] if colours is not None else "black")
    fig.suptitle(title, fontsize=9.5)
    return fig


def top_patches_figure(result, *, title: str) -> Figure:
    """The patches of a :class:`kerascnn.explain.TopPatches`: one row per feature map, its ``k``
    patches strongest first (each its receptive field, black where it reaches past the image),
    the map's index and top activation at the left. The figure is ``max(1.05 k + 1.3, 6.4)`` by
``1.05 maps + 1.0`` inches."""
    patches = np.asarray(result.patches)
    maps, k = patches.shape[:2]
    grid = k * 1.05
    width, height = max(grid + 1.3, 6.4), maps * 1.05 + 1.0
    left = max(1.1, (width - grid) / 2) / width
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left, right=left + grid / width, bottom=0.15 / height,
                        top=1 - 0.85 / height, wspace=0.06, hspace=0.12)
    axes = fig.subplots(maps, k, squeeze=False)
    for m in range(maps):
        for rank in range(k):
            ax = axes[m, rank]
            _bare(ax)
            if result.image_index[m, rank] < 0:  # fewer than k images seen
                ax.set_axis_off()
                continue
            _show(ax, patches[m, rank])
        axes[m, 0].set_ylabel(f"map {int(result.channels[m])}\nmax {result.scores[m, 0]:.3g}",
                              fontsize=7.5, rotation=0, ha="right", va="center", labelpad=6)
    fig.suptitle(title, fontsize=9.5)
    return fig
