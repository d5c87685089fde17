"""End to end through the CLI on a tiny dataset: store contract, resume, staleness, locking."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pipeline.methods import METHODS
from tests.workflow_helpers import cli, make_images, run_subprocess, write_config
from workflows.state import RunLock

ARRAYS = ("status", "label", "pixels", "logits", "pred", "prob", "raw", "delta", "aggregated",
          "normalized")


@pytest.fixture()
def tiny(tmp_path):
    root = tmp_path / "images"
    make_images(root)
    return write_config(tmp_path / "tiny.toml", root, tmp_path / "runs"), tmp_path


def _run(config: Path, *extra: str) -> object:
    result = cli("run", "--config", str(config), "--scheduler", "synchronous", *extra)
    assert result.exit_code == 0, result.output
    return result


def _store(tmp: Path) -> Path:
    return tmp / "runs" / "tiny" / "store.zarr"


def _arrays(store: Path) -> dict[str, np.ndarray]:
    ds = xr.open_zarr(store, consolidated=False)
    return {name: ds[name].values for name in ARRAYS}


def test_run_writes_the_contract_store_and_sheets(tiny):
    config, tmp = tiny
    result = _run(config)
    ds = xr.open_zarr(_store(tmp), consolidated=False)
    assert dict(ds.sizes) == {"image": 6, "y": 32, "x": 32, "rgb": 3, "class": 1000,
                              "method": len(METHODS), "channel": 3}
    assert list(ds["method"].values) == list(METHODS)
    assert list(ds["image"].values) == ["broken.jpg", "img0.png", "img1.png", "img2.png",
                                        "img3.png", "sub/img4.png"]
    assert ds["raw"].dims == ("method", "image", "channel", "y", "x")
    assert ds["normalized"].dims == ("method", "image", "y", "x")
    assert ds["pixels"].dtype == np.uint8 and ds["raw"].dtype == np.float32
    assert ds["label"].dtype == np.int16 and ds["pred"].dtype == np.int16
    ok = ds["status"].values == "ok"
    assert ok.sum() == 5
    for name in ("logits", "prob", "raw", "aggregated", "normalized"):
        values = ds[name].values
        rows = values[:, ok] if "method" in ds[name].dims else values[ok]
        assert np.isfinite(rows).all(), name
    norm = ds["normalized"].values[:, ok]
    assert norm.min() >= 0.0 and norm.max() <= 1.0
    delta = ds["delta"].values[:, ok]
    for m, name in enumerate(METHODS):
        assert np.isfinite(delta[m]).all() == METHODS[name].has_delta
    # the broken file: a reason, and missing values that cannot pass for data
    broken = ~ok
    assert "cannot decode" in str(ds["status"].values[broken][0])
    assert np.isnan(ds["raw"].values[:, broken]).all()
    assert (ds["pred"].values[broken] == -1).all()
    assert np.isnan(ds["prob"].values[broken]).all()
    assert "broken.jpg" in result.output
    assert ds.attrs["random_weights"] is True
    assert ds.attrs["weights_id"] == "random:seed=0"
    assert ds.attrs["config"]["run"]["shard_size"] == 2
    assert "torch" in ds.attrs["package_versions"]
    sheets = sorted((tmp / "runs" / "tiny" / "sheets").glob("*.png"))
    assert [p.name for p in sheets] == ["sheet-0000.png", "sheet-0001.png"]
    resolved = json.loads((tmp / "runs" / "tiny" / "config.resolved.json").read_text())
    assert resolved["methods"]["integrated_gradients"]["n_steps"] == 4


def test_aggregate_and_normalize_match_the_library(tiny):
    from pipeline.explainers import aggregate_attribution, normalize_attribution

    config, tmp = tiny
    _run(config)
    a = _arrays(_store(tmp))
    ok = np.flatnonzero(a["status"] == "ok")
    for m in range(len(METHODS)):
        agg = aggregate_attribution(a["raw"][m, ok])
        np.testing.assert_allclose(a["aggregated"][m, ok], agg, rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(a["normalized"][m, ok], normalize_attribution(agg),
                                   rtol=1e-5, atol=1e-6)


def test_attributions_match_the_seed_functions(tiny):
    """The stored gradient is Captum Saliency of the stored crop for the stored prediction."""
    import torch

    from pipeline.data import from_uint8_hwc, normalize
    from pipeline.explainers import get_gradient
    from pipeline.model import load_model

    config, tmp = tiny
    _run(config)
    a = _arrays(_store(tmp))
    ok = np.flatnonzero(a["status"] == "ok")
    model = load_model("random", "softmax", seed=0).model
    x = normalize(from_uint8_hwc(a["pixels"][ok]))
    assert (model(x).argmax(1).numpy() == a["pred"][ok]).all()
    grad = get_gradient(model, x).numpy()
    m = list(METHODS).index("gradient")
    np.testing.assert_allclose(a["raw"][m, ok], grad, rtol=1e-4, atol=1e-9)
    assert torch.isfinite(torch.from_numpy(a["raw"][m, ok])).all()


def test_rerun_skips_everything(tiny):
    config, tmp = tiny
    _run(config)
    before = {p: p.stat().st_mtime_ns for p in (tmp / "runs").rglob("*.json")}
    result = _run(config)
    after = {p: p.stat().st_mtime_ns for p in (tmp / "runs").rglob("*.json")
             if p.parent.parent.name == "state"}
    assert all(before[p] == t for p, t in after.items())
    assert "0/3" in result.output  # shards run / total for every stage


def _records(tmp: Path, stage: str) -> dict[str, float]:
    folder = tmp / "runs" / "tiny" / "state" / stage
    return {p.name: json.loads(p.read_text())["finished"] for p in folder.glob("*.json")}


def test_changed_n_steps_recomputes_attribute_onward_only(tiny):
    config, tmp = tiny
    _run(config)
    first = _arrays(_store(tmp))
    recs = {s: _records(tmp, s) for s in ("ingest", "predict", "attribute", "render")}
    override = "methods.integrated_gradients.n_steps=6"
    status = cli("status", "--config", str(config), "--set", override)
    assert "attribute and the stages after it will be recomputed" in status.output
    _run(config, "--set", override)
    assert _records(tmp, "ingest") == recs["ingest"]
    assert _records(tmp, "predict") == recs["predict"]
    for stage in ("attribute", "render"):
        new = _records(tmp, stage)
        assert new.keys() == recs[stage].keys()
        assert all(new[k] > recs[stage][k] for k in new)
    second = _arrays(_store(tmp))
    ig, grad = list(METHODS).index("integrated_gradients"), list(METHODS).index("gradient")
    ok = first["status"] == "ok"
    assert not np.allclose(first["raw"][ig, ok], second["raw"][ig, ok])
    np.testing.assert_array_equal(first["raw"][grad], second["raw"][grad])


def _reference(tmp: Path) -> dict[str, np.ndarray]:
    ref_cfg = write_config(tmp / "ref" / "tiny.toml", tmp / "images", tmp / "ref" / "runs")
    _run(ref_cfg)
    return _arrays(tmp / "ref" / "runs" / "tiny" / "store.zarr")


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for name in ARRAYS:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("fault", ["attribute:after-write:2", "attribute:mid-write:8"])
def test_sigkill_mid_attribute_then_rerun_equals_uninterrupted(tiny, fault):
    config, tmp = tiny
    proc = run_subprocess("run", "--config", str(config), "--scheduler", "synchronous",
                          env={"XAI_FAULT": fault})
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == -signal.SIGKILL, output
    done = _records(tmp, "attribute")
    assert 0 < len(done) < 3
    _run(config)
    _assert_same(_arrays(_store(tmp)), _reference(tmp))


def test_external_sigkill_during_attribute(tmp_path):
    root = tmp_path / "images"
    make_images(root, n=6, broken=False)
    config = write_config(tmp_path / "tiny.toml", root, tmp_path / "runs", shard_size=1,
                          params={"integrated_gradients": {"n_steps": 24},
                                  "custom_integrated_gradients": {"n_steps": 24}})
    proc = run_subprocess("run", "--config", str(config), "--scheduler", "synchronous")
    folder = tmp_path / "runs" / "tiny" / "state" / "attribute"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(folder.glob("*.json")):
        if proc.poll() is not None:
            pytest.fail("the run ended before it could be killed")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert 0 < len(list(folder.glob("*.json"))) < 6
    assert cli("run", "--config", str(config), "--scheduler", "synchronous").exit_code == 0
    ref = write_config(tmp_path / "ref" / "tiny.toml", root, tmp_path / "ref" / "runs",
                       shard_size=1, params={"integrated_gradients": {"n_steps": 24},
                                             "custom_integrated_gradients": {"n_steps": 24}})
    _run(ref)
    _assert_same(_arrays(tmp_path / "runs" / "tiny" / "store.zarr"),
                 _arrays(tmp_path / "ref" / "runs" / "tiny" / "store.zarr"))


def test_second_concurrent_run_is_refused(tiny):
    config, tmp = tiny
    run_dir = tmp / "runs" / "tiny"
    with RunLock(run_dir):
        result = cli("run", "--config", str(config), "--scheduler", "synchronous")
    assert result.exit_code == 2
    assert "Another run is using" in result.output
    assert not (run_dir / "store.zarr").exists()


def test_lock_of_a_killed_run_does_not_block(tiny):
    config, tmp = tiny
    run_dir = tmp / "runs" / "tiny"
    code = ("import os, signal, sys; from workflows.state import RunLock; "
            f"RunLock({str(run_dir)!r}).acquire(); os.kill(os.getpid(), signal.SIGKILL)")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent)
    assert proc.returncode == -signal.SIGKILL
    assert (run_dir / "run.lock").exists()
    _run(config)


def test_missing_dataset_fails_before_any_work(tmp_path):
    config = write_config(tmp_path / "tiny.toml", tmp_path / "nowhere", tmp_path / "runs")
    result = cli("run", "--config", str(config))
    assert result.exit_code == 2
    assert "does not exist" in result.output and "class folders" in result.output
    assert not (tmp_path / "runs").exists()


def test_empty_dataset_fails(tmp_path):
    (tmp_path / "empty").mkdir()
    config = write_config(tmp_path / "tiny.toml", tmp_path / "empty", tmp_path / "runs")
    result = cli("run", "--config", str(config))
    assert result.exit_code == 2 and "found none" in result.output


def test_bad_config_names_key_and_file(tiny):
    config, _ = tiny
    config.write_text(config.read_text().replace("[run]", "[run]\nshard_sise = 3"))
    result = cli("run", "--config", str(config))
    assert result.exit_code == 2
    assert "shard_sise" in result.output and "tiny.toml" in result.output
    assert "Traceback" not in result.output


def test_status_and_clean(tiny):
    config, tmp = tiny
    assert "no run yet" in cli("status", "--config", str(config)).output
    _run(config)
    status = cli("status", "--config", str(config))
    assert status.exit_code == 0
    assert "broken.jpg" in status.output and "cannot decode" in status.output
    assert cli("clean", "normalize", "--config", str(config)).exit_code == 0
    assert not _records(tmp, "normalize") and not _records(tmp, "render")
    assert _records(tmp, "aggregate")
    rerun = _run(config)
    assert _records(tmp, "render")
    assert "normalize" in rerun.output
    assert cli("clean", "--config", str(config)).exit_code == 0
    assert not _store(tmp).exists()


def test_force_stage(tiny):
    config, tmp = tiny
    _run(config)
    before = _records(tmp, "predict")
    _run(config, "--force", "aggregate")
    assert _records(tmp, "predict") == before
    assert cli("run", "--config", str(config), "--force", "bogus").exit_code == 2


def test_fewer_sheets_after_images_per_sheet_changes(tiny):
    config, tmp = tiny
    _run(config, "--set", "render.images_per_sheet=2")
    sheets = tmp / "runs" / "tiny" / "sheets"
    assert len(list(sheets.glob("*.png"))) == 3
    _run(config, "--set", "render.images_per_sheet=6")
    assert [p.name for p in sheets.glob("*.png")] == ["sheet-0000.png"]


def test_changing_methods_rebuilds_the_method_axis(tiny):
    config, tmp = tiny
    _run(config)
    text = config.read_text()
    config.write_text(text[:text.index("[methods.")] + "[methods.custom_gradient]\n")
    _run(config)
    ds = xr.open_zarr(_store(tmp), consolidated=False)
    assert list(ds["method"].values) == ["custom_gradient"]
    assert np.isfinite(ds["normalized"].values[:, ds["status"].values == "ok"]).all()


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_local_schedulers_give_the_same_store(tiny, scheduler):
    config, tmp = tiny
    result = cli("run", "--config", str(config), "--scheduler", scheduler)
    assert result.exit_code == 0, result.output
    _assert_same(_arrays(_store(tmp)), _reference(tmp))


@pytest.mark.slow
def test_distributed_local_cluster(tiny):
    config, tmp = tiny
    result = cli("run", "--config", str(config), "--scheduler", "local:2")
    assert result.exit_code == 0, result.output
    _assert_same(_arrays(_store(tmp)), _reference(tmp))


def test_bad_scheduler(tiny):
    config, _ = tiny
    result = cli("run", "--config", str(config), "--scheduler", "cluster")
    assert result.exit_code == 2 and "local:N" in result.output


def test_explain_command(tmp_path):
    names = make_images(tmp_path / "img", n=2, broken=False)
    out = tmp_path / "row.png"
    result = cli("explain", *(str(tmp_path / "img" / n) for n in names), "--out", str(out),
                 "--weights", "random", "--n-steps", "4", "--nt-samples", "2", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0
    bad = cli("explain", str(tmp_path / "img" / names[0]), "--method", "nope", "--out",
              str(out), "--weights", "random")
    assert bad.exit_code == 2 and "nope" in bad.output


def test_datasets_command():
    result = cli("datasets")
    assert result.exit_code == 0
    for name in ("sample", "imagenet-val-subset", "synthetic"):
        assert name in result.output


def test_synthetic_dataset_needs_no_files(tmp_path):
    config = tmp_path / "synth.toml"
    config.write_text(
        '[dataset]\nlayout = "synthetic"\ncount = 3\nresize = 40\ncrop = 32\n'
        f'[model]\nweights = "random"\n[run]\nout = "{tmp_path / "runs"}"\ndevice = "cpu"\n'
        "shard_size = 2\n[methods.custom_gradient]\n[render]\nimages_per_sheet = 3\ndpi = 40\n")
    _run(config)
    ds = xr.open_zarr(tmp_path / "runs" / "synth" / "store.zarr", consolidated=False)
    assert list(ds["image"].values) == ["synthetic/000000", "synthetic/000001",
                                        "synthetic/000002"]
    assert (ds["status"].values == "ok").all()
    assert ds["pixels"].values.std() > 0


@pytest.mark.slow
def test_existing_dask_scheduler_address(tiny):
    from distributed import LocalCluster

    config, tmp = tiny
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                      dashboard_address=None) as cluster:
        result = cli("run", "--config", str(config), "--scheduler", cluster.scheduler_address)
    assert result.exit_code == 0, result.output
    _assert_same(_arrays(_store(tmp)), _reference(tmp))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precision_mode_is_recorded_and_results_are_finite(tiny, precision):
    config, tmp = tiny
    _run(config, "--set", f"run.precision={precision}")
    ds = xr.open_zarr(_store(tmp), consolidated=False)
    assert ds.attrs["precision"] == precision
    ok = ds["status"].values == "ok"
    assert np.isfinite(ds["raw"].values[:, ok]).all()


def test_engine_options_change_the_attribute_hash(tiny):
    config, tmp = tiny
    _run(config)
    before = _records(tmp, "predict")
    _run(config, "--set", "run.channels_last=false")
    assert _records(tmp, "predict") != before
    assert _records(tmp, "ingest")
