"""Timing loops behind :func:`qdeploy.evaluate.profile.profile_models`: sequential and interleaved rounds.

Why interleave: on a shared or thermally throttled machine, latency drifts by tens of percent over
seconds. Timing model A for 10 s and then model B for 10 s folds that drift into the A/B comparison.
Interleaved rounds run every open session once (A B, then B A, ...: the start rotates so no model always
runs on a cache warmed by the same neighbour), so drift hits all models alike and per-round ratios
cancel it.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np

from qdeploy.backends import Session

__all__ = ["ProgressFn", "TimingBudget", "time_interleaved", "time_sequential"]

ProgressFn = Callable[[str, int, int | None], None]
"""``progress(stage, done, total)``; total is None when unknown (time-budget mode)."""


class TimingBudget(Protocol):
    """The part of :class:`qdeploy.evaluate.profile.ProfileConfig` the timing loops read."""

    warmup: int
    iterations: int
    time_budget_s: float | None
    min_iterations: int


def _timed_run(session: Session, feeds: dict[str, np.ndarray]) -> float:
    start = time.perf_counter_ns()
    session.run(feeds)
    return (time.perf_counter_ns() - start) / 1e6


def _run_rounds(round_fn: Callable[[int], list[float]], config: TimingBudget, budget_s: float | None,
                notify: ProgressFn, stage: str) -> np.ndarray:
    """Call ``round_fn(r)`` (one timed run per model) for the configured count or budget -> (rounds, models).

    The garbage collector is paused while timing so a collection does not land inside one model's run.
    """
    total = None if budget_s is not None else config.iterations
    rounds: list[list[float]] = []
    gc_enabled = gc.isenabled()
    gc.disable()
    start = time.perf_counter()
    try:
        while True:
            rounds.append(round_fn(len(rounds)))
            done = len(rounds)
            notify(stage, done, total)
            if budget_s is None:
                if done >= config.iterations:
                    break
            elif done >= config.min_iterations and time.perf_counter() - start >= budget_s:
                break
    finally:
        if gc_enabled:
            gc.enable()
    return np.asarray(rounds, np.float64)


def time_sequential(session: Session, feeds: dict[str, np.ndarray], config: TimingBudget, n_models: int,
                    notify: ProgressFn, name: str) -> np.ndarray:
    """Warm up and time one open session alone; a time budget is shared evenly by the models."""
    for _ in range(config.warmup):
        session.run(feeds)
    budget = None if config.time_budget_s is None else config.time_budget_s / n_models
    return _run_rounds(lambda r: [_timed_run(session, feeds)], config, budget, notify, f"timing {name}")


def time_interleaved(open_fns: list[Callable[[], Session]], feeds: dict[str, np.ndarray],
                     config: TimingBudget, notify: ProgressFn, stage: str = "timing (interleaved)",
                     ) -> np.ndarray:
    """Open every model, warm each up, then time rounds that run each model once in rotating order."""
    sessions: list[Session] = []
    try:
        for open_fn in open_fns:
            sessions.append(open_fn())
        for _ in range(config.warmup):
            for session in sessions:
                session.run(feeds)
        n = len(sessions)

        def one_round(r: int) -> list[float]:
            times = [0.0] * n
            for k in range(n):
                i = (r + k) % n
                times[i] = _timed_run(sessions[i], feeds)
            return times

        return _run_rounds(one_round, config, config.time_budget_s, notify, stage)
    finally:
        for session in sessions:
            session.close()
        sessions.clear()
        gc.collect()
