"""End to end through the CLI on a tiny dataset: store contract, resume, staleness, locking."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from pipeline.attribution.method_registry import DEFAULT_METHODS, METHODS
from tests.workflow_helpers import (
    ROOT,
    assert_same,
    cli,
    copy_run,
    finished,
    make_images,
    records,
    run_ok,
    run_subprocess,
    store_arrays,
    units_run,
    write_config,
)
from workflows.runner.run_lock import RunLock
from workflows.stages import REGISTRY

METHOD_NAMES = list(DEFAULT_METHODS)


@pytest.fixture()
def tiny(tmp_path):
    root = tmp_path / "images"
    make_images(root)
    return write_config(tmp_path / "tiny.toml", root, tmp_path / "runs"), tmp_path


@pytest.fixture(scope="module")
def finished_tiny(tmp_path_factory):
    """One clean, uninterrupted run of the tiny dataset for the whole module: its folder, the
    run's output and its store arrays (the reference the other runs must equal)."""
    tmp = tmp_path_factory.mktemp("finished")
    make_images(tmp / "images")
    result = run_ok(write_config(tmp / "tiny.toml", tmp / "images", tmp / "runs"))
    return tmp, result.output, store_arrays(tmp / "runs" / "tiny" / "store.zarr")  # type: ignore[attr-defined]


@pytest.fixture()
def done(finished_tiny, tmp_path):
    """A copy of the finished run, for this test alone: ``(config, tmp, the run's output)``
    (as ``tiny`` after ``xai run``, without running it again)."""
    src, output, _ = finished_tiny
    return copy_run(src, tmp_path), tmp_path, output


@pytest.fixture()
def reference(finished_tiny):
    """The store arrays of a clean synchronous run of the tiny dataset."""
    return finished_tiny[2]


_run = run_ok


def _store(tmp: Path) -> Path:
    return tmp / "runs" / "tiny" / "store.zarr"


_arrays = store_arrays


def test_run_writes_the_contract_store_and_sheets(done):
    _config, tmp, output = done
    ds = xr.open_zarr(_store(tmp), consolidated=False)
    assert dict(ds.sizes) == {"image": 6, "y": 32, "x": 32, "rgb": 3, "class_name": 1000,
                              "explainer": len(METHOD_NAMES), "channel": 3}
    assert ds["class_name"].values.tolist()[:2] == ["tench", "goldfish"]
    assert ds["logits"].dims == ("image", "class_name")
    assert ds["explainer"].values.tolist() == METHOD_NAMES
    assert list(ds["image"].values) == ["broken.jpg", "img0.png", "img1.png", "img2.png",
                                        "img3.png", "sub/img4.png"]
    assert ds["raw"].dims == ("explainer", "image", "channel", "y", "x")
    assert ds["normalized"].dims == ("explainer", "image", "y", "x")
    assert ds["pixels"].dtype == np.uint8 and ds["raw"].dtype == np.float32
    assert ds["label"].dtype == np.int16 and ds["pred"].dtype == np.int16
    ok = ds["status"].values == "ok"
    assert ok.sum() == 5
    for name in ("logits", "prob", "raw", "aggregated", "normalized"):
        values = ds[name].values
        rows = values[:, ok] if "explainer" in ds[name].dims else values[ok]
        assert np.isfinite(rows).all(), name
    norm = ds["normalized"].values[:, ok]
    assert norm.min() >= 0.0 and norm.max() <= 1.0
    delta = ds["delta"].values[:, ok]
    for m, name in enumerate(METHOD_NAMES):
        assert np.isfinite(delta[m]).all() == METHODS[name].has_delta
    # the broken file: a reason, and missing values that cannot pass for data
    broken = ~ok
    assert "cannot decode" in str(ds["status"].values[broken][0])
    assert np.isnan(ds["raw"].values[:, broken]).all()
    assert (ds["pred"].values[broken] == -1).all()
    assert np.isnan(ds["prob"].values[broken]).all()
    assert "broken.jpg" in output
    assert ds.attrs["random_weights"] is True
    assert ds.attrs["weights_id"] == "random:seed=0"
    assert ds.attrs["config"]["run"]["shard_size"] == 2
    assert "torch" in ds.attrs["package_versions"]
    sheets = sorted((tmp / "runs" / "tiny" / "sheets").glob("*.png"))
    assert [p.name for p in sheets] == ["sheet-0000.png", "sheet-0001.png"]
    resolved = json.loads((tmp / "runs" / "tiny" / "config.resolved.json").read_text())
    assert resolved["methods"]["integrated_gradients"]["n_steps"] == 4


