"""The evaluate stage through the CLI: stored metrics equal the library's on the stored maps,
random maps give the floor, localisation without masks is NaN with a note, and a change of
[evaluate] settings recomputes evaluate alone. Its units are per (method, shard), with the
random floor one shared unit per shard: a change to one method re-evaluates that method
alone, and the floor never."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import xarray as xr

from pipeline.evaluation import metrics as M
from tests.workflow_helpers import (
    ROOT,
    cli,
    finished,
    make_images,
    records,
    run_ok,
    write_config,
)
from workflows.stages.evaluate import random_maps

ALL = ["deletion", "insertion", "relevance_mass_accuracy", "relevance_rank_accuracy",
       "pointing_game", "sparseness"]
METHODS = ("gradient", "integrated_gradients")
#: The evaluate records of the six-image, two-shard run: the floor's, then each method's.
UNITS = ["000000", "000001"] + [f"{m}/{i:06d}" for m in METHODS for i in (0, 1)]


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
    from pipeline.data.images import from_uint8_hwc, normalize
    from pipeline.models.classifier import load_model
    from workflows.config.loading import load_config

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
    assert sorted(records(run_dir, "evaluate")) == UNITS  # every unit, the floor's too


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


# ------------------------------------------------------------------ units per (method, shard)


@pytest.fixture()
def ev_copy(evidence_run, tmp_path):
    """A copy of the evidence run for one test, its config pointing at the copy, brought up
    to date with that config (earlier tests ran it with other settings)."""
    cfg, run_dir, _ = evidence_run
    shutil.copytree(run_dir.parent, tmp_path / "runs", symlinks=True)
    copy = tmp_path / "ev.toml"
    copy.write_text(cfg.read_text().replace(str(run_dir.parent), str(tmp_path / "runs")))
    run_ok(copy)
    return copy, tmp_path / "runs" / "ev"


def _evaluation(run_dir) -> xr.Dataset:
    """The evaluate stage's arrays, loaded."""
    ds = _ds(run_dir)
    names = [v for v in ds.data_vars if str(v).startswith(EVALUATION_PREFIXES)]
    return ds[names].load()


EVALUATION_PREFIXES = ("metric_", "random_", "curve_", "randomisation")


def test_one_unit_per_method_and_shard_and_one_floor_per_shard(evidence_run):
    _, run_dir, _ = evidence_run
    recs = records(run_dir, "evaluate")
    assert sorted(recs) == UNITS
    for key, rec in recs.items():
        assert rec["images"] == 3 and rec["checksum"] and rec["compute_seconds"] > 0, key


def test_changing_one_method_re_evaluates_that_method_alone(ev_copy):
    cfg, run_dir = ev_copy
    before, old = finished(run_dir, "evaluate"), _evaluation(run_dir)
    run_ok(cfg, "--set", "methods.integrated_gradients.n_steps=3")
    after, new = finished(run_dir, "evaluate"), _evaluation(run_dir)
    assert sorted(after) == UNITS
    assert sorted(k for k in after if after[k] != before[k]) == [
        "integrated_gradients/000000", "integrated_gradients/000001"]
    for name in old.data_vars:
        if "explainer" in old[name].dims:
            np.testing.assert_array_equal(new[name].sel(explainer="gradient"),
                                          old[name].sel(explainer="gradient"), err_msg=name)
        else:  # the random floor: not recomputed, not touched
            np.testing.assert_array_equal(new[name], old[name], err_msg=name)
    ig = {"explainer": "integrated_gradients"}
    assert not np.array_equal(new.metric_sparseness.sel(ig), old.metric_sparseness.sel(ig))


