"""Published ImageNet weights (torchvision, keras.applications) converted into the zoo's networks.

One :class:`PublishedWeights` record per network that has them: where the publisher's file lives,
its published hash, the builder options that make our network the publisher's (``stride_on="1x1"``
for keras.applications' ResNet v1, ``variant="torchvision"`` for torchvision's GoogLeNet), the
publisher's preprocessing as our ``preprocessing`` dict (so the converted model takes raw uint8 RGB
pixels) and the publisher's own ImageNet top-1.

Each publisher has a module with two functions, looked up through :data:`PUBLISHERS`:

* ``read(path) -> dict[str, numpy.ndarray]``: the tensors of the publisher's file, by the
  publisher's own names (a torchvision state-dict key ``layer1.0.conv1.weight``; a keras.applications
  legacy-h5 entry ``conv1_conv/kernel:0``);
* ``convert(model, tensors, entry) -> None``: assign them to our ``model`` (built with
  ``entry.options`` and ``entry.preprocessing``), folding what is foldable exactly (a conv bias before
  batch norm into the moving mean, an epsilon difference into the moving variance, BGR into the first
  kernel's channel order) and raising :class:`kerascnn.weights.WeightsError` on any tensor it cannot
  place or any of our weights it leaves unset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PublishedWeights", "PUBLISHERS"]

#: publisher -> the module (relative to this package) with its ``read`` and ``convert``.
PUBLISHERS = {
    "keras.applications": ".keras_h5",
    "torchvision": ".torchvision",
}


@dataclass(frozen=True)
class PublishedWeights:
    """One publisher's ImageNet weights for one of our networks."""

    network: str                 # our registry name: "resnet50"
    publisher: str               # a key of PUBLISHERS
    source_name: str             # the publisher's name: "ResNet50_Weights.IMAGENET1K_V1"
    url: str                     # the publisher's download address
    file_hash: str               # the published hash of that file
    hash_kind: str               # "sha256-prefix" (torchvision: in the file name) or "md5" (keras)
    top1: float                  # the publisher's ImageNet-1k validation top-1, percent
    top5: float | None = None
    preprocessing: dict = field(default_factory=dict)   # our preprocessing dict for raw uint8 RGB
    options: dict = field(default_factory=dict)         # builder options matching the publisher
    input_size: int = 224
    licence: str = ""

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]
