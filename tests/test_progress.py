"""The estimate lines of long work (qdeploy.progress): their wording, when FirstUnits says them, elapsed times
as a clock reads them, and stages drawn under their own label."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from qdeploy.progress import ANNOUNCE_LOGGER, FirstUnits, estimate_line, format_duration, format_elapsed, staged


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


@pytest.mark.parametrize(("seconds", "text", "tenths"), [(0.4, "0 s", False), (41.2, "41 s", False),
                                                         (412.7, "6 min 53 s", False), (59.7, "1 min 0 s", False),
                                                         (7500, "2 h 05 min", False), (1.14, "1.1 s", True),
                                                         (412.7, "6 min 53 s", True)])
def test_elapsed_times_read_like_a_clock_not_raw_seconds(seconds: float, text: str, tenths: bool) -> None:
    assert format_elapsed(seconds, tenths=tenths) == text


class _Stages:
    """A callback with stages, drawn as (label, unit, done, total) (the CLI's reporter has this shape)."""

    def __init__(self) -> None:
        self.drawn: list[tuple[str, str, int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.drawn.append(("calibrating", "samples", done, total))

    def stage(self, label: str, unit: str) -> Callable[[int, int], None]:
        return lambda done, total: self.drawn.append((label, unit, done, total))


def test_a_staged_step_is_drawn_under_its_own_label_and_a_plain_callback_is_kept() -> None:
    reporter = _Stages()
    staged(reporter, "sensitivity sweep", "runs")(47, 512)
    assert reporter.drawn == [("sensitivity sweep", "runs", 47, 512)]
    calls: list[tuple[int, int]] = []

    def plain(done: int, total: int) -> None:
        calls.append((done, total))

    assert staged(plain, "sensitivity sweep", "runs") is plain and staged(None, "x", "y") is None
