"""TensorRT and TensorRT-RTX backends: build (or load a cached) engine, run it with ``execute_async_v3``.

Verification status, stated plainly: the run path below is written to TensorRT 10's documented runtime
API (``Runtime.deserialize_cuda_engine``, ``IExecutionContext.set_input_shape`` / ``set_tensor_address``
/ ``execute_async_v3``) and has **not** been executed by this project: full TensorRT cannot be installed
on any machine available to it, and TensorRT-RTX engines do not run on the H100/H200 it can borrow
(compute capability 9.0 is unsupported by RTX). What *is* exercised in CI is the engine build
(:func:`qdeploy.trt.build.build_engine`), which TensorRT-RTX performs ahead of time on a CPU-only machine.

Device memory comes from torch CUDA tensors when torch has CUDA (no extra dependency), else cuda-python.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from qdeploy.backends.base import Backend, ModelSource, Session, SessionOptions
from qdeploy.errors import BackendUnavailableError, InputError
from qdeploy.types import TensorSpec

__all__ = ["TensorRTBackend", "TensorRTSession"]

_NP_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT32": "int32",
    "INT64": "int64",
    "INT8": "int8",
    "UINT8": "uint8",
    "BOOL": "bool",
}


class TensorRTBackend(Backend):
    """``tensorrt`` / ``tensorrt-rtx``: one class, the flavour decides which package is imported."""

    def __init__(self, flavor: str) -> None:
        from qdeploy.trt.loader import INSTALL_HINTS

        self.name = flavor
        self.flavor = flavor
        self.install_hint = INSTALL_HINTS[flavor]

    def available(self) -> tuple[bool, str]:
        """Needs the package *and* an NVIDIA GPU; RTX without a GPU can still build (``qdeploy build``)."""
        from qdeploy.trt.loader import gpu_capability, gpu_name, import_trt, rtx_supports

        try:
            trt = import_trt(self.flavor)
        except BackendUnavailableError as exc:
            return False, f"{exc.message}; {exc.hint}"
        if gpu_name() is None:
            if self.flavor == "tensorrt-rtx":
                return False, (
                    "no NVIDIA GPU: TensorRT-RTX can build engines here (qdeploy build) but not run them"
                )
            return False, "no NVIDIA GPU (CUDA device) found: TensorRT needs one to build and run engines"
        capability = gpu_capability()
        if self.flavor == "tensorrt-rtx" and capability is not None and not rtx_supports(trt, capability):
            return False, (
                f"{gpu_name()} (compute capability {capability[0]}.{capability[1]}) cannot run "
                "TensorRT-RTX engines; use --flavor tensorrt, or build here and run on an RTX GPU"
            )
        return True, ""

    def open(
        self, model: ModelSource, options: SessionOptions | None = None, *, build: Any = None
    ) -> TensorRTSession:
        """Build (engine cache aware) and load ``model``; ``build`` is a :class:`qdeploy.trt.BuildConfig`.

        Default build: ``fp16`` when ``options.fp16`` and the model is float, ``int8`` for a QDQ model
        (explicit quantization), else ``fp32``. Untested here (see the module docstring).
        """
        ok, why = self.available()
        if not ok:
            raise BackendUnavailableError(f"backend {self.name!r} is not available", why)
        from qdeploy.trt.build import BuildConfig, build_engine, is_qdq_model

        options = options or SessionOptions()
        with tempfile.TemporaryDirectory() as tmp:
            path = _as_path(model, Path(tmp))
            if build is None:
                from qdeploy.graph.io import load_model

                qdq = is_qdq_model(load_model(path))
                precision = "int8" if qdq else ("fp16" if options.fp16 else "fp32")
                build = BuildConfig(precision=precision, flavor=self.flavor)
            result = build_engine(path, build)
        return TensorRTSession(self.flavor, result.engine)


def _as_path(model: ModelSource, tmp: Path) -> Path:
    """An on-disk .onnx for the parser (IR models and bytes are written to ``tmp``)."""
    if isinstance(model, ir.Model):
        from qdeploy.graph.io import save_model

        return save_model(model, tmp / "model.onnx")
    if isinstance(model, bytes):
        path = tmp / "model.onnx"
        path.write_bytes(model)
        return path
    path = Path(model)
    if not path.exists():
        raise InputError(f"model file not found: {path}", "check the path")
    return path


class TensorRTSession(Session):
    """A deserialized engine plus one execution context (written to the TensorRT 10 API; untested here)."""

    def __init__(self, flavor: str, engine_bytes: bytes) -> None:
        from qdeploy.trt.loader import CollectingLogger, import_trt

        self._trt = trt = import_trt(flavor)
        self._logger = CollectingLogger(trt)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise InputError(
                f"{flavor} could not load the engine: " + " | ".join(self._logger.errors()[-3:]),
                "rebuild the engine with this TensorRT version on this GPU",
            )
        self._context = self._engine.create_execution_context()
        self.backend_name = flavor
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs, outputs = [], []
        for name in names:
            spec = TensorSpec(
                name,
                tuple(d if d >= 0 else None for d in self._engine.get_tensor_shape(name)),
                _NP_DTYPES.get(self._engine.get_tensor_dtype(name).name, "float32"),
            )
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(spec)
        super().__init__(inputs, outputs)

    def _run_impl(
        self, feeds: dict[str, np.ndarray], output_names: list[str] | None
    ) -> dict[str, np.ndarray]:
        for name, array in feeds.items():
            self._context.set_input_shape(name, tuple(array.shape))
        device = _TorchDevice() if _torch_cuda() else _CudaPythonDevice()
        try:
            for name, array in feeds.items():
                self._context.set_tensor_address(name, device.upload(array))
            shapes = {o.name: tuple(self._context.get_tensor_shape(o.name)) for o in self.outputs}
            for spec in self.outputs:
                self._context.set_tensor_address(spec.name, device.empty(shapes[spec.name], spec.dtype))
            if not self._context.execute_async_v3(device.stream):
                raise InputError(
                    f"{self.backend_name} failed to run: " + " | ".join(self._logger.errors()[-3:]),
                    "check input shapes against the engine's optimisation profile",
                )
            results = device.download_all(self.outputs)
        finally:
            device.close()
        names = output_names or [o.name for o in self.outputs]
        return {n: results[n] for n in names}

    def close(self) -> None:
        """Drop the context and engine (TensorRT frees device memory when they are collected)."""
        self._context = None
        self._engine = None


def _torch_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


class _TorchDevice:
    """Device buffers as torch CUDA tensors (kept alive until :meth:`close`)."""

    def __init__(self) -> None:
        import torch

        self._torch = torch
        self._stream = torch.cuda.Stream()
        self.stream = self._stream.cuda_stream
        self._buffers: dict[int, Any] = {}
        self._outputs: dict[str, Any] = {}

    def upload(self, array: np.ndarray) -> int:
        tensor = self._torch.from_numpy(np.ascontiguousarray(array)).cuda()
        self._buffers[tensor.data_ptr()] = tensor
        return tensor.data_ptr()

    def empty(self, shape: tuple[int, ...], dtype: str) -> int:
        tensor = self._torch.empty(shape, dtype=getattr(self._torch, dtype), device="cuda")
        self._buffers[tensor.data_ptr()] = tensor
        self._outputs[str(len(self._outputs))] = tensor
        return tensor.data_ptr()

    def download_all(self, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
        self._stream.synchronize()
        return {spec.name: t.cpu().numpy() for spec, t in zip(specs, self._outputs.values(), strict=False)}

    def close(self) -> None:
        self._buffers.clear()


class _CudaPythonDevice:
    """Device buffers through cuda-python's runtime API (``cudaMalloc`` / ``cudaMemcpy``)."""

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
        except ImportError:
            raise BackendUnavailableError(
                "neither torch with CUDA nor cuda-python is installed",
                "pip install cuda-python (or a CUDA build of torch)",
            ) from None
        self._rt = cudart
        _, self.stream = cudart.cudaStreamCreate()
        self._ptrs: list[int] = []
        self._outputs: list[tuple[int, tuple[int, ...], str]] = []

    def _malloc(self, nbytes: int) -> int:
        err, ptr = self._rt.cudaMalloc(max(nbytes, 1))
        if int(err):
            raise InputError(f"cudaMalloc({nbytes}) failed: {err}", "free GPU memory or use smaller inputs")
        self._ptrs.append(int(ptr))
        return int(ptr)

    def upload(self, array: np.ndarray) -> int:
        array = np.ascontiguousarray(array)
        ptr = self._malloc(array.nbytes)
        self._rt.cudaMemcpy(
            ptr, array.ctypes.data, array.nbytes, self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        )
        return ptr

    def empty(self, shape: tuple[int, ...], dtype: str) -> int:
        ptr = self._malloc(int(np.prod(shape)) * np.dtype(dtype).itemsize)
        self._outputs.append((ptr, shape, dtype))
        return ptr

    def download_all(self, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
        self._rt.cudaStreamSynchronize(self.stream)
        out = {}
        for spec, (ptr, shape, dtype) in zip(specs, self._outputs, strict=False):
            host = np.empty(shape, dtype=dtype)
            self._rt.cudaMemcpy(
                host.ctypes.data, ptr, host.nbytes, self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
            )
            out[spec.name] = host
        return out

    def close(self) -> None:
        for ptr in self._ptrs:
            self._rt.cudaFree(ptr)
        self._rt.cudaStreamDestroy(self.stream)
