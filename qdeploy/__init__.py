"""qdeploy: float PyTorch model -> ONNX export -> calibrated QDQ -> run, check and profile.

The public API is re-exported here lazily (PEP 562 ``__getattr__``): ``import qdeploy`` stays cheap (no
torch, no onnxruntime) so the CLI starts fast, and each name loads its module on first use::

    from qdeploy import CalibrateConfig, calibrate_model
    from qdeploy.calib.data import DataConfig

    calibrate_model(CalibrateConfig(model=Path("m.onnx"), output=Path("m.qdq.onnx"),
                                    data=DataConfig(Path("calib_images/"))))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "CalibrateConfig",
    "ExportConfig",
    "ProfileConfig",
    "SREvalConfig",
    "calibrate_model",
    "evaluate_sr",
    "export_model",
    "get_backend",
    "get_preset",
    "make_observer",
    "profile_models",
]

# public name -> module that defines it (read-only after import; not mutable state)
_LAZY = {
    "CalibrateConfig": "qdeploy.pipeline",
    "calibrate_model": "qdeploy.pipeline",
    "ExportConfig": "qdeploy.export",
    "export_model": "qdeploy.export",
    "ProfileConfig": "qdeploy.evaluate",
    "profile_models": "qdeploy.evaluate",
    "SREvalConfig": "qdeploy.sr",
    "evaluate_sr": "qdeploy.sr",
    "get_backend": "qdeploy.backends",
    "get_preset": "qdeploy.quant",
    "make_observer": "qdeploy.calib",
}

if TYPE_CHECKING:
    from qdeploy.backends import get_backend
    from qdeploy.calib import make_observer
    from qdeploy.evaluate import ProfileConfig, profile_models
    from qdeploy.export import ExportConfig, export_model
    from qdeploy.pipeline import CalibrateConfig, calibrate_model
    from qdeploy.quant import get_preset
    from qdeploy.sr import SREvalConfig, evaluate_sr


def __getattr__(name: str) -> Any:
    """Import the module that defines public ``name`` on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'qdeploy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
