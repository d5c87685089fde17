"""Progress for people: bars on a terminal, plain timestamped lines everywhere else.

Rich draws nothing until the end when its console is not a terminal (``make run > log``,
CI, ``nohup``), so a run there would look dead for as long as it ran. :func:`make_reporter`
picks :class:`RichReporter` on a terminal and :class:`LineReporter` otherwise; both take the
:class:`workflows.runner.run_summary.Reporter` calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

#: Seconds between two progress lines of one stage when output is not a terminal.
LINE_EVERY: float = 30.0


def duration(seconds: float) -> str:
    """``75.2`` -> ``"1 min 15 s"``; ``5.2`` -> ``"5.2 s"``; ``7300`` -> ``"2 h 1 min"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def training_estimate(first_batch_seconds: float, done: int, total: int) -> str:
    """The announcement once the first batch is timed: "about N min on this machine"."""
    remaining = first_batch_seconds * max(total - done, 0) / max(done, 1)
    minutes = max(1, round((first_batch_seconds + remaining) / 60))
    return (f"training the evidence model (first use; about {minutes} min on this machine, "
            "then cached)")


@dataclass
class _Clock:
    """One stage's (or the training's) counts and times, for lines and estimates."""

    total: int
    done: int
    started: float
    resumed: int = 0
    last_line: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    #: What is counted: ``images`` (img/s), or ``shards`` (xai verify).
    unit: str = "images"

    @property
    def per_s(self) -> str:
        return "img/s" if self.unit == "images" else f"{self.unit}/s"

    def rate(self, now: float) -> float | None:
        new = self.done - self.resumed
        return new / (now - self.started) if new > 0 and now > self.started else None

    def line(self, now: float) -> str:
        rate = self.rate(now)
        eta = duration((self.total - self.done) / rate) if rate else "-"
        speed = f"{rate:.2f} {self.per_s}" if rate else f"- {self.per_s}"
        return f"{self.done}/{self.total} {self.unit}, {speed}, ETA {eta}"


