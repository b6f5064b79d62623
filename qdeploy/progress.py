"""Announcing long work: one estimate line from a timing of the first unit, said before the rest runs.

Why: a DQC refinement, a sensitivity sweep or a transformer export can run for many minutes without a
word. Each of them times its first unit of work (an iteration, a tensor's configuration, a parity
sample) and says, once, what the whole will take, e.g.
``DQC: 200 iterations, ~1.8 s each -> about 6 min (first iteration measured)``.

The lines are log records of the ``qdeploy.progress`` logger at INFO level (:func:`announce`): a library
user sees them with ``logging.basicConfig(level=logging.INFO)``, the CLI prints them as plain lines on
stderr (so they show in CI logs and ``nohup`` files, not only on a terminal). :func:`estimate_line` is
the one formatting every estimate goes through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["ANNOUNCE_LOGGER", "FirstUnits", "announce", "estimate_line", "format_duration", "format_elapsed",
           "staged"]

ANNOUNCE_LOGGER = "qdeploy.progress"
"""Name of the logger that carries the announcements (the CLI prints its INFO records as plain lines)."""

_LOG = logging.getLogger(ANNOUNCE_LOGGER)


def announce(message: str) -> None:
    """Say what long work is about to do (an INFO record of :data:`ANNOUNCE_LOGGER`)."""
    _LOG.info("%s", message)


def format_duration(seconds: float) -> str:
    """``under 1 ms``, ``12 ms``, ``1.8 s``, ``42 s``, ``6 min``, ``1.5 h``: two significant figures at most
    (an estimate is rough; more digits would claim a precision it lacks)."""
    s = max(float(seconds), 0.0)
    if s < 0.001:
        return "under 1 ms"
    if s < 0.1:
        return f"{s * 1e3:.0f} ms"
    if s < 10.0:
        return f"{s:.1f} s"
    if s < 90.0:
        return f"{s:.0f} s"
    if s < 90 * 60.0:
        return f"{s / 60:.2g} min"
    return f"{s / 3600:.2g} h"


def format_elapsed(seconds: float, tenths: bool = False) -> str:
    """A measured time as a clock reads it: ``41 s``, ``6 min 53 s``, ``2 h 05 min`` (``tenths``: ``1.1 s``
    under a minute). For times already spent (progress lines, "done in"), where :func:`format_duration`'s
    rounding to two figures would hide the seconds a user watched go by."""
    s = max(float(seconds), 0.0)
    if s < (59.95 if tenths else 59.5):  # (what would round up to 60 s is said as 1 min 0 s)
        return f"{s:.1f} s" if tenths else f"{s:.0f} s"
    minutes, secs = divmod(round(s), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def staged(progress: Callable[[int, int], None] | None, label: str, unit: str) -> Callable[[int, int], None] | None:
    """``progress`` for a named stage of the work: ``progress.stage(label, unit)`` when the callback draws
    stages (the CLI's reporter does: one display, each stage under its own label), else ``progress`` as is.

    Why: a command hands one ``(done, total)`` callback down; without this, a sensitivity sweep inside
    ``calibrate`` was drawn as ``calibrating 47/512``, under the label of the step that made the callback.
    """
    stage = getattr(progress, "stage", None)
    return stage(label, unit) if callable(stage) else progress


def estimate_line(what: str, count: int, units: str, seconds_each: float, basis: str) -> str:
    """``WHAT: COUNT UNITS, ~X each -> about TOTAL (BASIS)``, e.g. ``DQC: 200 iterations, ~1.8 s each ->
    about 6 min (first iteration measured)``; ``units`` is already plural, ``basis`` says what was timed."""
    return (f"{what}: {count} {units}, ~{format_duration(seconds_each)} each -> about "
            f"{format_duration(count * seconds_each)} ({basis})")


class FirstUnits:
    """Time the first units of a loop of ``count`` and announce the estimate once, early.

    Call :meth:`done` after each unit with how many are done. The estimate is announced after the first
    unit that took ``settle_s`` or more in total, or after ``settle_units`` units (the first unit often
    pays one-time costs: a few fast units average them out; one slow unit is worth announcing at once),
    and never when nothing is left to wait for.
    """

    def __init__(self, what: str, count: int, unit: str, settle_units: int = 2, settle_s: float = 2.0,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.what, self.count, self.unit = what, count, unit
        self.settle_units, self.settle_s, self.clock = settle_units, settle_s, clock
        self.start = clock()
        self.announced = False

    def done(self, units: int) -> None:
        """``units`` of ``count`` are finished; announce the estimate if it is due."""
        if self.announced or units <= 0 or units >= self.count:
            return
        elapsed = self.clock() - self.start
        if units < self.settle_units and elapsed < self.settle_s:
            return
        self.announced = True
        basis = f"first {self.unit} measured" if units == 1 else f"first {units} {self.unit}s measured"
        announce(estimate_line(self.what, self.count, f"{self.unit}s", elapsed / units, basis))
