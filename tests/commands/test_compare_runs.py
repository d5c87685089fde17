"""``xai compare``: matching, the per-image and per-class figures, the known answers of
made-up runs (a planted change, a run against itself), the store, resuming after a kill."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.comparison.fake_runs import blob_maps, fake_run
from workflows.commands.compare_runs import (
    CompareError,
    CompareSettings,
    compare,
    match_images,
    plan_shards,
    summary_lines,
)

ROOT = Path(__file__).resolve().parents[2]
N = 60


class _Quiet:
    """A reporter that keeps what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def stage_start(self, *args: object) -> None:
        self.calls.append(("start", *args))

    def advance(self, stage: str, images: int) -> None:
        self.calls.append(("advance", images))

    def stage_end(self, stage: str) -> None:
        self.calls.append(("end",))


def _pred() -> np.ndarray:
    return np.arange(N) % 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A; B, whose class-0 images ("cat") put their relevance in a corner; A-again (A's maps
    in another image order)."""
    root = tmp_path_factory.mktemp("runs")
    pred = _pred()
    maps = blob_maps(N, methods=2, seed=0)
    strategy = np.stack([np.where(pred == 0, (np.arange(N) >= 30).astype(int), 0)] * 2)
    metric = np.random.default_rng(5).random((2, N))
    a = fake_run(root / "a", maps, pred, methods=("gradient", "integrated_gradients"),
                 shard=8, strategy=strategy, metric=metric)
    b = fake_run(root / "b", blob_maps(N, methods=2, seed=1, corner=pred == 0), pred,
                 methods=("gradient", "integrated_gradients"), shard=8, seed=1,
                 strategy=np.zeros((2, N), int), metric=metric + 1)
    order = np.random.default_rng(3).permutation(N)
    ids = [f"img/{i:04d}.png" for i in range(N)]
    again = fake_run(root / "again", maps[:, order], pred[order],
                     ids=[ids[i] for i in order], methods=("integrated_gradients",
                                                           "gradient")[::-1], shard=8,
                     normalized="uint16")
    return {"a": a, "b": b, "again": again, "root": root}


def _settings(**kw: object) -> CompareSettings:
    return CompareSettings(permutations=199, alpha=0.05, **kw)  # type: ignore[arg-type]


def test_images_are_matched_by_id_and_a_mismatch_says_how_many_differ() -> None:
    match = match_images(["x", "y", "z"], ["z", "x", "y"], shared=False)
    assert match.ids == ["x", "y", "z"]
    assert match.rows_b.tolist() == [1, 2, 0]
    with pytest.raises(CompareError, match=r"got 3 ids that differ: 1 only in A, 2 only in B"
                                           r".*--shared-images to compare the 2 images"):
        match_images(["x", "y", "w"], ["y", "x", "u", "v"], shared=False)
    shared = match_images(["x", "y", "w"], ["y", "x", "u", "v"], shared=True)
    assert shared.ids == ["x", "y"] and (shared.only_a, shared.only_b) == (1, 2)


def test_units_are_a_shards_with_their_compared_images() -> None:
    match = match_images([f"{i}" for i in range(10)], [f"{i}" for i in (9, 1, 2, 5)],
                         shared=True)
    plans = plan_shards(match, 4)
    assert [(p.index, p.rows_a.tolist(), p.out) for p in plans] == [
        (0, [1, 2], slice(0, 2)), (1, [5], slice(2, 3)), (2, [9], slice(3, 4))]


def test_a_run_against_itself_flags_no_class(runs: dict[str, Path], tmp_path: Path) -> None:
    summary = compare(runs["a"], runs["a"], tmp_path / "aa", _settings(), _Quiet())
    for per_method in summary["classes"].values():
        for rows in per_method.values():
            assert [r["changed"] for r in rows] == [False] * 3
            assert {r["p_value"] for r in rows} == {1.0}
    assert summary["differences"] == []
    ds = xr.open_zarr(tmp_path / "aa" / "compare.zarr", consolidated=False)
    assert np.allclose(ds.spearman.values, 1.0) and np.allclose(ds.iou.values, 1.0)
    assert not ds.pred_changed.values.any()
    assert np.array_equal(ds.metric_sparseness_a.values, ds.metric_sparseness_b.values)
    listed = json.loads((runs["a"] / "comparisons.json").read_text())
    assert [e["as"] for e in listed if e["path"] == str(tmp_path / "aa")] == ["A"]


def test_the_same_images_in_another_order_and_encoding_are_the_same(
        runs: dict[str, Path], tmp_path: Path) -> None:
    summary = compare(runs["a"], runs["again"], tmp_path / "again", _settings(), _Quiet())
    ds = xr.open_zarr(tmp_path / "again" / "compare.zarr", consolidated=False)
    assert ds.spearman.values.min() > 0.999  # uint16 rounding only
    assert not any(r["changed"] for rows in summary["classes"]["pred"].values() for r in rows)
    assert summary["metrics"] == []  # only A evaluated: nothing side by side


def test_a_planted_change_ranks_its_class_first_and_flags_it_alone(
        runs: dict[str, Path], tmp_path: Path) -> None:
    reporter = _Quiet()
    summary = compare(runs["a"], runs["b"], tmp_path / "ab", _settings(), reporter)
    for grouping in ("pred", "label"):
        for method, rows in summary["classes"][grouping].items():
            assert rows[0]["class"] == "cat", (grouping, method)
            assert rows[0]["changed"] and rows[0]["p_value"] == pytest.approx(1 / 200)
            assert [r["changed"] for r in rows[1:]] == [False, False]
    assert [d["key"] for d in summary["differences"]] == ["run.seed"]
    assert reporter.calls[0] == ("start", "compare", N, 0)
    assert sum(c[1] for c in reporter.calls if c[0] == "advance") == N


def test_every_one_of_many_changed_classes_is_flagged(tmp_path: Path) -> None:
    # 16 classes of 20 images, each with the change: Holm over 16 classes at alpha 0.01
    # needs a p of 1/1600, which 999 permutations cannot give; the count follows the classes
    # (3,199: half that p). 20 images: the observed signs come up again 2^-19 a draw.
    classes = [f"c{k}" for k in range(16)]
    pred = np.arange(320) % 16
    maps = blob_maps(320, size=8, seed=0)
    a = fake_run(tmp_path / "a", maps, pred, shard=64, classes=classes)
    b = fake_run(tmp_path / "b", blob_maps(320, size=8, seed=1, corner=np.ones(320, bool)),
                 pred, shard=64, seed=1, classes=classes)
    summary = compare(a, b, tmp_path / "ab", CompareSettings(), _Quiet())
    rows = summary["classes"]["pred"]["gradient"]
    assert len(rows) == 16 and all(r["changed"] for r in rows)
    assert [r["p_value"] for r in rows] == [pytest.approx(1 / 3200, abs=1e-6)] * 16
    assert "up to 3,199 permutations" in summary["test"]


def test_mean_maps_are_coarser_when_the_classes_do_not_fit_the_budget(
        runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compare(runs["a"], runs["b"], tmp_path / "full", _settings(), _Quiet())
    from pipeline.comparison import classes

    # 3 classes x 2 methods x 2 runs x 2 groupings of float64: 8 x 8 fits, 16 x 16 does not.
    monkeypatch.setattr(classes, "MEAN_MAP_BUDGET", 3 * 2 * 2 * 2 * 8 * 8 * 8)
    summary = compare(runs["a"], runs["b"], tmp_path / "coarse", _settings(), _Quiet())
    full = xr.open_zarr(tmp_path / "full" / "compare.zarr", consolidated=False)
    coarse = xr.open_zarr(tmp_path / "coarse" / "compare.zarr", consolidated=False)
    assert summary["mean_map_side"] == 8 and coarse.mean_a.shape[-2:] == (8, 8)
    blocks = full.label_mean_diff.values.reshape(2, 3, 8, 2, 8, 2).mean(axis=(3, 5))
    assert np.allclose(coarse.label_mean_diff.values, blocks, atol=1e-6)
    # The test runs on the per-image grid differences, whatever the mean maps' size.
    assert np.array_equal(full.p_value.values, coarse.p_value.values)


def test_the_store_opens_in_xarray_with_named_dims(runs: dict[str, Path],
                                                   tmp_path: Path) -> None:
    compare(runs["a"], runs["b"], tmp_path / "ab", _settings(), _Quiet())
    ds = xr.open_zarr(tmp_path / "ab" / "compare.zarr", consolidated=False)
    assert ds.spearman.dims == ("explainer", "image")
    assert ds.mean_diff.dims == ("explainer", "class", "y", "x")
    assert ds.label_p_value.dims == ("explainer", "class")
    assert ds.explainer.values.tolist() == ["gradient", "integrated_gradients"]
    assert ds["class"].values.tolist() == ["cat", "dog", "bird"]
    diff = ds.mean_diff.sel(explainer="gradient", **{"class": "cat"}).values
    a = ds.mean_a.sel(explainer="gradient", **{"class": "cat"}).values
    b = ds.mean_b.sel(explainer="gradient", **{"class": "cat"}).values
    assert np.allclose(diff, b - a)
    assert diff[-3:, -3:].mean() > 0 > diff[6:10, 6:10].mean()  # to the corner, from the centre
    assert np.allclose(ds.metric_sparseness_b - ds.metric_sparseness_a, 1.0)


def test_strategies_are_matched(runs: dict[str, Path], tmp_path: Path) -> None:
    summary = compare(runs["a"], runs["b"], tmp_path / "ab", _settings(), _Quiet())
    cat = {(r["kind"], r["cluster_a"], r["cluster_b"]) for r in summary["strategies"]
           if r["class"] == "cat" and r["explainer"] == "gradient"}
    assert cat == {("matched", 0, 0), ("disappeared", 1, -1)}


def test_methods_only_one_run_has_are_named(runs: dict[str, Path], tmp_path: Path) -> None:
    pred = _pred()
    c = fake_run(tmp_path / "c", blob_maps(N, methods=2), pred,
                 methods=("gradient", "grad_cam"), shard=8)
    summary = compare(runs["a"], c, tmp_path / "ac", _settings(), _Quiet())
    assert summary["explainers"] == ["gradient"]
    assert summary["skipped_explainers"] == {"a": ["integrated_gradients"], "b": ["grad_cam"]}
    assert any("only in B (not compared): grad_cam" in line for line in summary_lines(summary))


def test_each_run_lists_the_comparisons_made_from_it(runs: dict[str, Path],
                                                     tmp_path: Path) -> None:
    compare(runs["a"], runs["b"], tmp_path / "ab", _settings(), _Quiet())
    listed = json.loads((runs["b"] / "comparisons.json").read_text())
    assert {"path": str(tmp_path / "ab"), "as": "B", "other": str(runs["a"])} in listed


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workflows", "compare", *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, **(env or {})})


def test_the_command_refuses_different_images_with_the_flag_to_use(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from workflows.cli.app import app

    pred = _pred()
    fake_run(tmp_path / "a", blob_maps(N), pred, shard=8)
    fake_run(tmp_path / "b", blob_maps(N - 2), pred[:-2], shard=8)
    runner = CliRunner()
    res = runner.invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert res.exit_code == 2
    assert "2 only in A, 0 only in B" in res.output and "--shared-images" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    res = runner.invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "b"),
                              "--shared-images", "--permutations", "99"])
    assert res.exit_code == 0, res.output
    assert f"compared {N - 2} images" in res.output


def _store_arrays(path: Path) -> dict[str, np.ndarray]:
    ds = xr.open_zarr(path / "compare.zarr", consolidated=False)
    return {str(k): np.asarray(v.values) for k, v in ds.variables.items()}


@pytest.mark.slow
def test_a_comparison_killed_midway_finishes_with_the_same_store(runs: dict[str, Path],
                                                                tmp_path: Path) -> None:
    args = [str(runs["a"]), str(runs["b"]), "--permutations", "99", "--workers", "1"]
    whole = _cli(*args, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    env = {"XAI_FAULT": "compare:after-record:5", "XAI_COMPARE_CHECKPOINT_S": "0"}
    killed = _cli(*args, "--out", str(tmp_path / "resumed"), env=env)
    assert killed.returncode == -signal.SIGKILL
    resumed = _cli(*args, "--out", str(tmp_path / "resumed"))
    assert resumed.returncode == 0, resumed.stderr
    assert f"{N - 32} of {N} images to do ({32} done before)" in resumed.stderr
    want, got = _store_arrays(tmp_path / "whole"), _store_arrays(tmp_path / "resumed")
    assert sorted(want) == sorted(got)
    for name in want:
        assert np.array_equal(want[name], got[name], equal_nan=want[name].dtype.kind == "f"), name


@pytest.mark.parametrize(("key", "value", "says"), [
    ("top_fraction", 0.0, "Expected --top-fraction in (0, 1], got 0.0"),
    ("alpha", 1.0, "Expected --alpha in (0, 1), got 1.0"),
    ("permutations", 5, "Expected --permutations of at least 19")])
def test_settings_out_of_range_are_refused_naming_the_option(key: str, value: float,
                                                             says: str) -> None:
    with pytest.raises(CompareError, match=re.escape(says)):
        CompareSettings(**{key: value})  # type: ignore[arg-type]


def test_a_degenerate_run_is_said_before_any_figure(runs: dict[str, Path],
                                                    tmp_path: Path) -> None:
    """B's summary.json recorded a dead model: the comparison's summary, its console lines
    (before the methods and the classes) and the report's banner say so; A, with nothing
    recorded and nothing found in its store, has no flag."""
    import shutil

    dead = tmp_path / "dead"
    shutil.copytree(runs["a"], dead)
    message = "DEGENERATE MODEL: its output barely depends on the input (test)."
    (dead / "summary.json").write_text(json.dumps({"degenerate": [
        {"what": "constant_output", "methods": [], "measured": {}, "message": message}]}))
    summary = compare(runs["a"], dead, tmp_path / "cmp", _settings(), _Quiet())
    assert summary["flags"] == {"a": [], "b": [message]}
    lines = summary_lines(summary)
    flagged = lines.index(f"RUN B: {message}")
    assert flagged < next(i for i, line in enumerate(lines) if line.startswith("methods:"))
    page = (tmp_path / "cmp" / "report" / "index.html").read_text()
    assert f"Run B: {message}" in page


def test_class_differences_gives_each_classes_rows(tmp_path: Path) -> None:
    import zarr

    from workflows.commands.compare_runs import class_differences

    rng = np.random.default_rng(0)
    groups = rng.integers(-1, 5, 50)
    groups[groups == 3] = 2  # class 3 has no images
    values = rng.normal(size=(2, 50, 4)).astype(np.float32)
    arr = zarr.create_array(str(tmp_path / "g.zarr"), shape=values.shape, chunks=(1, 8, 4),
                            dtype=np.float32)
    arr[...] = values
    got = dict(class_differences(arr, 1, groups, 5, tmp_path / "scratch"))
    assert sorted(got) == [0, 1, 2, 3, 4]
    for cls, rows in got.items():
        assert np.array_equal(rows, values[1, groups == cls]), cls
    assert list((tmp_path / "scratch").iterdir()) == []  # the scratch file is gone


def test_too_few_permutations_for_any_flag_are_said_first(runs: dict[str, Path],
                                                          tmp_path: Path) -> None:
    # 3 classes at alpha 0.05: 19 permutations give p >= 1/20 = 0.05 > 0.05 / 3.
    summary = compare(runs["a"], runs["b"], tmp_path / "few",
                      CompareSettings(permutations=19, alpha=0.05), _Quiet())
    assert not any(r["changed"] for per in summary["classes"].values()
                   for rows in per.values() for r in rows)  # the planted change is missed
    assert len(summary["warnings"]) == 2  # by prediction and by label
    lines = summary_lines(summary)
    first = next(i for i, line in enumerate(lines) if line.startswith("TOO FEW PERMUTATIONS"))
    assert first < next(i for i, line in enumerate(lines) if line.startswith("methods:"))
    assert "no class can be flagged" in lines[first] and "Leave --permutations out" in lines[first]
    page = (tmp_path / "few" / "report" / "index.html").read_text()
    assert "TOO FEW PERMUTATIONS" in page
    enough = compare(runs["a"], runs["b"], tmp_path / "enough", _settings(), _Quiet())
    assert enough["warnings"] == []
