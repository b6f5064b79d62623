"""The estimate lines of long work (qdeploy.progress): their wording, and when FirstUnits says them."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from qdeploy.progress import ANNOUNCE_LOGGER, FirstUnits, estimate_line, format_duration


class Clock:
    """A fake clock advanced by hand."""

    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def announced() -> Iterator[list[str]]:
    """The announcements made during the test (attached to the logger itself: the CLI stops propagation)."""
    logger = logging.getLogger(ANNOUNCE_LOGGER)
    handler, level = _Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.mark.parametrize(("seconds", "text"), [(0.0004, "under 1 ms"), (0.0123, "12 ms"), (1.84, "1.8 s"),
                                               (42.4, "42 s"), (360, "6 min"), (5400, "1.5 h")])
def test_durations_read_like_a_person_would_say_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_estimate_line_names_the_count_each_unit_and_the_total() -> None:
    assert (estimate_line("DQC", 200, "iterations", 1.8, "first iteration measured")
            == "DQC: 200 iterations, ~1.8 s each -> about 6 min (first iteration measured)")


def test_fast_units_are_averaged_over_two_then_announced_once(announced: list[str]) -> None:
    clock = Clock()
    estimate = FirstUnits("DQC", 10, "iteration", clock=clock)
    for done in range(1, 11):
        clock.now += 0.5
        estimate.done(done)
    assert announced == ["DQC: 10 iterations, ~0.5 s each -> about 5.0 s (first 2 iterations measured)"]


def test_a_slow_first_unit_is_announced_at_once_and_a_finished_loop_never(announced: list[str]) -> None:
    clock = Clock()
    slow = FirstUnits("sweep", 3, "tensor", clock=clock)
    clock.now += 30.0
    slow.done(1)
    assert announced == ["sweep: 3 tensors, ~30 s each -> about 1.5 min (first tensor measured)"]
    done = FirstUnits("sweep", 1, "tensor", settle_units=1, clock=clock)
    clock.now += 30.0
    done.done(1)  # nothing left to wait for
    assert len(announced) == 1
