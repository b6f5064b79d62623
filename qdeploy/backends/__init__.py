"""Backend registry: ``get_backend(name)`` returns a ready backend or raises with an install hint."""

from __future__ import annotations

from qdeploy.backends.base import Backend, Session, SessionOptions, check_feeds
from qdeploy.backends.ort import OrtBackend
from qdeploy.backends.tensorrt import TensorRTBackend
from qdeploy.errors import BackendUnavailableError
from qdeploy.registry import Registry

__all__ = ["BACKENDS", "Backend", "Session", "SessionOptions", "backend_names", "check_feeds", "get_backend"]

BACKENDS: Registry[Backend] = Registry("backend")
BACKENDS.add("ort-cpu", OrtBackend("ort-cpu", "CPUExecutionProvider", "pip install onnxruntime"))
BACKENDS.add("ort-cuda", OrtBackend("ort-cuda", "CUDAExecutionProvider",
                                    "pip install 'qdeploy[gpu]' (onnxruntime-gpu) on a machine with an NVIDIA GPU"))
BACKENDS.add("tensorrt", TensorRTBackend("tensorrt"))
BACKENDS.add("tensorrt-rtx", TensorRTBackend("tensorrt-rtx"))


def backend_names() -> list[str]:
    """Names accepted by ``--backend``."""
    return BACKENDS.names()


def get_backend(name: str, require: bool = True) -> Backend:
    """The backend called ``name``; with ``require``, raise if it cannot run on this machine."""
    backend = BACKENDS.get(name)
    if require:
        ok, why = backend.available()
        if not ok:
            raise BackendUnavailableError(f"backend {name!r} is not available on this machine", why)
    return backend