def test_aggregate_and_normalize_match_the_library(done):
    from pipeline.explainers import aggregate_attribution, normalize_attribution

    _config, tmp, _ = done
    a = _arrays(_store(tmp))
    ok = np.flatnonzero(a["status"] == "ok")
    for m in range(len(METHOD_NAMES)):
        agg = aggregate_attribution(a["raw"][m, ok])
        np.testing.assert_allclose(a["aggregated"][m, ok], agg, rtol=1e-5, atol=1e-12)
        np.testing.assert_allclose(a["normalized"][m, ok], normalize_attribution(agg),
                                   rtol=1e-5, atol=1e-6)


def test_the_stored_gradient_is_saliency_of_the_stored_crop(done):
    """The stored gradient is Captum Saliency of the stored crop for the stored prediction."""
    from pipeline.data.images import from_uint8_hwc, normalize
    from pipeline.explainers import get_gradient
    from pipeline.models.classifier import load_model

    _config, tmp, _ = done
    a = _arrays(_store(tmp))
    ok = np.flatnonzero(a["status"] == "ok")
    model = load_model("random", "softmax", seed=0).model
    x = normalize(from_uint8_hwc(a["pixels"][ok]))
    assert (model(x).argmax(1).numpy() == a["pred"][ok]).all()
    grad = get_gradient(model, x).numpy()
    m = METHOD_NAMES.index("gradient")
    np.testing.assert_allclose(a["raw"][m, ok], grad, rtol=1e-4, atol=1e-9)


def _enabled_stages(config) -> list[str]:
    """The stages a run under ``config`` has (evaluate is off without [evaluate] metrics; the
    test configs turn the report off)."""
    from workflows.config.loading import load_config

    cfg = load_config(config)
    names = [stage.name for stage in REGISTRY if stage.methods(cfg)]
    assert names == [n for n in REGISTRY.names() if n not in ("evaluate", "report")]
    return names


def test_rerun_skips_everything(done):
    config, tmp, _ = done
    logs = tmp / "runs" / "tiny" / "state"
    before = {p: p.stat().st_mtime_ns for p in logs.rglob("*.jsonl")}
    result = _run(config)
    after = {p: p.stat().st_mtime_ns for p in logs.rglob("*.jsonl")}
    assert after and after == before, "no record was written again"
    summary = json.loads((tmp / "runs" / "tiny" / "summary.json").read_text())
    assert [st["stage"] for st in summary["stages"]] == _enabled_stages(config)
    # This rerun recomputed nothing; the stages keep the figures of the run that did.
    assert all(n == 0 for n in summary["history"][-1]["units_run"].values()), summary
    assert all(st["units_run"] == st["units_total"] for st in summary["stages"]), summary
    assert "nothing was recomputed" in result.output


def _records(tmp: Path, stage: str) -> dict[str, float]:
    return finished(tmp / "runs" / "tiny", stage)


