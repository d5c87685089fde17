"""Scheduler specs, the streaming coordinator loop, and the scheduler errors a user can meet."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError
from workflows.runner.coordinator import run_units
from workflows.runner.scheduler import SchedulerError, open_executor, validate
from workflows.runner.stage_api import Unit


@pytest.mark.parametrize("spec", ["threads", "processes", "synchronous", "local:2",
                                  "local-cuda", "tcp://127.0.0.1:8786"])
def test_valid_specs(spec):
    assert validate(spec) == spec


@pytest.mark.parametrize("spec", ["local", "local:0", "gpu", "", "cuda"])
def test_invalid_specs(spec):
    with pytest.raises(ConfigError, match="local:N"):
        validate(spec)


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


def test_local_cuda_without_dask_cuda_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # import fails as if not installed
    with pytest.raises(SchedulerError, match="uv sync --extra cuda"), \
            open_executor("local-cuda", tmp_path):
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_unreachable_scheduler_fails_fast_naming_the_address(tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    t0 = time.monotonic()
    with pytest.raises(SchedulerError, match=address.replace(".", r"\.")), \
            open_executor(address, tmp_path):
        pass
    assert time.monotonic() - t0 < 20


def test_unreachable_scheduler_through_the_cli(tmp_path):
    from tests.workflow_helpers import cli, make_images, write_config

    make_images(tmp_path / "images", n=1, broken=False)
    config = write_config(tmp_path / "c.toml", tmp_path / "images", tmp_path / "runs")
    address = f"tcp://127.0.0.1:{_free_port()}"
    result = cli("run", "--config", str(config), "--scheduler", address)
    assert result.exit_code == 2, result.output
    assert address in result.output and "Traceback" not in result.output
    assert not (Path(tmp_path) / "runs" / "c" / "state").exists()


def test_upstream_is_the_transitive_closure_of_after() -> None:
    from workflows.stages import REGISTRY

    for stage in REGISTRY:
        expected = set(stage.after)
        for up in stage.after:
            expected |= REGISTRY.upstream(up)
        assert REGISTRY.upstream(stage.name) == expected
        assert stage.name not in REGISTRY.upstream(stage.name)
    assert REGISTRY.upstream("ingest") == set()
    assert REGISTRY.upstream("render") >= {"ingest", "predict", "attribute", "aggregate",
                                           "normalize"}
