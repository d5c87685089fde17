"""The evaluate stage through the CLI: stored metrics equal the library's on the stored maps,
random maps give the floor, localisation without masks is NaN with a note, and a change of
[evaluate] settings recomputes evaluate alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr

from pipeline import metrics as M
from tests.workflow_helpers import ROOT, cli, make_images, records, run_ok, write_config
from workflows.stages.evaluate import random_maps

ALL = ["deletion", "insertion", "relevance_mass_accuracy", "relevance_rank_accuracy",
       "pointing_game", "sparseness"]
METHODS = ("gradient", "integrated_gradients")


def _evaluate_table(metrics, steps=4, randomisation=2) -> str:
    names = ", ".join(f'"{m}"' for m in metrics)
    return (f"\n[evaluate]\nmetrics = [{names}]\nsteps = {steps}\n"
            f"randomisation_images = {randomisation}\nbootstrap = 200\n")


@pytest.fixture(scope="module")
def evidence_run(tmp_path_factory):
    """Six 32-px evidence images, a tiny trained evidence model (cached in the test's
    folder), two methods, every metric."""
    tmp = tmp_path_factory.mktemp("evaluate")
    mp = pytest.MonkeyPatch()
    mp.setenv("XAI_CACHE_DIR", str(tmp / "cache"))
    cfg = write_config(tmp / "ev.toml", ROOT / "data" / "sample", tmp / "runs", shard_size=3,
                       methods=METHODS, extra=_evaluate_table(ALL))
    text = cfg.read_text().replace('layout = "plain"', 'layout = "evidence"\ncount = 6')
    text = text.replace("resize = 40", "resize = 32").replace(
        'weights = "random"', 'weights = "evidence"\ntrain_images = 32\nval_images = 6')
    cfg.write_text(text)
    result = run_ok(cfg)
    yield cfg, tmp / "runs" / "ev", result.output  # type: ignore[attr-defined]
    mp.undo()


def _ds(run_dir):
    return xr.open_zarr(run_dir / "store.zarr", consolidated=False)


def test_stored_map_metrics_equal_the_library_on_the_stored_maps(evidence_run):
    _, run_dir, _ = evidence_run
    ds = _ds(run_dir)
    mask = ds.mask.values
    assert mask.any(axis=(1, 2)).all(), "every evidence image has its object's mask"
    for name in ("relevance_mass_accuracy", "relevance_rank_accuracy", "pointing_game",
                 "sparseness"):
        spec = M.METRICS[name]
        for m in METHODS:
            maps = ds.aggregated.sel(explainer=m).values
            expected = spec.fn(maps, mask) if spec.needs_mask else spec.fn(maps)
            stored = ds[f"metric_{name}"].sel(explainer=m).values
            np.testing.assert_allclose(stored, expected, rtol=1e-6, err_msg=f"{name} {m}")
        rand = random_maps(range(6), (32, 32), 0)
        expected = spec.fn(rand, mask) if spec.needs_mask else spec.fn(rand)
        np.testing.assert_allclose(ds[f"random_{name}"].values, expected, rtol=1e-6)


def test_stored_deletion_and_insertion_equal_the_library(evidence_run, monkeypatch):
    cfg_path, run_dir, _ = evidence_run
    from pipeline.data import from_uint8_hwc, normalize
    from pipeline.model import load_model
    from workflows.config import load_config

    cfg = load_config(cfg_path)
    monkeypatch.setenv("XAI_CACHE_DIR", str(run_dir.parent.parent / "cache"))
    net = load_model("evidence", "softmax", evidence=cfg.evidence_settings()).backbone
    ds = _ds(run_dir)
    x = normalize(from_uint8_hwc(ds.pixels.values))
    targets = torch.as_tensor(ds.pred.values.astype(np.int64))
    for name in ("deletion", "insertion"):
        for m in METHODS:
            auc, curves = M.METRICS[name].fn(lambda z: net(z).softmax(1), x,
                                              ds.aggregated.sel(explainer=m).values, targets,
                                              steps=4, baseline="black")
            np.testing.assert_allclose(ds[f"curve_{name}"].sel(explainer=m).values, curves,
                                       rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(ds[f"metric_{name}"].sel(explainer=m).values, auc,
                                       rtol=1e-5, atol=1e-6)
    assert ds.curve_deletion.dims == ("explainer", "image", "step")
    corr = ds.randomisation.values
    assert ds.randomisation.dims == ("explainer", "image", "layer_group")
    assert np.isfinite(corr[:, :2]).all() and np.isnan(corr[:, 2:]).all()


def test_summary_table_json_and_figure(evidence_run):
    _, run_dir, output = evidence_run
    summary = json.loads((run_dir / "evaluation.json").read_text())
    ds = _ds(run_dir)
    for name in ALL:
        entry = summary["metrics"][name]
        for m in METHODS:
            stat = entry["methods"][m]
            values = ds[f"metric_{name}"].sel(explainer=m).values
            assert stat["mean"] == pytest.approx(float(np.nanmean(values)))
            assert stat["low"] <= stat["mean"] <= stat["high"]
        assert entry["better"] == ("higher" if M.METRICS[name].higher_is_better else "lower")
    assert set(summary["randomisation"]) == set(METHODS)
    assert (run_dir / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = " ".join(output.split())
    assert "evaluation: mean [95% bootstrap interval]" in text and "random maps" in text
    assert "higher is better" in text and "lower is better" in text
    assert "training" in text and "32/32" in text  # the evidence model's progress bar


def test_changing_evaluate_settings_recomputes_only_evaluate(evidence_run):
    cfg, run_dir, _ = evidence_run
    before = records(run_dir, "attribute")
    result = cli("run", "--config", str(cfg), "--scheduler", "synchronous",
                 "--set", "evaluate.steps=2")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert records(run_dir, "attribute") == before
    ds = _ds(run_dir)
    assert ds.curve_deletion.shape[-1] == 3
    assert len(records(run_dir, "evaluate")) == 2


def test_localisation_without_masks_is_nan_with_one_note(tmp_path):
    root = tmp_path / "images"
    make_images(root, n=2, broken=False)
    cfg = write_config(tmp_path / "p.toml", root, tmp_path / "runs", methods=("gradient",),
                       extra=_evaluate_table(["relevance_mass_accuracy", "sparseness"],
                                             randomisation=0))
    result = run_ok(cfg)
    ds = _ds(tmp_path / "runs" / "p")
    assert np.isnan(ds.metric_relevance_mass_accuracy.values).all()
    assert np.isfinite(ds.metric_sparseness.values).all()
    text = " ".join(result.output.split())  # type: ignore[attr-defined]
    assert text.count("has no ground-truth masks") == 1
    assert "randomisation" not in ds


def test_unknown_metric_is_a_config_error_listing_the_names(tmp_path):
    root = tmp_path / "images"
    make_images(root, n=1, broken=False)
    cfg = write_config(tmp_path / "c.toml", root, tmp_path / "runs",
                       extra=_evaluate_table(["pointing"]))
    result = cli("run", "--config", str(cfg))
    assert result.exit_code == 2  # type: ignore[attr-defined]
    text = " ".join(result.output.split())  # type: ignore[attr-defined]
    assert "unknown metric 'pointing'" in text and "did you mean `pointing_game`" in text
    assert "valid: " + ", ".join(M.METRICS) in text


def test_xai_evaluate_runs_only_evaluate_and_refuses_stale_maps(evidence_run, tmp_path):
    cfg, run_dir, _ = evidence_run
    attribute = records(run_dir, "attribute")
    result = cli("evaluate", "--config", str(cfg), "--scheduler", "synchronous",
                 "--set", "evaluate.steps=3")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert records(run_dir, "attribute") == attribute
    assert _ds(run_dir).curve_deletion.shape[-1] == 4
    assert "evaluation: mean" in " ".join(result.output.split())  # type: ignore
    stale = cli("evaluate", "--config", str(cfg), "--set", "methods.gradient.abs=false")
    assert stale.exit_code == 2  # type: ignore[attr-defined]
    text = " ".join(stale.output.split())  # type: ignore[attr-defined]
    assert "Expected the attribute stage of gradient to be complete and current" in text
    assert "Run `xai run` with the same options first" in text
    assert records(run_dir, "attribute") == attribute  # nothing was touched
    missing = cli("evaluate", "--config", str(cfg), "--out", str(tmp_path / "nothing"))
    assert missing.exit_code == 2 and "there is no store" in missing.output  # type: ignore
    assert not (tmp_path / "nothing").exists()
