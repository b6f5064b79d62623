"""PyTorch -> ONNX export: SPEC resolution, the exporters with fallback, and the parity check.

Importing this package does not import torch (the CLI imports it at start-up); torch loads when a model
is resolved or exported.
"""

from __future__ import annotations

from qdeploy.export.parity import ParityCheck, ParityReport, ParityTolerance, require_parity, run_parity
from qdeploy.export.spec import SPEC_FORMS, ResolvedModel, resolve_spec
from qdeploy.export.torch_export import EXPORTERS, ExportConfig, ExportResult, export_model, failure_reason

__all__ = [
    "EXPORTERS",
    "SPEC_FORMS",
    "ExportConfig",
    "ExportResult",
    "ParityCheck",
    "ParityReport",
    "ParityTolerance",
    "ResolvedModel",
    "export_model",
    "failure_reason",
    "require_parity",
    "resolve_spec",
    "run_parity",
]
