"""Make the shared tiny-model helpers of tests/passes importable here as ``qdq_models``."""

from __future__ import annotations

import sys
from pathlib import Path

_PASSES = str(Path(__file__).resolve().parents[1] / "passes")
if _PASSES not in sys.path:
    sys.path.insert(0, _PASSES)
