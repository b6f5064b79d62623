"""Lazy imports of TensorRT / TensorRT-RTX, the GPU probe, and a logger that keeps TensorRT's messages.

Both flavours expose the same Python API (Builder, NetworkDefinition, OnnxParser, BuilderConfig, Runtime),
so everything above this module is written once against ``trt`` and only the import differs. Nothing
here imports TensorRT at module import time: ``import qdeploy`` must work on machines without it.
"""

from __future__ import annotations

import importlib
import logging
from functools import lru_cache
from types import ModuleType
from typing import Any

from qdeploy.errors import BackendUnavailableError

__all__ = [
    "FLAVORS",
    "INSTALL_HINTS",
    "CollectingLogger",
    "gpu_capability",
    "gpu_name",
    "import_trt",
    "rtx_supports",
    "trt_version",
]

FLAVORS = ("tensorrt", "tensorrt-rtx")

INSTALL_HINTS = {
    "tensorrt": "pip install 'qdeploy[tensorrt]' (TensorRT 10.x; needs an NVIDIA GPU and driver)",
    "tensorrt-rtx": "pip install tensorrt-rtx-cu13-libs tensorrt-rtx-cu13-bindings "
    "(or 'qdeploy[tensorrt-rtx]')",
}

_log = logging.getLogger("qdeploy.trt")


def import_trt(flavor: str) -> ModuleType:
    """The ``tensorrt`` module for ``flavor``, or :class:`BackendUnavailableError` with the install command.

    TensorRT-RTX ships its shared libraries in ``tensorrt_rtx_libs``, which must be imported first so the
    bindings can find them.
    """
    if flavor not in FLAVORS:
        raise ValueError(f"flavor must be one of {FLAVORS}, got {flavor!r}")
    try:
        if flavor == "tensorrt-rtx":
            importlib.import_module("tensorrt_rtx_libs")
            return importlib.import_module("tensorrt_rtx_bindings")
        return importlib.import_module("tensorrt")
    except ImportError as exc:
        raise BackendUnavailableError(f"{flavor} is not installed ({exc})", INSTALL_HINTS[flavor]) from None


# Kept as the name the design notes use.
_import_trt = import_trt


def trt_version(trt: ModuleType) -> str:
    """``tensorrt.__version__`` (part of every engine cache key: engines are not portable across versions)."""
    return str(getattr(trt, "__version__", "unknown"))


@lru_cache(maxsize=1)
def gpu_name() -> str | None:
    """Name of CUDA device 0, or None when there is no usable NVIDIA GPU.

    Asks torch first (already a dependency; its CUDA build ships the runtime), then cuda-python. A CPU-only
    torch and no cuda-python means None: that is the honest answer on a CI machine.
    """
    try:
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(0))
    except Exception:
        pass
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]

        err, count = cudart.cudaGetDeviceCount()
        if int(err) == 0 and count > 0:
            err, props = cudart.cudaGetDeviceProperties(0)
            return props.name.decode(errors="replace").rstrip("\x00") if int(err) == 0 else "cuda:0"
    except Exception:
        pass
    return None


def gpu_capability() -> tuple[int, int] | None:
    """(major, minor) compute capability of CUDA device 0 via torch, or None if unknown / no GPU."""
    if gpu_name() is None:
        return None
    try:
        import torch

        return tuple(torch.cuda.get_device_capability(0))  # type: ignore[return-value]
    except Exception:
        return None


def rtx_supports(trt: ModuleType, capability: tuple[int, int]) -> bool:
    """Whether TensorRT-RTX lists ``capability`` in its ``ComputeCapability`` enum (SM75, SM80, ...).

    Why: RTX engines do not run on data-centre GPUs such as the H100 (9.0), which a plain "is there a GPU"
    test would wrongly accept.
    """
    members = getattr(getattr(trt, "ComputeCapability", None), "__members__", {})
    return f"SM{capability[0]}{capability[1]}" in members


def CollectingLogger(trt: ModuleType, echo_level: int = logging.DEBUG) -> Any:  # noqa: N802 (factory)
    """A ``trt.ILogger`` that records ``(severity, message)`` and forwards to Python logging.

    Why not ``trt.Logger``: it prints to stderr, and on a CPU-only machine TensorRT-RTX logs a harmless
    "CUDA driver version is insufficient" error at every build; keeping messages lets failures quote the
    relevant ones instead. A factory because the base class lives in the lazily imported module.
    """

    class _Logger(trt.ILogger):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[str, str]] = []

        def log(self, severity: Any, msg: str) -> None:
            name = getattr(severity, "name", str(severity))
            self.messages.append((name, msg))
            _log.log(logging.WARNING if name == "INTERNAL_ERROR" else echo_level, "[%s] %s", name, msg)

        def errors(self) -> list[str]:
            return [m for s, m in self.messages if s in ("ERROR", "INTERNAL_ERROR")]

    return _Logger()
