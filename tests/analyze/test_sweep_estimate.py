"""The sensitivity sweep's up-front estimate counts each suffix session's opening once per cut, not once per
tensor: on a large graph opening a session dominates a tensor's own runs (NGswin: estimated 3.1 h, took ~2 min)."""

from __future__ import annotations

import re
import time

import qdeploy.analyze.sensitivity as sensitivity
from qdeploy.analyze import AnalyzeConfig, analyze_sensitivity
from qdeploy.progress import ANNOUNCE_LOGGER

OPEN_DELAY_S = 0.4  # every session opening made this slow: the cost the estimate must not multiply
SLACK = 2.5  # the estimate within this factor of the measured sweep


def _seconds(text: str) -> float:
    number, unit = re.search(r"-> about ([\d.]+) (ms|s|min|h)", text).groups()
    return float(number) * {"ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}[unit]


def test_estimate_with_slow_session_openings(float_model, w4a4, heldout, monkeypatch, caplog) -> None:
    real_open = sensitivity._open

    def slow_open(*args, **kwargs):
        time.sleep(OPEN_DELAY_S)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(sensitivity, "_open", slow_open)
    start = time.perf_counter()
    with caplog.at_level("INFO", logger=ANNOUNCE_LOGGER):
        result = analyze_sensitivity(float_model, w4a4[0], heldout, config=AnalyzeConfig(threads=1))
    took = time.perf_counter() - start
    line = next(r.getMessage() for r in caplog.records if "sensitivity sweep of" in r.getMessage())
    assert len(result.tensors) > 4
    estimate = _seconds(line)
    assert took / SLACK <= estimate <= took * SLACK, (line, took)
