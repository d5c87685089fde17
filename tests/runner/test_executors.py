"""``--scheduler`` specs and the scheduler errors a user can meet."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import ConfigError, SchedulerError
from workflows.runner.executors import open_executor, validate


@pytest.mark.parametrize("spec", ["threads", "processes", "synchronous", "local:2",
                                  "local-cuda", "tcp://127.0.0.1:8786"])
def test_valid_specs(spec):
    assert validate(spec) == spec


@pytest.mark.parametrize("spec", ["local", "local:0", "gpu", "", "cuda"])
def test_invalid_specs(spec):
    with pytest.raises(ConfigError, match="local:N"):
        validate(spec)


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
