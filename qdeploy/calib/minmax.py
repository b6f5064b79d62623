"""``minmax``: the observed extremes, no clipping.

The baseline every other method is compared with, and the right choice when outliers matter (e.g. a
tensor whose rare large values carry the signal). One pass, constant memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from qdeploy.calib.base import Bounds, Observer, ObserverConfig
from qdeploy.types import QuantTarget

__all__ = ["MinMaxConfig", "MinMaxObserver"]


@dataclass(frozen=True)
class MinMaxConfig(ObserverConfig):
    """No options: the range is fully determined by the data."""


class MinMaxObserver(Observer):
    """``[min, max]``, or ``[-max|x|, max|x|]`` for symmetric grids."""

    method: ClassVar[str] = "minmax"
    config_cls: ClassVar[type[ObserverConfig]] = MinMaxConfig
    passes: ClassVar[int] = 1

    def _bounds(self, name: str, target: QuantTarget) -> Bounds:
        if target.symmetric:
            amax = self.stats.amax
            return Bounds(-amax, amax)
        return Bounds(self.stats.min, self.stats.max)
