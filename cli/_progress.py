"""Progress for long commands: a rich bar on a terminal, periodic plain lines everywhere else.

Why both: a rich bar on a non-terminal (CI logs, ``nohup``, a pipe) draws nothing, so a 40-minute
calibration left no trace in its log. Off a terminal this prints one line per ``PLAIN_STEP`` of the
work or per ``PLAIN_INTERVAL_S`` seconds, whichever comes first, e.g.
``calibrating: 32/64 samples, 12 s elapsed, ~12 s left`` (minutes as ``6 min 53 s``).

One command may run several stages (calibration, then DQC iterations): :meth:`Reporter.stage` gives
each its own label and unit on the same display, so only one live bar is ever drawn. The library's
estimate lines (:mod:`qdeploy.progress`) are printed by :func:`install_announcements` as plain lines on
stderr too.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

import click

__all__ = ["PLAIN_INTERVAL_S", "PLAIN_STEP", "PlainProgress", "ProgressFn", "Reporter", "install_announcements",
           "progress_reporter"]

ProgressFn = Callable[[int, "int | None"], None]

PLAIN_STEP = 0.10
"""Share of the total between two plain lines (10 lines per run at most from this rule)."""

PLAIN_INTERVAL_S = 10.0
"""Seconds after which a plain line is printed even without a new ``PLAIN_STEP`` (slow steps, unknown totals)."""


class PlainProgress:
    """Callable ``(done, total)`` that echoes a line to ``stream`` at most every step or interval."""

    def __init__(self, label: str, unit: str, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.unit, self.stream, self.clock = label, unit, stream, clock
        self.start = clock()
        self.last_time = self.start
        self.last_step = 0
        self.last_done = -1
        self.last_total: int | None = None

    def relabel(self, label: str, unit: str) -> None:
        """Start a new stage with its own label, unit, clock and steps (no-op when nothing changes)."""
        if (label, unit) != (self.label, self.unit):
            self.label, self.unit = label, unit
            self.start = self.last_time = self.clock()
            self.last_total, self.last_step, self.last_done = None, 0, -1

    def __call__(self, done: int, total: int | None) -> None:
        """Report ``done`` of ``total`` (None: unknown) if a step or the interval has passed, or at the end."""
        now = self.clock()
        if total != self.last_total:  # a new stage with its own total starts counting steps afresh
            self.last_total, self.last_step, self.last_done = total, 0, -1
        step = int(done / total / PLAIN_STEP) if total else 0
        finished = bool(total) and done >= total
        due = step > self.last_step or now - self.last_time >= PLAIN_INTERVAL_S or finished
        if not due or done == self.last_done:
            return
        self.last_time, self.last_step, self.last_done = now, step, done
        click.echo(self.line(done, total, now - self.start), file=self.stream, err=self.stream is None)

    def line(self, done: int, total: int | None, elapsed: float) -> str:
        """``label: done/total unit, 6 min 53 s elapsed, ~41 s left`` (no estimate before any work is done)."""
        from qdeploy.progress import format_elapsed

        text = f"{self.label}: {done}/{total} {self.unit}" if total else f"{self.label}: {done} {self.unit}"
        text += f", {format_elapsed(elapsed)} elapsed"
        if total and 0 < done < total:
            text += f", ~{format_elapsed(elapsed * (total - done) / done)} left"
        return text


class Reporter:
    """The ``(done, total)`` callback :func:`progress_reporter` yields, plus :meth:`stage` for other stages.

    ``show(label, unit, done, total)`` draws on the one display (rich bar or :class:`PlainProgress`).
    """

    def __init__(self, label: str, unit: str, show: Callable[[str, str, int, int | None], None]) -> None:
        self.label, self.unit, self.show = label, unit, show

    def __call__(self, done: int, total: int | None) -> None:
        self.show(self.label, self.unit, done, total)

    def stage(self, label: str, unit: str) -> ProgressFn:
        """A callback for another stage (e.g. ``"DQC"``, ``"iterations"``) drawn on the same display."""
        return lambda done, total: self.show(label, unit, done, total)


@contextmanager
def progress_reporter(label: str, quiet: bool = False, unit: str = "samples") -> Iterator[Reporter]:
    """Yield a :class:`Reporter`: rich bar on a terminal stderr, :class:`PlainProgress` lines otherwise.

    ``quiet`` (e.g. ``--json``) reports nothing. Everything goes to stderr, so stdout stays clean.
    """
    if quiet:
        yield Reporter(label, unit, lambda *_: None)
        return
    from qdeploy_cli._common import console

    con = console(stderr=True)
    if not con.is_terminal:
        plain = PlainProgress(label, unit)

        def show_plain(name: str, units: str, done: int, total: int | None) -> None:
            plain.relabel(name, units)
            plain(done, total)

        yield Reporter(label, unit, show_plain)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=con, transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield Reporter(label, unit, lambda name, _, done, total: bar.update(task, description=name, completed=done,
                                                                             total=total))


class _EchoHandler(logging.Handler):
    """Prints a record's message as one line of the *current* ``sys.stderr``: a test runner's captured
    stream, or while a rich bar is live its redirection, which prints the line above the bar.

    Why not ``click.echo``: it writes to the binary buffer under the stream it is given, which for rich's
    redirection is the terminal itself, so the line was glued onto the end of the bar's line.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr
            stream.write(record.getMessage() + "\n")
            stream.flush()
        except Exception:  # a logging handler must never raise into the work it reports on
            self.handleError(record)


def install_announcements(quiet: bool = False) -> None:
    """Print :mod:`qdeploy.progress` announcements (estimates of long work) as plain stderr lines.

    Idempotent (one handler however often a process invokes the CLI); ``quiet`` (``--json``) drops them,
    as the progress lines are dropped. The records do not propagate, so ``-v`` does not print them twice.
    """
    from qdeploy.progress import ANNOUNCE_LOGGER

    logger = logging.getLogger(ANNOUNCE_LOGGER)
    if not any(isinstance(h, _EchoHandler) for h in logger.handlers):
        logger.addHandler(_EchoHandler())
    logger.propagate = False
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
