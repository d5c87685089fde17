"""The streaming coordinator loop: a shard moves to its next stage as soon as it is recorded,
each unit waits for what it reads, and a failure stops new work."""

from __future__ import annotations

from typing import Any

import pytest

from workflows.runner.coordinator import run_units
from workflows.runner.stage_api import Unit


class FakeExecutor:
    """Runs ``task()`` when waited for, in submission order; remembers the order."""

    name = "fake"

    def __init__(self) -> None:
        self.queue: list[tuple[int, Any]] = []
        self.order: list[Unit] = []
        self.cancelled = False

    def submit(self, task: Any, priority: int) -> Any:
        self.queue.append((priority, task))
        return task

    def wait(self) -> list[tuple[Any, Any, BaseException | None]]:
        self.queue.sort(key=lambda item: item[0])
        _, task = self.queue.pop(0)
        self.order.append(task.unit)
        try:
            return [(task, task(), None)]
        except Exception as exc:
            return [(task, None, exc)]

    def cancel(self) -> None:
        self.cancelled = True


class FakeTask:
    def __init__(self, unit: Unit, fail: bool = False) -> None:
        self.unit, self.fail = unit, fail

    def __call__(self) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError(f"boom in {self.unit.key}")
        return {"ok": self.unit.key}


def _chain(shards: int) -> tuple[list[Unit], Any]:
    """Two stages; b's shard i reads a's shard i (both registered names, for priorities)."""
    a = [Unit("ingest", None, i, i, i + 1) for i in range(shards)]
    b = [Unit("predict", None, i, i, i + 1) for i in range(shards)]
    return a + b, lambda u: [a[u.index]] if u.stage == "predict" else []


def test_units_stream_shard_by_shard_and_each_is_recorded_once():
    units, deps = _chain(3)
    ex = FakeExecutor()
    recorded: list[Unit] = []
    run_units(units, deps, FakeTask, ex, lambda u, r: recorded.append(u))
    # shard 0's second stage runs before shard 1's first: streaming, not stage by stage
    assert [(u.stage, u.index) for u in ex.order] == [
        ("ingest", 0), ("predict", 0), ("ingest", 1), ("predict", 1), ("ingest", 2),
        ("predict", 2)]
    assert sorted(recorded, key=lambda u: u.key) == sorted(units, key=lambda u: u.key)
    assert not ex.cancelled


def test_a_unit_waits_for_every_unit_it_reads():
    units, deps = _chain(2)
    seen: list[str] = []
    run_units(units, deps, FakeTask, FakeExecutor(), lambda u, r: seen.append(u.key))
    for i in range(2):
        assert seen.index(f"ingest/{i:06d}") < seen.index(f"predict/{i:06d}")


def test_done_dependencies_do_not_block():
    units, deps = _chain(2)
    pending = [u for u in units if u.stage == "predict"]
    seen: list[str] = []
    run_units(pending, deps, FakeTask, FakeExecutor(), lambda u, r: seen.append(u.key))
    assert seen == ["predict/000000", "predict/000001"]


def test_a_failure_stops_new_work_and_names_the_error():
    units, deps = _chain(3)
    ex = FakeExecutor()
    recorded: list[str] = []
    with pytest.raises(RuntimeError, match="boom in ingest/000001"):
        run_units(units, deps, lambda u: FakeTask(u, fail=u.key == "ingest/000001"), ex,
                  lambda u, r: recorded.append(u.key))
    assert "predict/000001" not in recorded and ex.cancelled