def test_changed_n_steps_recomputes_that_method_onward_only(done):
    config, tmp, _ = done
    first = _arrays(_store(tmp))
    stages = ("ingest", "predict", "attribute", "aggregate", "normalize", "render")
    recs = {s: _records(tmp, s) for s in stages}
    override = "methods.integrated_gradients.n_steps=6"
    status = cli("status", "--config", str(config), "--set", override)
    assert "attribute of integrated_gradients and the stages after it will be recomputed" \
        in status.output
    _run(config, "--set", override)
    for stage in stages:
        new = _records(tmp, stage)
        assert new.keys() == recs[stage].keys() and new, stage
        redone = {k for k in new if new[k] != recs[stage][k]}
        if stage in ("ingest", "predict"):
            assert not redone, stage
        elif stage == "render":  # a sheet shows every method
            assert redone == set(new), stage
        else:
            assert redone == {k for k in new if k.startswith("integrated_gradients/")}, stage
    second = _arrays(_store(tmp))
    ig, grad = METHOD_NAMES.index("integrated_gradients"), METHOD_NAMES.index("gradient")
    ok = first["status"] == "ok"
    assert not np.allclose(first["raw"][ig, ok], second["raw"][ig, ok])
    np.testing.assert_array_equal(first["raw"][grad], second["raw"][grad])


def test_adding_a_sixth_method_computes_only_that_method(done):
    config, tmp, _ = done
    assert "input_x_gradient" not in METHOD_NAMES
    before = {s: _records(tmp, s) for s in ("predict", "attribute", "aggregate", "normalize")}
    config.write_text(config.read_text() + "\n[methods.input_x_gradient]\n")
    status = cli("status", "--config", str(config))
    assert "new methods, computed on the next run (and only they): input_x_gradient" \
        in status.output
    assert "│ attribute │ input_x_gradient" in status.output
    result = _run(config)
    assert "input_x_gradient" in result.output
    for stage, old in before.items():
        new = _records(tmp, stage)
        redone = {k for k in new if new[k] != old.get(k)}
        expected = set() if stage == "predict" else \
            {k for k in new if k.startswith("input_x_gradient/")}
        assert redone == expected and (stage == "predict" or len(expected) == 3), stage
    ds = xr.open_zarr(_store(tmp), consolidated=False)
    assert ds["explainer"].values.tolist() == [*METHOD_NAMES, "input_x_gradient"]
    # The same store as a run that had all six methods from the start.
    ref = write_config(tmp / "ref" / "tiny.toml", tmp / "images", tmp / "ref" / "runs",
                       methods=[*METHOD_NAMES, "input_x_gradient"])
    _run(ref)
    _assert_same(_arrays(_store(tmp)), _arrays(tmp / "ref" / "runs" / "tiny" / "store.zarr"))
    status = cli("status", "--config", str(config))
    assert "input_x_gradient" in status.output and "new methods" not in status.output


def test_removing_a_method_moves_the_others_without_recomputing(done):
    config, tmp, _ = done
    before = _records(tmp, "attribute")
    text = config.read_text()
    config.write_text(text.replace("[methods.integrated_gradients]\nn_steps = 4\n", ""))
    _run(config)
    kept = [m for m in METHOD_NAMES if m != "integrated_gradients"]
    after = _records(tmp, "attribute")
    assert after == {k: v for k, v in before.items() if not k.startswith("integrated_")}
    ref = write_config(tmp / "ref" / "tiny.toml", tmp / "images", tmp / "ref" / "runs",
                       methods=kept)
    _run(ref)
    _assert_same(_arrays(_store(tmp)), _arrays(tmp / "ref" / "runs" / "tiny" / "store.zarr"))
    assert cli("verify", "--config", str(config)).exit_code == 0


def test_store_uses_explainer_not_method(done):
    """``sel(method=...)`` is xarray's own argument: the axis is called ``explainer``."""
    _config, tmp, _ = done
    ds = xr.open_zarr(_store(tmp), consolidated=False)
    assert "method" not in ds.dims and "method" not in ds.variables
    delta = ds.delta.sel(explainer="integrated_gradients")
    assert delta.dims == ("image",)
    names = ds.explainer.values.tolist()
    assert names == METHOD_NAMES and all(type(n) is str for n in names)
    ids = ds.image.values.tolist()
    assert all(type(i) is str for i in ids) and "img0.png" in ids


