"""Errors that reach users: each names the problem *and* the fix.

The CLI catches :class:`QDeployError`, prints ``error: <message>`` plus ``hint: <hint>`` and exits with a
non-zero code, so every failure a user can cause (bad path, corrupt ONNX, NaN in data, a backend that is
not installed) must be raised as one of these, never as a bare traceback.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "CalibrationError",
    "ExportError",
    "InputError",
    "QDeployError",
    "UnsupportedModelError",
]


class QDeployError(Exception):
    """Base class: ``message`` says what is wrong, ``hint`` says what to do about it."""

    exit_code = 2

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class InputError(QDeployError):
    """A file, shape, option or data value given by the user is unusable."""


class UnsupportedModelError(QDeployError):
    """The model is valid ONNX but uses something qdeploy cannot handle (op, dtype, structure)."""


class CalibrationError(QDeployError):
    """Calibration could not produce ranges (empty data, NaN/Inf activations, ...)."""


class ExportError(QDeployError):
    """PyTorch -> ONNX export failed or did not match PyTorch within tolerance."""


class BackendUnavailableError(QDeployError):
    """A requested backend's optional package (or device) is missing."""

    exit_code = 3
