"""Through the CLI: the target class (prediction or label), the IG baseline, and how well the
maps add up (relative completeness error in the run summary and in `xai status`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr

from pipeline.attribution.baselines import make_baseline
from pipeline.attribution.method_registry import (
    METHODS,
    attribute,
    image_seed,
    relative_completeness_error,
)
from pipeline.data.class_names import synset_to_index
from pipeline.data.images import from_uint8_hwc, normalize
from pipeline.models.classifier import load_model
from tests.workflow_helpers import cli, make_images, run_ok, write_config
from workflows.runner.stage_api import NO_LABEL

WNIDS = {"img0": "n01440764", "img2": "n01443537"}  # img1 has no label


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory):
    """Three images, two of them labelled in a LOC_val_solution.csv; target = label; Captum IG
    from a uniform baseline, our IG from a blur."""
    tmp = tmp_path_factory.mktemp("target")
    root = tmp / "images"
    make_images(root, n=3, broken=False)
    (root / "sub" / "img2.png").rename(root / "img2.png")
    (root / "sub").rmdir()
    rows = ["ImageId,PredictionString"] + [f"{k},{v} 1 2 3 4" for k, v in WNIDS.items()]
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    cfg = write_config(
        tmp / "c.toml", root, tmp / "runs", shard_size=2,
        methods=("gradient", "integrated_gradients", "custom_integrated_gradients"),
        params={"integrated_gradients": {"n_steps": 4, "baseline": '"uniform"'},
                "custom_integrated_gradients": {"n_steps": 4, "baseline": '"blur"',
                                                "baseline_sigma": 2.0}},
        run_extra='target = "label"\ncompleteness_warning = 0.05')
    cfg.write_text(cfg.read_text().replace('layout = "plain"', 'layout = "flat-csv"'))
    result = run_ok(cfg)
    return cfg, tmp / "runs" / "c", result.output  # type: ignore[attr-defined]


def _dataset(run_dir):
    return xr.open_zarr(run_dir / "store.zarr", consolidated=False)


def test_label_target_explains_the_label_and_skips_unlabelled_images(labelled_run):
    cfg, run_dir, output = labelled_run
    ds = _dataset(run_dir)
    ids = ds.image.values.tolist()
    assert ids == ["img0.png", "img1.png", "img2.png"]
    assert ds.attrs["target"] == "label"
    text = " ".join(output.split())
    assert f"img1.png: {NO_LABEL}" in text and "(2 explained, 1 skipped)" in text
    labels = ds.label.values
    assert labels[1] == -1 and labels[0] == synset_to_index()[WNIDS["img0"]]
    raw = ds.raw.sel(explainer="gradient").values
    assert np.isnan(raw[1]).all() and np.isfinite(raw[[0, 2]]).all()
    # The stored gradient is the label's, not the prediction's.
    model = load_model("random", "softmax", seed=0).model
    x = normalize(from_uint8_hwc(ds.pixels.values[[0, 2]]))
    target = torch.as_tensor(labels[[0, 2]].astype(np.int64))
    assert not torch.equal(target, torch.as_tensor(ds.pred.values[[0, 2]].astype(np.int64)))
    expected, _, _ = attribute(METHODS["gradient"], model, x, target, {"abs": True}, 8)
    np.testing.assert_allclose(raw[[0, 2]], expected.numpy(), rtol=1e-5, atol=1e-7)
    status = cli("status", "--config", str(cfg))
    assert f"img1.png: {NO_LABEL}" in " ".join(status.output.split())  # type: ignore


def test_baselines_are_recorded_and_delta_is_against_the_baseline_used(labelled_run):
    _, run_dir, _ = labelled_run
    ds = _dataset(run_dir)
    assert ds.attrs["baselines"] == {"integrated_gradients": "uniform",
                                     "custom_integrated_gradients":
                                         "blur (Gaussian, sigma=2 px)"}
    model = load_model("random", "softmax", seed=0).model
    rows = [0, 2]
    x = normalize(from_uint8_hwc(ds.pixels.values[rows]))
    target = torch.as_tensor(ds.label.values[rows].astype(np.int64))
    seeds = [image_seed(0, i) for i in rows]
    for method, params in (("integrated_gradients", {"baseline": "uniform"}),
                           ("custom_integrated_gradients",
                            {"baseline": "blur", "baseline_sigma": 2.0})):
        base = make_baseline(params["baseline"], x, params, seeds)
        with torch.no_grad():
            gap = (model(x) - model(base))[range(2), target].double().numpy()
        stored_gap = ds.gap.sel(explainer=method).values[rows]
        np.testing.assert_allclose(stored_gap, gap, rtol=1e-4, atol=1e-7)
        raw = ds.raw.sel(explainer=method).values[rows].astype(np.float64)
        delta = ds.delta.sel(explainer=method).values[rows]
        np.testing.assert_allclose(delta, raw.reshape(2, -1).sum(1) - gap, rtol=1e-3,
                                   atol=1e-6)
    assert np.isnan(ds.gap.sel(explainer="gradient").values).all()


def test_run_summary_and_status_report_completeness(labelled_run):
    cfg, run_dir, output = labelled_run
    ds = _dataset(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    by_method = {c["method"]: c for c in summary["completeness"]}
    assert set(by_method) == {"integrated_gradients", "custom_integrated_gradients"}
    text = " ".join(output.split())
    assert "completeness" in text
    for method, c in by_method.items():
        rel = relative_completeness_error(ds.delta.sel(explainer=method).values,
                                          ds.gap.sel(explainer=method).values)
        assert c["images"] == 2
        assert c["median"] == pytest.approx(float(np.nanmedian(rel)))
        assert c["worst"] == pytest.approx(float(np.nanmax(rel)))
        assert f"{100 * c['median']:.2f}%" in text
    # Every map flagged below a tiny threshold, none above a huge one: status reads the store.
    flagged = cli("status", "--config", str(cfg), "--set", "run.completeness_warning=1e-9")
    flat = " ".join(flagged.output.split())  # type: ignore[attr-defined]
    assert "4 maps miss completeness by more than 1e-07% ([run] completeness_warning)" in flat
    assert "integrated_gradients img0.png:" in flat and "n_steps" in flat
    calm = cli("status", "--config", str(cfg), "--set", "run.completeness_warning=1e9")
    assert "maps miss completeness" not in calm.output  # type: ignore[attr-defined]


def test_random_weights_shown_by_status_and_datasets(labelled_run, monkeypatch):
    cfg, _, _ = labelled_run
    status = cli("status", "--config", str(cfg))
    assert "this run used random weights (random:seed=0)" in " ".join(status.output.split())
    monkeypatch.setenv("XAI_CONFIG_DIR", str(cfg.parent))
    datasets = cli("datasets")
    text = " ".join(datasets.output.split())  # type: ignore[attr-defined]
    assert "c: the run in" in text and "used random weights (random:seed=0)" in text


def test_target_and_baseline_values_are_checked(tmp_path):
    root = tmp_path / "images"
    make_images(root, n=1, broken=False)
    cfg = write_config(tmp_path / "c.toml", root, tmp_path / "runs")
    bad = cli("run", "--config", str(cfg), "--set", "run.target=truth")
    assert bad.exit_code == 2  # type: ignore[attr-defined]
    assert "one of predicted, label, got 'truth'" in bad.output  # type: ignore
    bad = cli("run", "--config", str(cfg), "--set",
              "methods.integrated_gradients.baseline=white")
    assert bad.exit_code == 2  # type: ignore[attr-defined]
    assert "expected baseline to be one of black, blur, uniform, mean, got 'white'" \
        in bad.output  # type: ignore
