"""What the exporters say: their chatter kept off stdout, their failures reduced to one reason line.

Split from :mod:`qdeploy.export.torch_export` (which re-exports :func:`failure_reason`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

__all__ = ["failure_reason", "quiet_exporters"]

_LOG = logging.getLogger("qdeploy.export.torch_export")  # the name users raise to -vv for the exporters' logs
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_USER_FRAME = re.compile(r'raised this error:\s*File "([^"]+)", line (\d+), in \w+\s*\n\s*(.+)')


def failure_reason(exc: BaseException) -> str:
    """``Type: first line`` of an exception's root cause (plus where in user code), without colour codes.

    torch wraps the real error (e.g. ``GuardOnDataDependentSymNode`` for ``if x.sum() > 0:``) in a
    generic "Failed to export" message, so the root cause and the quoted user line are what users need.
    """
    def line(e: BaseException) -> str:
        lines = [ln.strip() for ln in _ANSI.sub("", str(e)).strip().splitlines() if ln.strip()]
        if not lines:
            return type(e).__name__
        first = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
        return f"{type(e).__name__}: {first}"

    root = exc
    while root.__cause__ is not None and root.__cause__ is not root:
        root = root.__cause__
    reason = line(exc) if root is exc else f"{type(exc).__name__} <- {line(root)}"
    where = _USER_FRAME.search(_ANSI.sub("", str(exc)))
    if where:
        reason += f" [at {Path(where.group(1)).name}:{where.group(2)}: {where.group(3).strip()}]"
    return reason


@contextlib.contextmanager
def quiet_exporters(stderr: bool = False) -> Iterator[None]:
    """Keep exporter chatter off stdout (``--json`` needs it clean); show it only at -vv (debug).

    torch prints partial graphs to stderr when torch.export fails (``stderr=True`` captures them) and
    logs warnings about optional packages; neither helps a user whose model falls back cleanly, and both
    bury the one line that explains the fallback. TracerWarnings of the TorchScript exporter stay visible.
    """
    names = ("torch.onnx", "torch.export", "torch._export", "torch.fx", "torch._dynamo")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    debug = _LOG.getEffectiveLevel() <= logging.DEBUG
    captured = io.StringIO()
    try:
        for lg in loggers:
            if not debug:
                lg.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(captured), warnings.catch_warnings(), \
                (contextlib.redirect_stderr(captured) if stderr else contextlib.nullcontext()):
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            # resolve_spec already called eval(); only ExportedProgram modules (.pt2) refuse it, and their
            # mode was fixed when they were exported, so torch's "training mode" warning is noise here.
            warnings.filterwarnings("ignore", message="Exporting a model while it is in training mode")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if captured.getvalue().strip():
            _LOG.debug("exporter output:\n%s", captured.getvalue())
