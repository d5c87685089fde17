"""Every stage on Dask workers: a LocalCluster of device slots, a killed worker, a killed
coordinator, and the errors for workers that cannot do the job.

The workers declare ``GPU=1`` and use ``device = "cpu"``, so this runs on any machine.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workflow_helpers import (
    assert_same,
    cli,
    make_images,
    records,
    run_ok,
    run_subprocess,
    store_arrays,
    write_config,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist") / "images"
    make_images(root, n=6)
    return root


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory):
    """A single-process run, one torch thread (as each worker of a 2-core local:2 gets)."""
    import torch

    tmp = tmp_path_factory.mktemp("ref")
    config = write_config(tmp / "tiny.toml", images, tmp / "runs", shard_size=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_ok(config)
    finally:
        torch.set_num_threads(threads)
    return store_arrays(tmp / "runs" / "tiny" / "store.zarr")


def _workers(run_dir: Path, stage: str) -> set[str]:
    return {str(r["worker"]["address"]) for r in records(run_dir, stage).values()}  # type: ignore[index]


def test_local_cluster_spreads_attribute_shards_and_equals_one_process(images, reference,
                                                                      tmp_path):
    config = write_config(tmp_path / "tiny.toml", images, tmp_path / "runs", shard_size=1)
    result = run_ok(config, scheduler="local:2")
    run_dir = tmp_path / "runs" / "tiny"
    workers = _workers(run_dir, "attribute")
    assert len(workers) >= 2 and all(w.startswith("tcp://") for w in workers), workers
    assert_same(store_arrays(run_dir / "store.zarr"), reference)
    summary = json.loads((run_dir / "summary.json").read_text())
    att = next(s for s in summary["stages"] if s["stage"] == "attribute")
    assert len(att["workers"]) >= 2 and summary["scheduler"] == "local:2"
    # the summary table: every attribute unit (7 shards x 5 methods) ran, on 2 workers
    assert re.search(r"attribute\s*│\s*35/35\s*│\s*7\s*│.*│\s*2\s*│",
                     result.output), result.output  # type: ignore[attr-defined]


def test_a_worker_killed_mid_attribute_is_retried_elsewhere(images, reference, tmp_path,
                                                            monkeypatch):
    marker = tmp_path / "killed-once"
    monkeypatch.setenv("XAI_FAULT", "attribute:mid-write:2")
    monkeypatch.setenv("XAI_FAULT_ONCE", str(marker))
    config = write_config(tmp_path / "tiny.toml", images, tmp_path / "runs", shard_size=1)
    run_ok(config, scheduler="local:2")
    assert marker.exists(), "no worker was killed: the test proved nothing"
    run_dir = tmp_path / "runs" / "tiny"
    assert len(records(run_dir, "attribute")) == 7 * 5  # 6 images and a broken file
    assert_same(store_arrays(run_dir / "store.zarr"), reference)
    monkeypatch.delenv("XAI_FAULT")
    assert cli("verify", "--config", str(config)).exit_code == 0


def test_a_killed_coordinator_resumes(images, reference, tmp_path):
    config = write_config(tmp_path / "tiny.toml", images, tmp_path / "runs", shard_size=1)
    proc = run_subprocess("run", "--config", str(config), "--scheduler", "local:2",
                          env={"XAI_FAULT": "attribute:after-record:3"})
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == -signal.SIGKILL, output
    run_dir = tmp_path / "runs" / "tiny"
    done = len(records(run_dir, "attribute"))
    assert 3 <= done < 7 * 5
    run_ok(config, scheduler="local:2")
    assert_same(store_arrays(run_dir / "store.zarr"), reference)


def test_scheduler_without_gpu_workers_names_the_resource_flag(images, tmp_path):
    from distributed import LocalCluster

    config = write_config(tmp_path / "tiny.toml", images, tmp_path / "runs")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        result = cli("run", "--config", str(config), "--scheduler", cluster.scheduler_address)
    assert result.exit_code == 2, result.output
    assert '--resources "GPU=1"' in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs" / "tiny" / "store.zarr").exists()


def test_workers_that_cannot_see_the_run_folder_are_found_before_any_work(images, tmp_path,
                                                                         monkeypatch):
    from distributed import LocalCluster

    import workflows.runner.worker

    real = workflows.runner.worker.probe

    def blind(run_dir: str, token: str) -> dict[str, object]:
        return {**real(run_dir, token), "seen": False}

    monkeypatch.setattr(workflows.runner.worker, "probe", blind)
    config = write_config(tmp_path / "tiny.toml", images, tmp_path / "runs")
    # Thread workers in this process, so the patched probe is the one they run.
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                      resources={"GPU": 1}, dashboard_address=None) as cluster:
        result = cli("run", "--config", str(config), "--scheduler", cluster.scheduler_address)
    assert result.exit_code == 2, result.output
    assert str(tmp_path / "runs" / "tiny") in result.output
    assert "cannot" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs" / "tiny" / "store.zarr").exists()


def _dask_worker(address: str, *args: str) -> subprocess.Popen[bytes]:
    """``dask worker ADDRESS ARGS`` as the README's two-machine setup starts it."""
    return subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address,
                             "--no-dashboard", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_dask_workers_as_the_readme_starts_them(images, reference, tmp_path):
    """One ``--resources "GPU=1"`` worker and one plain worker on one scheduler: device
    stages run only on the first; the store equals a single-process run."""
    from distributed import Client, LocalCluster

    config = write_config(tmp_path / "tiny.toml", images, tmp_path / "runs", shard_size=1)
    with LocalCluster(n_workers=0, processes=True, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        procs = [_dask_worker(address, "--nthreads", "2", "--resources", "GPU=1",
                              "--name", "gpu-worker"),
                 _dask_worker(address, "--nthreads", "1", "--name", "cpu-worker")]
        try:
            with Client(address) as client:
                client.wait_for_workers(2, timeout=120)
                info = client.scheduler_info()["workers"]
            gpu = {a for a, w in info.items() if w.get("resources", {}).get("GPU")}
            run_ok(config, scheduler=address)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=60)
    run_dir = tmp_path / "runs" / "tiny"
    assert _workers(run_dir, "attribute") == gpu and _workers(run_dir, "predict") == gpu
    assert_same(store_arrays(run_dir / "store.zarr"), reference, rtol=1e-6)
