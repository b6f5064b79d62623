"""The backend interface: a :class:`Backend` opens :class:`Session` objects that run a model.

Modelled on Polygraphy's runners: the public ``run`` validates inputs against the model's input specs
(names, rank, static dims, dtype) and raises a readable :class:`InputError`; subclasses implement only
``_run_impl``. Optional packages are imported inside ``Backend.open``/``available`` so that importing
qdeploy never needs a GPU stack.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from qdeploy.errors import InputError
from qdeploy.types import TensorSpec

__all__ = ["Backend", "ModelSource", "Session", "SessionOptions", "check_feeds"]

ModelSource = ir.Model | str | os.PathLike[str] | bytes


@dataclass(frozen=True)
class SessionOptions:
    """Knobs every backend understands (backends ignore what does not apply to them).

    ``graph_optimization``: "all" runs the backend's real fused kernels (how accuracy must be judged);
    "disable" runs plain per-op math (QDQ evaluated as quantize->dequantize in float), which isolates
    calibration error from kernel effects such as int16 saturation on AVX2.
    """

    threads: int | None = None
    graph_optimization: str = "all"
    optimized_model_path: str | None = None
    fp16: bool = False

    def __post_init__(self) -> None:
        if self.graph_optimization not in ("all", "basic", "extended", "disable"):
            raise ValueError(f"graph_optimization must be all/basic/extended/disable, got {self.graph_optimization!r}")


def check_feeds(specs: list[TensorSpec], feeds: dict[str, np.ndarray]) -> None:
    """Raise :class:`InputError` if ``feeds`` do not match the model inputs (names, rank, static dims)."""
    names = {s.name for s in specs}
    missing = names - feeds.keys()
    extra = feeds.keys() - names
    if missing or extra:
        raise InputError(
            f"model inputs are {sorted(names)}, got {sorted(feeds)}",
            "name the inputs as the model does (see `qdeploy profile --help` for --input-shape NAME:SHAPE)",
        )
    for spec in specs:
        arr = feeds[spec.name]
        if arr.ndim != len(spec.shape):
            raise InputError(
                f"input {spec.name!r} has rank {arr.ndim} (shape {tuple(arr.shape)}), the model expects rank "
                f"{len(spec.shape)} {_fmt_shape(spec.shape)}",
                "pass a shape with the model's rank, e.g. --input-shape 1,3,64,64",
            )
        for axis, (want, got) in enumerate(zip(spec.shape, arr.shape)):
            if isinstance(want, int) and want != got:
                raise InputError(
                    f"input {spec.name!r} has shape {tuple(arr.shape)}, the model expects {_fmt_shape(spec.shape)} "
                    f"(axis {axis} is fixed to {want})",
                    "use the model's static size, or re-export with --dynamic-hw / --dynamic-batch",
                )


def _fmt_shape(shape: tuple[int | str | None, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


class Session:
    """A loaded model ready to run; use as a context manager or call :meth:`close`."""

    backend_name = "base"

    def __init__(self, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> None:
        self.inputs = inputs
        self.outputs = outputs

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Validate ``feeds`` and run; returns outputs by name (all outputs when ``output_names`` is None)."""
        check_feeds(self.inputs, feeds)
        cast = {s.name: np.ascontiguousarray(feeds[s.name], dtype=np.dtype(s.dtype)) for s in self.inputs}
        return self._run_impl(cast, output_names)

    def _run_impl(self, feeds: dict[str, np.ndarray], output_names: list[str] | None) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release backend resources (no-op by default)."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Backend:
    """A named way to run ONNX models. Subclasses set ``name`` and implement ``available``/``open``."""

    name = "base"
    install_hint = ""

    def available(self) -> tuple[bool, str]:
        """(True, "") when usable here, else (False, why + what to install)."""
        raise NotImplementedError

    def open(self, model: ModelSource, options: SessionOptions | None = None) -> Session:
        """Create a session for ``model`` (an IR model, an .onnx path, or ONNX bytes)."""
        raise NotImplementedError


def model_bytes(model: ModelSource) -> bytes | str:
    """ONNX bytes for an IR model, the path string for a file, or bytes unchanged (ORT accepts all)."""
    if isinstance(model, ir.Model):
        from qdeploy.graph.io import model_to_bytes

        return model_to_bytes(model)
    if isinstance(model, bytes):
        return model
    path = Path(model)
    if not path.exists():
        raise InputError(f"model file not found: {path}", "check the path")
    return str(path)
