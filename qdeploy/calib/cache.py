"""Versioned JSON calibration cache: computed ranges plus everything that decided them.

Calibration is the slow step (two passes of the float model over the data), and its result depends on
the model, the data, the method and its options, and the target grid. The cache records all of them so
a later run can reuse ranges only when nothing changed (:meth:`CalibrationCache.mismatches` says what
differs), and so a cache file is a readable record of how a quantized model got its scales.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qdeploy.artifacts import write_json
from qdeploy.errors import InputError
from qdeploy.types import QuantTarget, TensorRange

__all__ = ["CACHE_FORMAT", "CACHE_VERSION", "CalibrationCache", "load_cache", "save_cache"]

CACHE_FORMAT = "qdeploy-calibration-cache"
CACHE_VERSION = 1
_RECALIBRATE = "recalibrate without --cache (or delete the file) to write a fresh cache"


@dataclass(frozen=True)
class CalibrationCache:
    """Ranges of one calibration run and the inputs that produced them."""

    model_sha256: str
    method: str
    observer_config: dict[str, Any]
    target: QuantTarget
    data_source: str
    data_count: int
    data_sha256: str
    ranges: dict[str, TensorRange]
    extra: dict[str, Any] = field(default_factory=dict)
    #: Optional per-tensor precision (``{tensor: "int4" | "int8" | "float"}``) chosen by
    #: ``qdeploy.analyze.search_precision`` or edited by hand; re-applied with ``ApplyPrecisionMapPass``.
    #: Written only when set, so version-1 readers and caches without it are unaffected.
    precision_map: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The versioned JSON document."""
        return {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "model_sha256": self.model_sha256,
            "method": self.method,
            "observer_config": dict(self.observer_config),
            "target": {"bits": self.target.bits, "symmetric": self.target.symmetric},
            "data": {"source": self.data_source, "count": self.data_count, "sha256": self.data_sha256},
            "tensors": {name: r.to_dict() for name, r in self.ranges.items()},
            "extra": dict(self.extra),
        } | ({"precision_map": dict(self.precision_map)} if self.precision_map is not None else {})

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> CalibrationCache:
        """Inverse of :meth:`to_dict` (no format/version check; :func:`load_cache` does that)."""
        target = doc["target"]
        data = doc["data"]
        return cls(
            model_sha256=str(doc["model_sha256"]),
            method=str(doc["method"]),
            observer_config=dict(doc["observer_config"]),
            target=QuantTarget(bits=int(target["bits"]), symmetric=bool(target["symmetric"])),
            data_source=str(data["source"]),
            data_count=int(data["count"]),
            data_sha256=str(data["sha256"]),
            ranges={name: TensorRange.from_dict(r) for name, r in doc["tensors"].items()},
            extra=dict(doc.get("extra", {})),
            precision_map=_precision_map(doc.get("precision_map")),
        )

    def raise_ranges(self) -> dict[str, TensorRange]:
        """Bounds to re-quantize a tensor raised to 8 bits with: the 8-bit-grid bounds a precision search
        stored (``extra["raise_ranges"]``), else the observer's own ranges (exact only for an 8-bit cache)."""
        stored = self.extra.get("raise_ranges")
        return {n: TensorRange.from_dict(r) for n, r in stored.items()} if stored else dict(self.ranges)

    def mismatches(
        self,
        *,
        model_sha256: str,
        method: str,
        observer_config: dict[str, Any],
        target: QuantTarget,
        data_sha256: str,
    ) -> list[str]:
        """Human-readable reasons this cache does not fit the current run (empty list: reusable)."""
        checks = [
            ("model", self.model_sha256, model_sha256),
            ("method", self.method, method),
            ("observer options", self.observer_config, observer_config),
            ("target", self.target, target),
            ("calibration data", self.data_sha256, data_sha256),
        ]
        return [f"{what} differs (cache: {old!r}, now: {new!r})" for what, old, new in checks if old != new]


def _precision_map(value: Any) -> dict[str, str] | None:
    """The optional ``precision_map`` field: a JSON object of strings (hand-edited, so checked)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items()):
        raise ValueError('"precision_map" must map tensor names to strings such as "int8" or "float"')
    return dict(value)


def save_cache(path: str | os.PathLike[str], cache: CalibrationCache) -> Path:
    """Write ``cache`` as JSON atomically (never a half-written cache)."""
    return write_json(path, cache.to_dict())


def load_cache(path: str | os.PathLike[str]) -> CalibrationCache:
    """Read a cache written by :func:`save_cache`.

    Raises:
        InputError: missing file, invalid JSON, another format, an unsupported version or missing fields.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"calibration cache {path} does not exist", f"check the path, or {_RECALIBRATE}")
    try:
        doc = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"calibration cache {path} is not valid JSON: {exc}", _RECALIBRATE) from None
    if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise InputError(
            f"{path} is not a qdeploy calibration cache (format {found!r}, expected {CACHE_FORMAT!r})",
            f"pass a file written by qdeploy, or {_RECALIBRATE}",
        )
    if doc.get("version") != CACHE_VERSION:
        raise InputError(
            f"calibration cache {path} has version {doc.get('version')!r}; "
            f"this qdeploy reads version {CACHE_VERSION}",
            _RECALIBRATE,
        )
    try:
        return CalibrationCache.from_dict(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        message = f"calibration cache {path} is incomplete or damaged ({exc!r})"
        raise InputError(message, _RECALIBRATE) from exc