def test_a_schema_1_store_is_refused_not_misread(done):
    import zarr

    config, tmp, _ = done
    group = zarr.open_group(str(_store(tmp)), mode="r+")
    group.attrs["schema_version"] = 1
    group.create_array("method", shape=(1,), dtype=str, dimension_names=("method",))
    for command in (("run", "--config", str(config)), ("status", "--config", str(config)),
                    ("verify", "--config", str(config))):
        result = cli(*command)
        assert result.exit_code == 2, (command, result.output)
        assert "schema version 5" in result.output and "xai clean" in result.output
        assert "`method`" in result.output and "Traceback" not in result.output
    group.attrs["schema_version"] = 2  # the last version, without `gap` and `mask`
    del group["method"]
    result = cli("run", "--config", str(config))
    assert result.exit_code == 2 and "lacks the `gap` and `mask` arrays" in result.output
    group.attrs["schema_version"] = 3  # without `steps` and `residual`
    result = cli("run", "--config", str(config))
    assert result.exit_code == 2 and "lacks the `steps` and `residual`" in result.output
    group.attrs["schema_version"] = 4  # logits over `class`, no class names
    result = cli("run", "--config", str(config))
    assert result.exit_code == 2 and "now `class_name`" in " ".join(result.output.split())
    from pipeline.errors import StoreError
    from pipeline.store.access import open_dataset

    with pytest.raises(StoreError, match="xai clean"):
        open_dataset(_store(tmp))
    assert cli("clean", "--config", str(config), "--yes").exit_code == 0
    _run(config)


def test_summary_json_and_records_name_their_worker(done):
    config, tmp, output = done
    run_dir = tmp / "runs" / "tiny"
    summary = json.loads((run_dir / "summary.json").read_text())
    stages = {st["stage"]: st for st in summary["stages"]}
    assert list(stages) == _enabled_stages(config)
    att = stages["attribute"]
    assert att["units_run"] == att["units_total"] == 3 * len(METHOD_NAMES)
    assert att["images"] == 6 and att["busy_seconds"] > 0 and att["img_per_s"] > 0
    assert att["span_seconds"] >= att["busy_seconds"] * 0.99 / len(att["workers"])
    assert 0 <= att["device_idle"] <= 1 and len(att["workers"]) == 1
    assert stages["aggregate"]["device_idle"] is None
    assert summary["seconds"] > 0 and summary["streaming"] is True
    assert "summary.json" in output
    rec = records(run_dir, "attribute")["gradient/000000"]
    assert rec["worker"]["address"] == "local" and rec["worker"]["device"] == "cpu"
    assert rec["worker"]["host"] and rec["max_batch"] == 8 and rec["images"] == 2


def test_render_options_tiles_signed_and_overlay(done):
    from PIL import Image

    config, tmp, _ = done
    run_dir = tmp / "runs" / "tiny"
    plain = (run_dir / "sheets" / "sheet-0000.png").read_bytes()
    assert Image.open(run_dir / "sheets" / "sheet-0000.png").mode == "RGB"
    before = _records(tmp, "normalize")
    _run(config, "--set", "render.tiles=true", "--set", "render.signed=true",
         "--set", "render.overlay=true")
    assert _records(tmp, "normalize") == before  # display options touch rendering only
    assert (run_dir / "sheets" / "sheet-0000.png").read_bytes() != plain
    ok = [i for i, s in enumerate(_arrays(_store(tmp))["status"]) if s == "ok"]
    for method in METHOD_NAMES:
        tiles = sorted(p.name for p in (run_dir / "tiles" / method).glob("*.png"))
        assert tiles == [f"{i:06d}.png" for i in ok], method
    tile = np.asarray(Image.open(run_dir / "tiles" / "gradient" / f"{ok[0]:06d}.png"))
    assert tile.shape == (32, 32, 3)
    assert cli("clean", "render", "--config", str(config)).exit_code == 0
    assert not (run_dir / "tiles").exists() and not (run_dir / "sheets").exists()


