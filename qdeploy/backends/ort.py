"""ONNX Runtime backends: ``ort-cpu`` and ``ort-cuda`` are one class with different providers."""

from __future__ import annotations

import numpy as np

from qdeploy.backends.base import Backend, ModelSource, Session, SessionOptions, model_bytes
from qdeploy.errors import BackendUnavailableError, InputError
from qdeploy.types import TensorSpec

__all__ = ["OrtBackend", "OrtSession"]

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(bool)": "bool",
}
_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
           "all": "ORT_ENABLE_ALL"}


def _spec(node_arg) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else (d or None) for d in node_arg.shape)
    return TensorSpec(node_arg.name, shape, _ORT_DTYPES.get(node_arg.type, "float32"))


class OrtSession(Session):
    """An ``onnxruntime.InferenceSession`` behind the qdeploy :class:`Session` interface."""

    def __init__(self, sess, backend_name: str) -> None:
        super().__init__([_spec(i) for i in sess.get_inputs()], [_spec(o) for o in sess.get_outputs()])
        self._sess = sess
        self.backend_name = backend_name
        self.providers = sess.get_providers()

    def _run_impl(self, feeds: dict[str, np.ndarray], output_names: list[str] | None) -> dict[str, np.ndarray]:
        names = output_names or [o.name for o in self.outputs]
        try:
            values = self._sess.run(names, feeds)
        except Exception as exc:
            raise InputError(f"ONNX Runtime failed to run the model: {str(exc).splitlines()[0]}",
                             "check input shapes and dtypes against the model's inputs") from exc
        return dict(zip(names, values))


class OrtBackend(Backend):
    """ONNX Runtime with one execution provider (CPU, or CUDA with CPU fallback)."""

    def __init__(self, name: str, provider: str, install_hint: str) -> None:
        self.name = name
        self.provider = provider
        self.install_hint = install_hint

    def available(self) -> tuple[bool, str]:
        """Whether onnxruntime imports and offers this backend's provider."""
        try:
            import onnxruntime as ort
        except ImportError:
            return False, f"onnxruntime is not installed; {self.install_hint}"
        if self.provider not in ort.get_available_providers():
            return False, f"onnxruntime has no {self.provider}; {self.install_hint}"
        return True, ""

    def open(self, model: ModelSource, options: SessionOptions | None = None) -> OrtSession:
        """Create an ORT session with the requested threads and optimization level."""
        ok, why = self.available()
        if not ok:
            raise BackendUnavailableError(f"backend {self.name!r} is not available", why)
        import onnxruntime as ort

        options = options or SessionOptions()
        so = ort.SessionOptions()
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _LEVELS[options.graph_optimization])
        if options.threads:
            so.intra_op_num_threads = options.threads
            so.inter_op_num_threads = 1
        if options.optimized_model_path:
            so.optimized_model_filepath = options.optimized_model_path
        so.log_severity_level = 3
        cpu = "CPUExecutionProvider"
        providers = [self.provider] if self.provider == cpu else [self.provider, cpu]
        if self.provider == "CUDAExecutionProvider" and hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
        try:
            sess = ort.InferenceSession(model_bytes(model), so, providers=providers)
        except Exception as exc:
            raise InputError(f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0]}",
                             "the graph uses an op or type this runtime does not support; see the message") from exc
        return OrtSession(sess, self.name)
