"""The architecture diagram's data: the volume W x H x D after each layer or block of a network.

Grouping is data (:data:`BLOCKS`): one box per inception module (GoogLeNet Table 1), per residual
block (ResNet Table 1), per layer elsewhere, with a band per stage. The volumes come from the
lecture table of :mod:`kerascnn.inspect`; :mod:`kerascnn.plots` draws them, and both the
``visualize architecture`` command and the run report use them.
"""

from __future__ import annotations

import re

from . import plots

__all__ = ["BLOCKS", "architecture_volumes"]

#: How the architecture diagram groups layers, as data: (pattern on the layer name, box label or
#: None to keep one box per layer, stage label, box kind or None for the layer's own kind).
BLOCKS = (
    # GoogLeNet, Table 1: one box per inception module, a band per group of modules (3, 4, 5)
    (re.compile(r"^inception_(?P<group>\d)(?P<module>[a-z])_"), "inception {group}{module}",
     "inception ({group})", "inception"),
    # ResNet, Table 1: one box per residual block, a band per stage conv2_x ... conv5_x
    (re.compile(r"^conv(?P<stage>\d+)_block(?P<block>\d+)_"), "conv{stage} block{block}",
     "conv{stage}_x", "residual"),
    # VGG, Table 1: the five blocks of convolutions, each ending in its max pool
    (re.compile(r"^block(?P<block>\d+)_"), None, "block {block}", None),
)
#: Rows of the inspect table that never get a box of their own (they keep the volume's size or
#: only reshape it).
_NO_BOX = {"zero pad", "flatten", "reshape", "concat", "add", "batch norm", "LRN", "dropout"}

def architecture_volumes(model) -> list[plots.Volume]:
    """The volume after each layer or block of ``model``'s main path (its first output), from
    :func:`kerascnn.inspect.layer_table`; inception modules and residual blocks are one box each
    (:data:`BLOCKS`), batch norm, LRN, padding and the like none."""
    import keras

    from . import inspect

    if len(model.outputs) > 1:  # e.g. GoogLeNet's auxiliary heads: draw the main network
        model = keras.Model(model.inputs, model.outputs[0], name=model.name)
    h, w, d = _hwd(tuple(model.inputs[0].shape[1:]))
    volumes = [plots.Volume("input", "input", h, w, d)]
    for row in inspect.layer_table(model):
        block = _block_of(row.name)
        shape = _hwd(row.output_shape)
        if shape is None:
            continue
        if block is not None and block[0] is not None:  # one box per module or residual block
            label, stage, kind = block
            if volumes[-1].label == label:
                volumes[-1] = plots.Volume(label, kind, *shape, stage=stage)
            else:
                volumes.append(plots.Volume(label, kind, *shape, stage=stage))
            continue
        kind = _kind(row)
        if row.type in _NO_BOX or (kind == "other" and row.output_shape == row.input_shape):
            continue
        volumes.append(plots.Volume(row.name, kind, *shape, stage=block[1] if block else None))
    return volumes


def _block_of(name: str):
    """``(box label or None, stage, kind)`` from :data:`BLOCKS`, or None."""
    for pattern, label, stage, kind in BLOCKS:
        match = pattern.match(name)
        if match:
            fields = match.groupdict()
            return (label.format(**fields) if label else None, stage.format(**fields), kind)
    return None


def _kind(row) -> str:
    if row.type.startswith("conv") or "Conv" in row.layer_class:
        return "conv"
    if "pool" in row.type or row.layer_class == "Subsampling":
        return "pool"
    return "fc" if row.type == "fc" else "other"


def _hwd(shape):
    shape = tuple(shape)
    if len(shape) == 3 and None not in shape:
        return int(shape[0]), int(shape[1]), int(shape[2])
    if len(shape) == 1 and shape[0] is not None:
        return 1, 1, int(shape[0])
    return None