def test_streaming_off_gives_the_same_store(tiny, reference):
    config, tmp = tiny
    _run(config, "--set", "run.streaming=false")
    summary = json.loads((tmp / "runs" / "tiny" / "summary.json").read_text())
    assert summary["streaming"] is False
    # one stage after another: their spans do not overlap
    assert summary["sum_of_stage_seconds"] <= summary["seconds"] + 1e-3, summary
    _assert_same(_arrays(_store(tmp)), reference)


_assert_same = assert_same


@pytest.mark.parametrize("fault", ["attribute:after-write:2", "attribute:mid-write:8"])
def test_sigkill_mid_attribute_then_rerun_equals_uninterrupted(tiny, reference, fault):
    config, tmp = tiny
    proc = run_subprocess("run", "--config", str(config), "--scheduler", "synchronous",
                          env={"XAI_FAULT": fault})
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == -signal.SIGKILL, output
    done = _records(tmp, "attribute")
    assert 0 < len(done) < 3 * len(METHOD_NAMES)
    _run(config)
    _assert_same(_arrays(_store(tmp)), reference)


def test_external_sigkill_during_attribute(tmp_path):
    root = tmp_path / "images"
    make_images(root, n=6, broken=False)
    config = write_config(tmp_path / "tiny.toml", root, tmp_path / "runs", shard_size=1)
    # Each attribute shard takes a quarter second more (a sleep, not work), so the kill
    # lands while the stage is under way.
    proc = run_subprocess("run", "--config", str(config), "--scheduler", "synchronous",
                          env={"XAI_SLOW_SHARD_S": "0.25"})
    run = tmp_path / "runs" / "tiny"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not records(run, "attribute"):
        if proc.poll() is not None:
            pytest.fail("the run ended before it could be killed")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert 0 < len(records(run, "attribute")) < 6 * len(METHOD_NAMES)
    assert cli("run", "--config", str(config), "--scheduler", "synchronous").exit_code == 0
    ref = write_config(tmp_path / "ref" / "tiny.toml", root, tmp_path / "ref" / "runs",
                       shard_size=1)
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
    code = ("import os, signal, sys; from workflows.runner.run_lock import RunLock; "
            f"RunLock({str(run_dir)!r}).acquire(); os.kill(os.getpid(), signal.SIGKILL)")
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT)
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
    config.write_text(config.read_text().replace("shard_sise = 3\n", ""))
    bad_value = cli("run", "--config", str(config), "--set", "run.shard_size=-1")
    assert "--set run.shard_size=-1: [run] shard_size: expected shard_size >= 1, got -1" \
        in " ".join(bad_value.output.split()), bad_value.output


def test_status_and_clean(done):
    config, tmp, _ = done
    nothing = write_config(tmp / "nothing.toml", tmp / "images", tmp / "elsewhere")
    assert "no run yet" in cli("status", "--config", str(nothing)).output
    status = cli("status", "--config", str(config))
    assert status.exit_code == 0
    assert "broken.jpg" in status.output and "cannot decode" in status.output
    assert cli("clean", "normalize", "--config", str(config)).exit_code == 0
    assert not _records(tmp, "normalize") and not _records(tmp, "render")
    assert _records(tmp, "aggregate")
    rerun = _run(config)
    assert _records(tmp, "render")
    units = units_run(rerun.output)
    assert units == {"normalize": f"{3 * len(METHOD_NAMES)}/{3 * len(METHOD_NAMES)}",
                     "render": "2/2"}, units
    assert cli("clean", "--config", str(config), "--yes").exit_code == 0
    assert not _store(tmp).exists()


def test_force_stage(done):
    config, tmp, _ = done
    stages = ("predict", "attribute", "aggregate", "normalize", "render")
    before = {s: _records(tmp, s) for s in stages}
    _run(config, "--force", "aggregate")
    after = {s: _records(tmp, s) for s in stages}
    for stage in stages:  # forced: aggregate and every stage that reads it, all of them
        redone = {k for k in after[stage] if after[stage][k] != before[stage][k]}
        forced = stage in ("aggregate", "normalize", "render")
        assert after[stage].keys() == before[stage].keys()
        assert redone == (set(after[stage]) if forced else set()), stage
    bogus = cli("run", "--config", str(config), "--force", "bogus")
    assert bogus.exit_code == 2 and "Expected --force to name a stage (ingest, " in bogus.output
    assert "clean" not in bogus.output


