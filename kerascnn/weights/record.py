"""The record of one publisher's ImageNet weights for one of our networks.

Apart from :mod:`kerascnn.weights.published` (which gathers the publishers' ``SOURCES`` by importing
their modules) so that the publisher modules (:mod:`.keras_h5`, :mod:`.torchvision`) can build their
records without importing the module that imports them: no import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PublishedWeights"]


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
    resize: int | None = None    # the evaluation resize (shorter side); None: input_size / 0.875

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]