def test_removing_a_method_moves_the_others_evaluation_and_reruns_nothing(ev_copy):
    cfg, run_dir = ev_copy
    before, old = finished(run_dir, "evaluate"), _evaluation(run_dir)
    cfg.write_text(cfg.read_text().replace("[methods.gradient]\n", ""))
    run_ok(cfg)
    new = _evaluation(run_dir)
    assert new.explainer.values.tolist() == ["integrated_gradients"]  # moved to slot 0
    assert finished(run_dir, "evaluate") == {k: v for k, v in before.items()
                                             if not k.startswith("gradient/")}
    for name in old.data_vars:
        kept = old[name].sel(explainer=["integrated_gradients"]) \
            if "explainer" in old[name].dims else old[name]
        np.testing.assert_array_equal(new[name], kept, err_msg=name)
    check = cli("verify", "--config", str(cfg))
    assert check.exit_code == 0, check.output  # type: ignore[attr-defined]


def test_the_evaluation_equals_the_all_at_once_evaluation(evidence_run, monkeypatch):
    """What the stage computed per shard for all methods and the random maps at once (one
    call of each metric on every map), the per-(method, shard) units store too."""
    cfg_path, run_dir, _ = evidence_run
    from pipeline.data.images import from_uint8_hwc, normalize
    from pipeline.models.classifier import load_model
    from workflows.config.loading import load_config

    cfg = load_config(cfg_path)
    monkeypatch.setenv("XAI_CACHE_DIR", str(run_dir.parent.parent / "cache"))
    net = load_model("evidence", "softmax", evidence=cfg.evidence_settings()).backbone
    ds = _ds(run_dir)
    steps = ds.curve_deletion.shape[-1] - 1  # whichever earlier test ran last
    reps = len(METHODS) + 1
    maps = np.concatenate([ds.aggregated.sel(explainer=m).values for m in METHODS]
                          + [random_maps(range(6), (32, 32), cfg.run.seed)])
    masks = np.tile(ds.mask.values, (reps, 1, 1))
    x = normalize(from_uint8_hwc(ds.pixels.values), cfg.normalization()).repeat(reps, 1, 1, 1)
    targets = torch.as_tensor(np.tile(ds.pred.values.astype(np.int64), reps))
    for name in ALL:
        spec = M.METRICS[name]
        stored = np.concatenate([ds[f"metric_{name}"].sel(explainer=m).values for m in METHODS]
                                + [ds[f"random_{name}"].values])
        if spec.needs_model:
            score, curves = spec.fn(lambda z: net(z).float().softmax(1), x, maps, targets,
                                    steps=steps, baseline="black", max_batch=32)
            stored_curves = np.concatenate(
                [ds[f"curve_{name}"].sel(explainer=m).values for m in METHODS]
                + [ds[f"random_curve_{name}"].values])
            np.testing.assert_allclose(stored_curves, curves, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(stored, score, rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            score = spec.fn(maps, masks) if spec.needs_mask else spec.fn(maps)
            np.testing.assert_array_equal(stored, score.astype(np.float32), err_msg=name)


def test_planning_one_method_change_touches_that_methods_units_alone(evidence_run):
    from workflows.config.loading import load_config
    from workflows.runner.stage_api import Unit
    from workflows.stages import REGISTRY

    path = evidence_run[0]

    def changed(*sets: str, weights: str = "w") -> list[str | None]:
        a = REGISTRY.hashes(load_config(path), "w")
        b = REGISTRY.hashes(load_config(path, sets), weights)
        return [m for (s, m) in a if s == "evaluate" and a[(s, m)] != b[(s, m)]]

    assert changed("methods.integrated_gradients.n_steps=3") == ["integrated_gradients"]
    assert changed("evaluate.randomisation_images=1") == list(METHODS)  # not the floor
    assert changed("evaluate.steps=2") == [None, *METHODS]
    assert changed(weights="other") == [None, *METHODS]  # the model: through predict
    cfg = load_config(path)
    floor = REGISTRY.dependencies(Unit("evaluate", None, 1, 3, 6), cfg, 6)
    assert sorted(u.key for u in floor) == ["ingest/000001", "predict/000001"]
    unit = REGISTRY.dependencies(Unit("evaluate", "gradient", 1, 3, 6), cfg, 6)
    assert sorted(u.key for u in unit) == ["aggregate/gradient/000001", "ingest/000001",
                                           "predict/000001"]
    report = REGISTRY.dependencies(Unit("report", None, 0, 0, 3), cfg, 6)
    assert {u.key for u in report if u.stage == "evaluate"} == {
        "evaluate/000000", "evaluate/gradient/000000", "evaluate/integrated_gradients/000000"}


def test_a_per_method_stage_writing_per_shard_arrays_needs_a_shared_unit():
    from pipeline.store.schema import SCHEMA, ArrayFamily
    from workflows.runner.stage_api import Stage, Unit
    from workflows.runner.stage_registry import RegistryError, StageRegistry

    schema = SCHEMA.extended(
        ArrayFamily("x_floor", ("image",), "float32", np.nan, "per shard"),
        ArrayFamily("x_score", ("explainer", "image"), "float32", np.nan, "per method",
                    split_explainer=True))

    class PerMethod(Stage):
        name = "permethod"
        per_method = True
        writes = ("x_floor", "x_score")

    with pytest.raises(RegistryError, match=r"\['x_floor'\], which have no explainer axis"):
        StageRegistry([PerMethod()], schema)

    class Shared(PerMethod):
        shared = True

    stage = StageRegistry([Shared()], schema)["permethod"]
    assert [f.name for f in stage.unit_families(Unit("permethod", None, 0, 0, 1))] == \
        ["x_floor"]
    assert [f.name for f in stage.unit_families(Unit("permethod", "gradient", 0, 0, 1))] == \
        ["x_score"]

    class SharedAlone(Stage):
        name = "alone"
        shared = True

    with pytest.raises(RegistryError, match="shared = True only with per_method = True"):
        StageRegistry([SharedAlone()], schema)


def test_status_and_the_report_read_the_per_method_evaluation(ev_copy):
    from workflows.commands.status import run_status
    from workflows.config.loading import load_config

    cfg, run_dir = ev_copy
    rows = {(s.stage, s.method): s for s in run_status(load_config(cfg)).stages}
    for method in (None, *METHODS):  # the floor's row, then one per method
        row = rows[("evaluate", method)]
        assert row.done == row.total > 0 and row.stale == 0, method
    stale = {(s.stage, s.method): s for s in run_status(
        load_config(cfg, ["methods.integrated_gradients.n_steps=3"])).stages}
    for method in (None, "gradient"):
        row = stale[("evaluate", method)]
        assert row.done == row.total and row.stale == 0, method
    row = stale[("evaluate", "integrated_gradients")]
    assert row.done == 0 and row.stale == row.total
    shown = cli("status", "--config", str(cfg))
    floor = [line for line in shown.output.splitlines()  # type: ignore[attr-defined]
             if "evaluate" in line and "random maps (floor)" in line]
    assert len(floor) == 1, shown.output  # type: ignore[attr-defined]
    result = cli("report", "--config", str(cfg), "--set", "report.enabled=true",
                 "--scheduler", "synchronous")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    page = (run_dir / "report" / "summary.html").read_text()
    summary = json.loads((run_dir / "evaluation.json").read_text())
    for name in ALL:
        assert name in page
        assert all(summary["metrics"][name]["methods"][m]["n"] > 0 for m in METHODS)
        assert summary["metrics"][name]["random"]["n"] == 6


def test_the_trained_evidence_model_is_never_flagged_as_degenerate(evidence_run):
    """Trained on 32 images only, its output still depends on its input: no finding, no
    banner, nothing on the console."""
    _, run_dir, output = evidence_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["degenerate"] == []
    for flag in ("DEGENERATE", "ZERO OUTPUT GAPS", "ZERO MAPS"):
        assert flag not in output