def test_fewer_sheets_after_images_per_sheet_changes(tiny):
    config, tmp = tiny
    _run(config, "--set", "render.images_per_sheet=2")
    sheets = tmp / "runs" / "tiny" / "sheets"
    assert len(list(sheets.glob("*.png"))) == 3
    _run(config, "--set", "render.images_per_sheet=6")
    assert [p.name for p in sheets.glob("*.png")] == ["sheet-0000.png"]


def test_changing_methods_rebuilds_the_method_axis(done):
    config, tmp, _ = done
    text = config.read_text()
    config.write_text(text[:text.index("[methods.")] + "[methods.custom_gradient]\n")
    _run(config)
    ds = xr.open_zarr(_store(tmp), consolidated=False)
    assert ds["explainer"].values.tolist() == ["custom_gradient"]
    assert np.isfinite(ds["normalized"].values[:, ds["status"].values == "ok"]).all()


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_local_schedulers_give_the_same_store(tiny, reference, scheduler):
    config, tmp = tiny
    result = cli("run", "--config", str(config), "--scheduler", scheduler)
    assert result.exit_code == 0, result.output
    _assert_same(_arrays(_store(tmp)), reference)


@pytest.mark.slow
def test_distributed_local_cluster(tiny, reference):
    config, tmp = tiny
    result = cli("run", "--config", str(config), "--scheduler", "local:2")
    assert result.exit_code == 0, result.output
    _assert_same(_arrays(_store(tmp)), reference)


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
    assert "explain: finished, 2/2 images" in result.output  # progress, in images
    help_text = cli("explain", "--help").output
    assert "seed" not in help_text.split("Options")[0].lower()
    assert "heat map per method" in " ".join(help_text.split())
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
        "shard_size = 2\n[methods.custom_gradient]\n[render]\nimages_per_sheet = 3\n")
    _run(config)
    ds = xr.open_zarr(tmp_path / "runs" / "synth" / "store.zarr", consolidated=False)
    assert list(ds["image"].values) == ["synthetic/000000", "synthetic/000001",
                                        "synthetic/000002"]
    assert (ds["status"].values == "ok").all()
    assert ds["pixels"].values.std() > 0


@pytest.mark.slow
def test_existing_dask_scheduler_address(tiny, reference):
    from distributed import LocalCluster

    config, tmp = tiny
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                      resources={"GPU": 1}, dashboard_address=None) as cluster:
        result = cli("run", "--config", str(config), "--scheduler", cluster.scheduler_address)
    assert result.exit_code == 0, result.output
    _assert_same(_arrays(_store(tmp)), reference)


def test_fp32_fwd_equals_fp32_on_a_cpu(tiny, reference):
    config, tmp = tiny
    _run(config, "--set", "run.precision=fp32-fwd")
    ds = xr.open_zarr(_store(tmp), consolidated=False)
    assert ds.attrs["precision"] == "fp32-fwd"
    _assert_same(_arrays(_store(tmp)), reference)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precision_mode_is_recorded_and_results_are_finite(done, precision):
    config, tmp, _ = done
    _run(config, "--set", f"run.precision={precision}")
    ds = xr.open_zarr(_store(tmp), consolidated=False)
    assert ds.attrs["precision"] == precision
    ok = ds["status"].values == "ok"
    assert np.isfinite(ds["raw"].values[:, ok]).all()


def test_engine_options_make_predict_and_attribute_stale_but_not_ingest(done):
    config, tmp, _ = done
    before = {s: _records(tmp, s) for s in ("ingest", "predict", "attribute")}
    _run(config, "--set", "run.channels_last=false")
    after = {s: _records(tmp, s) for s in ("ingest", "predict", "attribute")}
    assert after["ingest"] == before["ingest"]
    for stage in ("predict", "attribute"):
        assert after[stage].keys() == before[stage].keys() and after[stage]
        assert all(after[stage][k] > before[stage][k] for k in after[stage]), stage


