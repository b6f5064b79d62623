"""Small value types shared by calibration, quantization and reporting."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["QuantTarget", "TensorRange", "TensorSpec"]


@dataclass(frozen=True)
class QuantTarget:
    """The integer grid a tensor will be quantized to; observers pick bounds *for* this grid.

    ``symmetric=True`` means zero point 0 and a grid symmetric around zero (TensorRT INT8: [-127, 127]
    after restricting -128); ``symmetric=False`` means an affine grid anchored at ``lo`` with an integer
    zero point (ORT uint8 activations: [0, 255]). Example: bits=8, symmetric=False, bounds [-1, 3] give
    scale 4/255 and zero point 64.
    """

    bits: int = 8
    symmetric: bool = False

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 16:
            raise ValueError(f"bits must be in 2..16, got {self.bits}")

    @property
    def levels(self) -> int:
        """Number of usable integer levels (symmetric grids drop the most negative code)."""
        return 2**self.bits - 1 if not self.symmetric else 2**self.bits - 2


@dataclass(frozen=True)
class TensorRange:
    """Calibrated range of one tensor: what was observed and which clipping bounds were chosen.

    ``lo``/``hi`` are the bounds to quantize with (lo <= 0 <= hi is *not* guaranteed here; the scale
    computation widens them to include zero). ``clipped_fraction`` is the share of observed values
    outside [lo, hi]. ``details`` holds method-specific facts (e.g. the DOBI shape decision).
    """

    name: str
    observed_min: float
    observed_max: float
    lo: float
    hi: float
    clipped_fraction: float
    method: str
    count: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for the calibration cache."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorRange:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (ints, or strings/None for dynamic dims) and numpy dtype name of a graph input/output."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: str = "float32"