class LineReporter:
    """Plain lines: a stage's start, a line at most every :data:`LINE_EVERY` seconds with
    images done, img/s and ETA, and its end. Made for logs, so every line stands alone."""

    def __init__(self, console: Console, every: float = LINE_EVERY,
                 clock: Callable[[], float] = time.monotonic, unit: str = "images") -> None:
        self.console, self.every, self.clock, self.unit = console, every, clock, unit
        self.stages: dict[str, _Clock] = {}

    def _print(self, text: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.console.print(f"{stamp} {text}", markup=False, highlight=False, soft_wrap=True)

    def stage_start(self, stage: str, total_images: int, done_images: int,
                    before: str = "") -> None:
        now = self.clock()
        self.stages[stage] = _Clock(total_images, done_images, now, resumed=done_images,
                                    last_line=now, unit=self.unit)
        if done_images >= total_images:  # nothing to do: the run's end says so once
            self.stages[stage].extra["finished"] = True
            return
        if before:  # per method: the stage's count is an average that matches no method
            self._print(f"{stage}: {before}")
            return
        done = f" ({done_images} done before)" if done_images else ""
        self._print(f"{stage}: {total_images - done_images} of {total_images} {self.unit} "
                    f"to do{done}")

    def advance(self, stage: str, images: int) -> None:
        st = self.stages[stage]
        st.done += images
        now = self.clock()
        if st.done >= st.total:
            self._finished(stage, now)
        elif now - st.last_line >= self.every:
            st.last_line = now
            self._print(f"{stage}: {st.line(now)}")

    def _finished(self, stage: str, now: float) -> None:
        st = self.stages[stage]
        if st.extra.get("finished"):
            return
        st.extra["finished"] = True
        rate = st.rate(now)
        speed = f", {rate:.2f} {st.per_s}" if rate else ""
        self._print(f"{stage}: finished, {st.done}/{st.total} {st.unit} after "
                    f"{duration(now - st.started)}{speed}")

    def stage_end(self, stage: str) -> None:
        st = self.stages[stage]
        if st.done < st.total and not st.extra.get("finished"):
            st.extra["finished"] = True
            self._print(f"{stage}: ended with {st.done}/{st.total} {st.unit} done")
        else:
            self._finished(stage, self.clock())

    def warn(self, message: str) -> None:
        self._print(f"warning: {message}")

    def info(self, message: str) -> None:
        self._print(message)

    def training(self, what: str, done: int, total: int) -> None:
        """The evidence model's first-use training: announced, estimated, then lines."""
        now = self.clock()
        st = self.stages.get(what)
        if st is None:
            st = self.stages[what] = _Clock(total, done, now, last_line=now)
            self._print("training the evidence model (first use; timing the first batch "
                        "for an estimate)")
            if done == 0:
                return
        previous, st.done, st.total = st.done, done, total
        if done >= total > previous:
            self._print(f"training: finished, {done}/{total} images in "
                        f"{duration(now - st.started)}")
        elif not st.extra.get("estimated") and done > 0:
            st.extra["estimated"] = True
            self._print(training_estimate(now - st.started, done, total))
        elif now - st.last_line >= self.every:
            st.last_line = now
            self._print(f"training: {st.line(now)}")


class SpeedColumn(ProgressColumn):
    """Images (or ``unit``) per second."""

    def __init__(self, per_s: str = "img/s") -> None:
        super().__init__()
        self.per_s = per_s

    def render(self, task: Task) -> Text:
        # Over the whole stage, counting only images done in this run (not resumed ones).
        done = task.completed - task.fields.get("resumed", 0)
        elapsed = task.finished_time if task.finished else task.elapsed
        if not elapsed or done <= 0:
            return Text(f"      - {self.per_s}", style="cyan")
        return Text(f"{done / elapsed:6.1f} {self.per_s}", style="cyan")


class RichReporter:
    """Draws one progress bar per stage."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}
        self.training_started: float | None = None

    def stage_start(self, stage: str, total_images: int, done_images: int,
                    before: str = "") -> None:
        self.tasks[stage] = self.progress.add_task(stage, total=total_images,
                                                   completed=done_images, resumed=done_images)
        if before and done_images < total_images:
            self.progress.console.print(f"{stage}: {before}", markup=False, highlight=False)

    def advance(self, stage: str, images: int) -> None:
        self.progress.advance(self.tasks[stage], images)

    def stage_end(self, stage: str) -> None:
        self.progress.stop_task(self.tasks[stage])

    def warn(self, message: str) -> None:
        # soft_wrap=False: the console soft-wraps (long paths stay copyable), which would cut
        # a panel to one line; a warning must wrap inside its box at any width.
        self.progress.console.print(Panel(escape(message), title="warning",
                                          style="bold red"), soft_wrap=False)

    def info(self, message: str) -> None:
        self.progress.console.print(f"[dim]{escape(message)}[/]")

    def training(self, what: str, done: int, total: int) -> None:
        """The evidence model's training (first use only): announced, then its own bar."""
        now = time.monotonic()
        if what not in self.tasks:
            self.training_started = now
            self.tasks[what] = self.progress.add_task(what[:10], total=total)
            self.info("training the evidence model (first use; timing the first batch for "
                      "an estimate)")
        elif self.training_started is not None and done > 0:
            self.info(training_estimate(now - self.training_started, done, total))
            self.training_started = None
        self.progress.update(self.tasks[what], completed=done, total=total)


STAGE_COLUMNS: tuple[Any, ...] = (
    TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), SpeedColumn(),
    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())


@contextmanager
def make_reporter(console: Console, columns: tuple[Any, ...] = STAGE_COLUMNS,
                  unit: str = "images") -> Iterator[RichReporter | LineReporter]:
    """Bars when ``console`` is a terminal, plain lines when it is not; ``unit`` is what
    they count (``images``, or ``shards``)."""
    if not console.is_terminal:
        yield LineReporter(console, unit=unit)
        return
    if unit != "images":
        columns = tuple(SpeedColumn(f"{unit}/s") if isinstance(c, SpeedColumn) else c
                        for c in columns)
    with Progress(*columns, console=console) as progress:
        yield RichReporter(progress)