def test_random_weights_warning_is_whole_at_80_columns():
    import io

    from rich.console import Console
    from rich.progress import Progress

    from workflows.runner.progress import RichReporter
    from workflows.runner.run import RANDOM_WEIGHTS_WARNING

    buf = io.StringIO()
    console = Console(file=buf, width=80, soft_wrap=True, force_terminal=False)
    with Progress(console=console) as progress:
        RichReporter(progress).warn(RANDOM_WEIGHTS_WARNING)
    text = buf.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines()), text
    words = " ".join(w for w in text.split() if w not in "│╭╮╰╯─")
    for part in ("RANDOM WEIGHTS:", "seeded random", "say nothing about a real model."):
        assert part in words, text


def test_status_verify_clean_take_data_dir(tmp_path):
    root = tmp_path / "images"
    make_images(root, n=2, broken=False)
    config = write_config(tmp_path / "c.toml", root, tmp_path / "runs")
    config.write_text(config.read_text().replace(f'root = "{root}"\n', ""))
    assert "root" in cli("status", "--config", str(config)).output  # needs the folder
    _run(config, "--data-dir", str(root))
    status = cli("status", "--config", str(config), "--data-dir", str(root))
    assert status.exit_code == 0 and "done" in status.output, status.output
    assert cli("verify", "--config", str(config), "--data-dir", str(root)).exit_code == 0
    cleaned = cli("clean", "--config", str(config), "--data-dir", str(root), "--yes")
    assert cleaned.exit_code == 0 and not (tmp_path / "runs" / "c" / "store.zarr").exists()


def test_a_store_with_other_dataset_settings_is_never_discarded_silently(done):
    config, tmp, _ = done
    before = _arrays(_store(tmp))
    other = tmp / "other"
    make_images(other, n=3, broken=False, seed=5)
    refused = cli("run", "--config", str(config), "--data-dir", str(other))
    assert refused.exit_code == 2, refused.output
    for needle in ("dataset.root", str(other), "--out", "--replace", "Nothing was changed"):
        assert needle in refused.output, (needle, refused.output)
    shard = cli("run", "--config", str(config), "--set", "run.shard_size=3")
    assert shard.exit_code == 2 and "run.shard_size: 2 -> 3" in shard.output, shard.output
    _assert_same(_arrays(_store(tmp)), before)  # untouched
    assert cli("verify", "--config", str(config)).exit_code == 0
    _run(config, "--data-dir", str(other), "--replace")
    ds = xr.open_zarr(_store(tmp), consolidated=False)
    assert ds["image"].values.tolist() == ["img0.png", "img1.png", "sub/img2.png"]
    assert not list(_store(tmp).parent.glob("store.zarr.*"))


@pytest.mark.parametrize("fault", ["replace:new-created", "replace:old-moved"])
def test_a_kill_during_replacement_leaves_a_whole_store(done, fault):
    config, tmp, _ = done
    before = _arrays(_store(tmp))
    proc = run_subprocess("run", "--config", str(config), "--set", "run.shard_size=3",
                          "--replace", "--scheduler", "synchronous", env={"XAI_FAULT": fault})
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == -signal.SIGKILL, output
    if fault == "replace:new-created":  # killed before the swap: the old store is whole
        _assert_same(_arrays(_store(tmp)), before)
    _run(config, "--set", "run.shard_size=3", "--replace")
    after = _arrays(_store(tmp))
    ref = write_config(tmp / "ref" / "tiny.toml", tmp / "images", tmp / "ref" / "runs",
                       shard_size=3)
    _run(ref)
    _assert_same(after, _arrays(tmp / "ref" / "runs" / "tiny" / "store.zarr"))
    assert not list(_store(tmp).parent.glob("store.zarr.*"))
