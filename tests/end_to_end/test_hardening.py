"""Hostile inputs, full disks, tampering, Ctrl-C: nothing lost, every failure explained."""

from __future__ import annotations

import errno
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from pipeline.store.schema import SCHEMA
from tests.hostile import make_hostile
from tests.workflow_helpers import (
    all_records,
    assert_same,
    cli,
    copy_run,
    make_images,
    records,
    run_ok,
    run_subprocess,
    store_arrays,
    write_config,
)
from workflows.runner.completion_records import Records
from workflows.stages import REGISTRY

_arrays, _assert_same, _run = store_arrays, assert_same, run_ok
#: The evaluate crash cases turn the stage on (cheap metrics), so its crash points fire and
#: its arrays must equal the clean run's.
EVALUATE = '\n[evaluate]\nmetrics = ["sparseness", "deletion"]\nsteps = 2\n' \
    'randomisation_images = 2\n'
#: The evaluate stage's arrays under EVALUATE (the comparison covers every schema array).
EVALUATION_ARRAYS = {"metric_sparseness", "random_sparseness", "metric_deletion",
                     "random_deletion", "curve_deletion", "random_curve_deletion",
                     "randomisation"}


def _reference(tmp_path_factory, extra: str):
    """A clean run: its store arrays, sheet bytes and report data, and its folder."""
    tmp = tmp_path_factory.mktemp("reference")
    make_images(tmp / "images")
    config = write_config(tmp / "tiny.toml", tmp / "images", tmp / "runs", extra=extra,
                          report=True)
    _run(config)
    run_dir = tmp / "runs" / "tiny"
    sheets = {p.name: p.read_bytes() for p in (run_dir / "sheets").glob("*.png")}
    arrays = _arrays(run_dir / "store.zarr")
    on_disk = set(zarr.open_group(str(run_dir / "store.zarr"), mode="r").array_keys())
    assert on_disk == set(arrays), "every array the run wrote is one the schema declares"
    assert (set(arrays) >= EVALUATION_ARRAYS) == bool(extra), sorted(arrays)
    assert "strategy" in arrays and "gap" in arrays and "mask" in arrays
    return arrays, sheets, _report_data(run_dir), tmp


