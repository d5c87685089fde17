"""Progress for people: plain lines without a terminal, bars on one."""

from __future__ import annotations

import io

from rich.console import Console

from tests.workflow_helpers import cli, make_images, write_config
from workflows.runner.progress import (
    LineReporter,
    RichReporter,
    duration,
    make_reporter,
    training_estimate,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(console: Console) -> list[str]:
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return [line.split(" ", 1)[1] for line in text.splitlines()]  # the timestamp dropped


def _reporter() -> tuple[LineReporter, Clock, Console]:
    console = Console(file=io.StringIO(), width=200)
    clock = Clock()
    return LineReporter(console, every=30.0, clock=clock), clock, console


def test_lines_say_start_progress_at_most_every_30_s_and_end():
    rep, clock, console = _reporter()
    rep.stage_start("attribute", 100, 20)
    for _ in range(8):  # 8 images, one every 10 s: a line at 30 s and at 60 s, not more
        clock.now += 10
        rep.advance("attribute", 1)
    lines = _lines(console)
    assert lines[0] == "attribute: 80 of 100 images to do (20 done before)"
    progress = [line for line in lines[1:]]
    assert progress == ["attribute: 23/100 images, 0.10 img/s, ETA 12 min 50 s",
                        "attribute: 26/100 images, 0.10 img/s, ETA 12 min 20 s"]
    clock.now += 10
    rep.advance("attribute", 72)
    rep.stage_end("attribute")
    assert _lines(console)[-1].startswith("attribute: finished, 100/100 images after 1 min 30 s")
    assert sum("finished" in line for line in _lines(console)) == 1


def test_a_stage_with_nothing_to_do_prints_nothing():
    rep, _clock, console = _reporter()
    rep.stage_start("ingest", 4, 4)
    rep.stage_end("ingest")
    assert _lines(console) == []


def test_an_interrupted_stage_says_how_far_it_got():
    rep, clock, console = _reporter()
    rep.stage_start("attribute", 10, 0)
    clock.now += 1
    rep.advance("attribute", 3)
    rep.stage_end("attribute")
    assert _lines(console)[-1] == "attribute: ended with 3/10 images done"


def test_training_is_announced_then_estimated_from_the_first_batch():
    rep, clock, console = _reporter()
    rep.training("training", 0, 3000)
    clock.now += 2.0  # the first batch of 30 images: 100 batches, about 200 s
    rep.training("training", 30, 3000)
    clock.now += 200
    rep.training("training", 3000, 3000)
    lines = _lines(console)
    assert lines[0].startswith("training the evidence model (first use; timing")
    assert lines[1] == ("training the evidence model (first use; about 3 min on this "
                        "machine, then cached)")
    assert lines[2].startswith("training: finished, 3000/3000 images in 3 min 22 s")


def test_estimate_and_duration_words():
    assert training_estimate(6.0, 1, 100) == ("training the evidence model (first use; about "
                                              "10 min on this machine, then cached)")
    assert duration(5.04) == "5.0 s" and duration(75) == "1 min 15 s"
    assert duration(7300) == "2 h 1 min"


def test_a_terminal_gets_bars_and_a_pipe_gets_lines():
    with make_reporter(Console(file=io.StringIO(), force_terminal=True)) as rep:
        assert isinstance(rep, RichReporter)
    with make_reporter(Console(file=io.StringIO(), force_terminal=False)) as rep:
        assert isinstance(rep, LineReporter)


def test_a_run_without_a_terminal_prints_each_stage(tmp_path):
    make_images(tmp_path / "images", n=3, broken=False)
    config = write_config(tmp_path / "tiny.toml", tmp_path / "images", tmp_path / "runs",
                          methods=["gradient"])
    result = cli("run", "--config", str(config), "--scheduler", "synchronous")
    assert result.exit_code == 0, result.output
    for stage in ("ingest", "predict", "attribute", "aggregate", "normalize", "render"):
        assert f"{stage}: 3 of 3 images to do" in result.output, stage
        assert f"{stage}: finished, 3/3 images after" in result.output, stage


def test_a_training_of_one_batch_still_says_it_finished():
    rep, clock, console = _reporter()
    rep.training("training", 0, 32)
    clock.now += 3
    rep.training("training", 32, 32)
    assert _lines(console)[-1] == "training: finished, 32/32 images in 3.0 s"


def test_a_resumed_per_method_stage_says_each_methods_count_not_their_average():
    """24, 16 and 16 of 40 done: the stage's one count (18) would match no method."""
    from workflows.runner.run_summary import Recorder
    from workflows.runner.stage_api import Unit

    def units(method: str, stops: range) -> list[Unit]:
        return [Unit("attribute", method, i, s - 8, s) for i, s in enumerate(stops)]

    planned = [*units("gradient", range(8, 41, 8)), *units("smoothgrad", range(8, 41, 8))]
    pending = [u for u in planned if u.start >= (24 if u.method == "gradient" else 16)]
    assert Recorder.done_per_method(planned, pending, 40) == \
        "gradient 24, smoothgrad 16 of 40 images done before"
    assert Recorder.done_per_method(planned, planned, 40) == ""
    rep, _, console = _reporter()
    rep.stage_start("attribute", 40, 20, before="gradient 24, smoothgrad 16 of 40 images "
                    "done before")
    assert _lines(console) == ["attribute: gradient 24, smoothgrad 16 of 40 images done before"]
