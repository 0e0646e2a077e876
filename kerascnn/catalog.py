"""The catalogue the families fill: one :class:`ModelInfo` per named network.

Family modules (``kerascnn.models.*``) call :func:`register` once per named network when they are
imported; :mod:`kerascnn.registry` imports the families and answers questions about them. This
module imports no family and nothing of kerascnn but the errors, so both can import it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["ModelInfo", "register", "UnknownModelError", "CATALOG"]


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one network.

    ``input_shape`` is the paper's input (H, W, C); ``min_size`` the smallest square input the
    network accepts (tests build the network at it); ``paper`` the citation it implements.
    """

    name: str
    family: str
    builder: Callable = field(repr=False)
    input_shape: tuple[int, int, int]
    min_size: int
    paper: str
    description: str = ""
    options: dict = field(default_factory=dict)

    def accepted_options(self) -> list[str]:
        fixed = {"num_classes", "input_shape", "preprocessing", "name"} | set(self.options)
        params = inspect.signature(self.builder).parameters
        return sorted(p for p in params if p not in fixed)


CATALOG: dict[str, ModelInfo] = {}


class UnknownModelError(KeyError):
    """An unknown network name; the message lists the closest registered names."""

    def __str__(self):  # KeyError would quote the message
        return self.args[0]


def register(name: str, builder: Callable, *, family: str, input_shape, min_size: int, paper: str,
             description: str = "", **options) -> ModelInfo:
    """Register ``builder(**options)`` under ``name``. Names are unique and lower case."""
    if name != name.lower() or name in CATALOG:
        raise ValueError(f"model name {name!r} must be lower case and unique")
    info = ModelInfo(name, family, builder, tuple(input_shape), min_size, paper, description, options)
    CATALOG[name] = info
    return info