def _report_data(run_dir: Path) -> dict[str, bytes]:
    """The report's gallery rows, and which maps and crops it has."""
    report = run_dir / "report"
    out = {p.name: p.read_bytes() for p in (report / "data").glob("shard-*.js")}
    out["files"] = "\n".join(sorted(str(p.relative_to(report)) for p in report.rglob("*.png")
                                    if "img" in p.parts)).encode()
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A clean, uninterrupted run of the tiny dataset (store arrays and sheet bytes)."""
    return _reference(tmp_path_factory, "")


@pytest.fixture(scope="module")
def reference_evaluated(tmp_path_factory):
    """The same with the evaluate stage on (its arrays too)."""
    return _reference(tmp_path_factory, EVALUATE)


@pytest.fixture()
def done(reference, tmp_path):
    """A copy of the reference run, for this test alone: ``(config, run_dir)``."""
    return copy_run(reference[3], tmp_path, report=True), tmp_path / "runs" / "tiny"


@pytest.fixture()
def tiny(tmp_path):
    make_images(tmp_path / "images")
    config = write_config(tmp_path / "tiny.toml", tmp_path / "images", tmp_path / "runs",
                          report=True)
    return config, tmp_path / "runs" / "tiny"


def _assert_equals_reference(run_dir: Path, reference) -> None:
    arrays, sheets, report, _folder = reference
    _assert_same(_arrays(run_dir / "store.zarr"), arrays)
    assert _report_data(run_dir) == report
    assert {p.name: p.read_bytes() for p in (run_dir / "sheets").glob("*.png")} == sheets
    leftovers = [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers, leftovers


# --------------------------------------------------------------------------- hostile


def test_every_hostile_file_is_explained_or_reported(tmp_path):
    expected = make_hostile(tmp_path / "hostile")
    config = write_config(tmp_path / "h.toml", tmp_path / "hostile", tmp_path / "runs",
                          shard_size=4)
    result = _run(config)
    ds = xr.open_zarr(tmp_path / "runs" / "h" / "store.zarr", consolidated=False)
    ids = [str(i) for i in ds["image"].values]
    assert sorted(ids) == sorted(expected), "hidden files must be skipped, all others listed"
    status = dict(zip(ids, (str(s) for s in ds["status"].values), strict=True))
    for rel, outcome in expected.items():
        if outcome == "ok":
            assert status[rel] == "ok", (rel, status[rel])
        else:
            assert outcome in status[rel], (rel, status[rel])
            assert rel in result.output
    ok = ds["status"].values == "ok"
    assert np.isfinite(ds["normalized"].values[:, ok]).all()
    assert np.isnan(ds["normalized"].values[:, ~ok]).all()
    pixels = dict(zip(ids, ds["pixels"].values, strict=True))
    upright = pixels["exif_rotated.jpg"].astype(int)
    assert upright[:, :12, 2].mean() > 200 and upright[:, :12, 0].mean() < 60   # blue left
    assert upright[:, -12:, 0].mean() > 200 and upright[:, -12:, 2].mean() < 60  # red right
    assert pixels["animated.gif"][..., 1].mean() > 150  # the first (green) frame
    assert all(not i.startswith("/") for i in ids), "ids are dataset-relative"


# --------------------------------------------------------------------------- crashes

CRASH_POINTS = [f"{stage.name}:{point}" for stage in REGISTRY for point in stage.crash_points]
# A seeded choice of which occurrence dies (the 1st, 2nd or 3rd time the point is reached;
# `integers` excludes its upper bound), so kills land mid-stage too. The tiny run has 3
# shards and 2 sheets, so sheet stages draw from the first 2: every case must fire.
_rng = np.random.default_rng(2026)
CRASH_CASES = [f"{stage.name}:{point}:{int(_rng.integers(1, 3 if stage.unit == 'sheet' else 4))}"
               for stage in REGISTRY for point in stage.crash_points]
FAST_CASES = {"attribute:mid-write", "render:mid-write", "ingest:after-write",
              "normalize:before-write"}


def _crash_param(case: str) -> object:
    point = case.rsplit(":", 1)[0]
    marks = () if point in FAST_CASES else (pytest.mark.slow,)
    return pytest.param(case, id=case, marks=marks)


@pytest.mark.parametrize("fault", [_crash_param(c) for c in CRASH_CASES])
def test_sigkill_anywhere_then_rerun_equals_a_clean_run(tiny, request, fault):
    config, run_dir = tiny
    reference = request.getfixturevalue("reference")
    if fault.startswith("evaluate:"):  # the stage runs only with [evaluate] metrics
        config.write_text(config.read_text() + EVALUATE)
        reference = request.getfixturevalue("reference_evaluated")
    _kill_rerun_verify(config, run_dir, reference, fault)


def _kill_rerun_verify(config, run_dir, reference, fault: str) -> None:
    """A run killed at ``fault``, then a rerun: it equals ``reference`` and verifies."""
    proc = run_subprocess("run", "--config", str(config), "--scheduler", "synchronous",
                          env={"XAI_FAULT": fault})
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == -signal.SIGKILL, output
    _run(config)
    _assert_equals_reference(run_dir, reference)
    check = cli("verify", "--config", str(config))
    assert check.exit_code == 0, check.output


#: `[store] layout = "shard"`: every method's maps of a shard in one file, rewritten by each
#: method's task. The crash cases of the stages that write those files, again in that layout.
SHARD_LAYOUT = '\n[store]\nlayout = "shard"\n'
SHARD_FILE_CASES = [c for c in CRASH_CASES
                    if c.split(":")[0] in {REGISTRY.writer_of(f.name) for f in SCHEMA if f.packed}]


@pytest.mark.parametrize("fault", [_crash_param(c) for c in SHARD_FILE_CASES])
def test_sigkill_in_a_shard_file_layout_then_rerun_equals_a_clean_run(tiny, reference, fault):
    config, run_dir = tiny
    config.write_text(config.read_text() + SHARD_LAYOUT)
    _kill_rerun_verify(config, run_dir, reference, fault)
    assert zarr.open_group(str(run_dir / "store.zarr"), mode="r")["raw"].shards is not None


def _interrupted_run(tmp_path, slow: str = "1.0"):
    """A run in a subprocess with attribute shards slowed by ``slow`` seconds, once its first
    attribute record is written and the next slowed shard has started (so a signal sent now
    lands in a task that runs ``slow`` seconds, not in one of the fast tasks between them):
    ``(config, run_dir, process)``."""
    make_images(tmp_path / "images")
    config = write_config(tmp_path / "tiny.toml", tmp_path / "images", tmp_path / "runs",
                          params={"integrated_gradients": {"n_steps": 4}}, report=True)
    run_dir = tmp_path / "runs" / "tiny"
    started = tmp_path / "slow.log"
    proc = run_subprocess("run", "--config", str(config), "--scheduler", "synchronous",
                          env={"XAI_SLOW_SHARD_S": slow, "XAI_SLOW_LOG": str(started)})
    deadline = time.monotonic() + 240

    def in_slow_task() -> bool:
        n = len(started.read_text().splitlines()) if started.exists() else 0
        return n >= 2 and bool(records(run_dir, "attribute"))

    while time.monotonic() < deadline and not in_slow_task():
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.02)
    return config, run_dir, proc


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path, reference):
    config, run_dir, proc = _interrupted_run(tmp_path, slow="0.5")
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130, output
    assert "run the same command again" in output
    assert "Traceback" not in output
    _run(config)
    _assert_equals_reference(run_dir, reference)


def _said(proc, text: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if text in proc._output.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


def _records_now(run_dir: Path) -> dict[str, dict[str, object]]:
    return all_records(run_dir)


def test_first_ctrl_c_is_acknowledged_and_finishes_the_running_task(tmp_path, reference):
    config, run_dir, proc = _interrupted_run(tmp_path)
    proc.send_signal(signal.SIGINT)
    assert _said(proc, "Ctrl-C again to stop now", within=2.0), \
        proc._output.read_text(errors="replace")
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130, output
    assert "stopping after the 1 running task" in output
    assert "Stopped." in output and "run the same command again" in output
    assert "Traceback" not in output
    kept = _records_now(run_dir)
    rerun = _run(config)
    after = _records_now(run_dir)
    # What the stopped run recorded is not recomputed: the same records, byte for byte.
    assert {k: after[k] for k in kept} == kept
    assert len(after) > len(kept), rerun.output
    _assert_equals_reference(run_dir, reference)


def test_second_ctrl_c_stops_at_once_and_the_rerun_resumes(tmp_path, reference):
    # A long running task: the second Ctrl-C must reach the run before its graceful stop ends,
    # even when a loaded machine is slow to deliver the first one.
    config, run_dir, proc = _interrupted_run(tmp_path, slow="4.0")
    proc.send_signal(signal.SIGINT)
    assert _said(proc, "Ctrl-C again to stop now", within=2.0)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 130, output
    assert "Interrupted." in output and "Traceback" not in output
    _run(config)
    _assert_equals_reference(run_dir, reference)


# --------------------------------------------------------------------------- full disk


def test_full_disk_is_explained_and_a_rerun_completes(tiny, reference, monkeypatch):
    import zarr.storage._local as local

    config, run_dir = tiny
    real_put = local._put
    calls = {"n": 0}

    def full(path, value, exclusive=False):
        if "raw" in Path(path).parts:
            calls["n"] += 1
            if calls["n"] > 3:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_put(path, value, exclusive)

    monkeypatch.setattr(local, "_put", full)
    result = cli("run", "--config", str(config), "--scheduler", "synchronous")
    assert result.exit_code == 2, result.output
    assert "No space left on the device" in result.output
    assert str(run_dir / "store.zarr") in result.output
    assert "Traceback" not in result.output
    monkeypatch.setattr(local, "_put", real_put)
    _run(config)
    _assert_equals_reference(run_dir, reference)


def test_full_disk_while_rewriting_a_shard_file_keeps_the_other_methods(
        tiny, reference, monkeypatch):
    """`[store] layout = "shard"`: the disk fills while a method's task rewrites the shard
    file that holds the other methods' maps; they stay readable and recorded, the shard of
    this method is not recorded, and a rerun completes it."""
    import zarr.storage._local as local

    config, run_dir = tiny
    config.write_text(config.read_text() + SHARD_LAYOUT)
    real_put = local._put
    calls = {"n": 0}

    def full(path, value, exclusive=False):
        # A rewrite: the shard file exists, with another method's recorded maps in it.
        if "raw" in Path(path).parts and Path(path).name != "zarr.json" and \
                Path(path).exists():
            calls["n"] += 1
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_put(path, value, exclusive)

    monkeypatch.setattr(local, "_put", full)
    result = cli("run", "--config", str(config), "--scheduler", "synchronous")
    assert calls["n"] >= 1 and result.exit_code == 2, result.output
    assert "No space left on the device" in result.output and "Traceback" not in result.output
    check = cli("verify", "--config", str(config))
    assert check.exit_code == 0, check.output  # what is recorded reads as recorded
    monkeypatch.setattr(local, "_put", real_put)
    _run(config)
    _assert_equals_reference(run_dir, reference)


def test_full_disk_while_writing_a_record(tiny, reference, monkeypatch):
    """The disk fills in the middle of a record's line: the message names the log, the torn
    line is no record, and the rerun completes with every record whole."""
    import os

    config, run_dir = tiny
    real_write = os.write
    calls = {"n": 0}

    def full(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.endswith(".jsonl") and "/state/attribute/" in target:
            calls["n"] += 1
            if calls["n"] == 2:  # the second record: half of it reaches the disk
                return real_write(fd, bytes(data)[: len(data) // 2])
            if calls["n"] == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    result = cli("run", "--config", str(config), "--scheduler", "synchronous")
    assert result.exit_code == 2 and "No space left on the device" in result.output
    assert "state/attribute/" in result.output, "the message names the record being written"
    assert len(records(run_dir, "attribute")) == 1, "the torn record is no record"
    monkeypatch.setattr(os, "write", real_write)
    _run(config)
    _assert_equals_reference(run_dir, reference)
    assert cli("verify", "--config", str(config)).exit_code == 0


# --------------------------------------------------------------------------- tampering


def _finished(run_dir: Path) -> dict[str, float]:
    return {k: float(r["finished"]) for k, r in all_records(run_dir).items()}  # type: ignore[arg-type]


def _damage_and_repair(config: Path, run_dir: Path, reference, damage, expect: set[str]) -> None:
    before = _finished(run_dir)
    damage(run_dir)
    check = cli("verify", "--config", str(config))
    if expect:
        assert check.exit_code == 1, check.output
        for item in expect:
            unit, shard = item.rsplit("/", 1)
            assert f"{unit} shard {int(shard.split('.')[0])}" in check.output, check.output
    _run(config)
    after = _finished(run_dir)
    redone = {k for k in after if after[k] != before.get(k)}
    assert redone == expect, (redone, expect)
    _assert_equals_reference(run_dir, reference)
    assert cli("verify", "--config", str(config)).exit_code == 0


def test_deleted_chunk_is_detected_and_only_its_shard_recomputed(done, reference):
    config, run_dir = done
    _damage_and_repair(config, run_dir, reference,
                       lambda d: shutil.rmtree(d / "store.zarr" / "raw" / "c" / "1" / "1"),
                       {"attribute/integrated_gradients/000001"})


def test_corrupted_chunk_is_detected(done, reference):
    config, run_dir = done

    def corrupt(d: Path) -> None:
        chunk = next((d / "store.zarr" / "aggregated" / "c" / "0" / "2").rglob("*"))
        while chunk.is_dir():
            chunk = next(chunk.iterdir())
        chunk.write_bytes(b"garbage" * 10)

    _damage_and_repair(config, run_dir, reference, corrupt, {"aggregate/gradient/000002"})


def test_deleted_sheet_is_detected_and_rerendered(done, reference):
    config, run_dir = done
    _damage_and_repair(config, run_dir, reference,
                       lambda d: (d / "sheets" / "sheet-0001.png").unlink(),
                       {"render/000001"})


def test_deleted_record_recomputes_only_that_shard(done, reference):
    config, run_dir = done
    Records(run_dir).drop("predict/000000")
    status = cli("status", "--config", str(config))
    assert "partial" in status.output
    before = _finished(run_dir)
    _run(config)
    after = _finished(run_dir)
    assert {k for k in after if after[k] != before.get(k)} == {"predict/000000"}
    _assert_equals_reference(run_dir, reference)


def test_status_says_which_config_values_changed(done):
    config, _ = done
    status = cli("status", "--config", str(config), "--set",
                 "methods.smoothgrad.stdevs=0.5")
    assert "methods.smoothgrad.stdevs: 0.3 -> 0.5" in status.output
    assert "attribute of smoothgrad and the stages after it will be recomputed" in status.output


# --------------------------------------------------------------------------- security


def test_config_strings_are_data_never_code(tmp_path):
    make_images(tmp_path / "images", n=1, broken=False)
    config = write_config(tmp_path / "c.toml", tmp_path / "images", tmp_path / "runs")
    marker = tmp_path / "pwned"
    result = cli("run", "--config", str(config), "--set",
                 f"run.device=$(touch {marker})", "--set",
                 f"render.colormap=__import__('os').system('touch {marker}')")
    assert result.exit_code == 2
    assert not marker.exists()


def test_symlink_outside_the_root_keeps_a_relative_id(tmp_path):
    outside = tmp_path / "outside"
    make_images(outside, n=1, broken=False)
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.png").symlink_to(outside / "img0.png")
    config = write_config(tmp_path / "c.toml", root, tmp_path / "runs")
    _run(config)
    ds = xr.open_zarr(tmp_path / "runs" / "c" / "store.zarr", consolidated=False)
    assert list(ds["image"].values) == ["link.png"]
