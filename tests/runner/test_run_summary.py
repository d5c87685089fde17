"""Honest timings: busy time beside the span, the command's own wall time, and figures that
survive a rerun that recomputes nothing; degenerate output flagged, a random resnet18 not."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from tests.workflow_helpers import ROOT, cli, make_images, run_ok, write_config
from workflows.runner.run_summary import StageStats


def test_img_per_s_comes_from_busy_time_not_the_span():
    st = StageStats("aggregate", units_total=4, units_run=4, images_run=8, seconds=355.7,
                    busy_seconds=0.8)
    assert st.img_per_s == 10.0
    entry = st.to_dict("2026-12-02T10:00:00")
    assert entry["busy_seconds"] == 0.8 and entry["span_seconds"] == 355.7
    assert entry["computed_by_run"] == "2026-12-02T10:00:00"


def test_a_no_op_rerun_keeps_the_figures_of_the_run_that_did_the_work(tmp_path):
    make_images(tmp_path / "images", n=3, broken=False)
    config = write_config(tmp_path / "tiny.toml", tmp_path / "images", tmp_path / "runs",
                          methods=["gradient", "integrated_gradients"], report=True)
    run_ok(config)
    path = tmp_path / "runs" / "tiny" / "summary.json"
    first = json.loads(path.read_text())
    worked = {e["stage"]: e for e in first["stages"]}
    assert worked["attribute"]["units_run"] == worked["attribute"]["units_total"] > 0
    for entry in worked.values():
        assert entry["busy_seconds"] > 0
        assert entry["computed_by_run"] == first["run_at"]
    again = run_ok(config)
    assert "nothing was recomputed" in again.output
    second = json.loads(path.read_text())
    kept = {e["stage"]: e for e in second["stages"]}
    assert kept == worked  # the no-op rerun erased nothing
    assert [h["run_at"] for h in second["history"]] == [first["run_at"], second["run_at"]]
    assert sum(second["history"][-1]["units_run"].values()) == 0
    report = (tmp_path / "runs" / "tiny" / "report" / "summary.html").read_text()
    assert first["run_at"] in report  # the figures of the run that computed the stages
    units = worked["attribute"]["units_total"]
    assert f"<td>{units}/{units}</td>" in report.replace(" ", "")


def test_the_whole_run_time_is_the_commands_wall_time(tmp_path):
    make_images(tmp_path / "images", n=2, broken=False)
    config = write_config(tmp_path / "tiny.toml", tmp_path / "images", tmp_path / "runs",
                          methods=["gradient"])
    result = run_ok(config)
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    busy = sum(e["busy_seconds"] for e in summary["stages"])
    assert summary["seconds"] >= busy  # start-up and loading are in it
    assert "wall time of this command" in result.output


def test_a_no_op_rerun_never_imports_torch(tmp_path):
    """The records say everything is current: the rerun plans from the saved config, the
    weights' identity and the store, and ends without importing torch."""
    make_images(tmp_path / "images", n=2, broken=False)
    config = write_config(tmp_path / "tiny.toml", tmp_path / "images", tmp_path / "runs",
                          methods=["gradient"])
    run_ok(config)
    code = ("import sys; from workflows.cli.app import app; sys.argv = ['xai', 'run', "
            f"'--config', {str(config)!r}];\n"
            "try:\n    app()\nexcept SystemExit as end:\n    assert not end.code, end.code\n"
            "print('torch imported:', 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing was recomputed" in done.stdout
    assert "torch imported: False" in done.stdout


def test_a_changed_config_still_loads_the_model_and_recomputes(tmp_path):
    make_images(tmp_path / "images", n=2, broken=False)
    config = write_config(tmp_path / "tiny.toml", tmp_path / "images", tmp_path / "runs",
                          methods=["gradient"])
    run_ok(config)
    changed = cli("run", "--config", str(config), "--scheduler", "synchronous", "--set",
                  "methods.gradient.abs=false")
    assert changed.exit_code == 0, changed.output
    assert "nothing was recomputed" not in changed.output


def _mobilenet_run(tmp_path):
    """A run of a randomly initialised ``mobilenet_v3_small(num_classes=10)`` checkpoint:
    logits about 1e-10, every probability 0.10, every softmax gap exactly 0."""
    import torch
    import torchvision

    make_images(tmp_path / "images", n=5, broken=False)
    torch.manual_seed(0)
    torch.save(torchvision.models.mobilenet_v3_small(num_classes=10).state_dict(),
               tmp_path / "mob.pt")
    (tmp_path / "classes.txt").write_text("".join(f"c{i}\n" for i in range(10)))
    config = write_config(tmp_path / "tiny.toml", tmp_path / "images", tmp_path / "runs",
                          methods=["gradient", "integrated_gradients"], report=True)
    config.write_text(config.read_text().replace(
        'weights = "random"', f'arch = "mobilenet_v3_small"\nweights = "{tmp_path}/mob.pt"\n'
        f'classes = "{tmp_path}/classes.txt"'))
    return run_ok(config)


def test_a_dead_model_is_flagged_on_the_console_in_the_summary_status_sheets_and_report(
        tmp_path):
    import zarr

    from workflows.stages.render import sheet_degeneracy

    result = _mobilenet_run(tmp_path)
    run_dir = tmp_path / "runs" / "tiny"
    summary = json.loads((run_dir / "summary.json").read_text())
    found = {f["what"]: f for f in summary["degenerate"]}
    assert list(found) == ["constant_output", "zero_gap"]
    output = found["constant_output"]["measured"]
    assert output["images"] == 5 and output["logprob_spread"] < 1e-8
    assert output["largest_logit"] < 1e-8 and output["threshold"] == 1e-4
    assert found["zero_gap"]["methods"] == ["integrated_gradients"]
    assert found["zero_gap"]["measured"]["largest_gap_integrated_gradients"] == 0.0
    console = " ".join(result.output.split())
    assert "DEGENERATE MODEL: its output barely depends on the input" in console
    assert ("ZERO OUTPUT GAPS: F(x) = F(baseline) within 1e-06 for all 5 images with "
            "integrated_gradients") in console
    # The completeness table says why it has no errors rather than disappearing.
    assert summary["completeness"] == [{
        "method": "integrated_gradients", "images": 0, "median": None, "worst": None,
        "worst_image": "", "threshold": 0.05, "flagged": [], "adaptive": None,
        "zero_gap": 5}]
    assert "undefined: F(x) = F(baseline) for 5 images" in console
    status = " ".join(cli("status", str(run_dir)).output.split())
    assert "DEGENERATE MODEL: its output barely depends on the input" in status
    assert "integrated_gradients: undefined: F(x) = F(baseline) for 5 images" in status
    report = (run_dir / "report" / "summary.html").read_text()
    assert 'class="banner bad">DEGENERATE MODEL: its output barely depends' in report
    assert "undefined: F(x) = F(baseline) for 5 images" in report
    group = zarr.open_group(str(run_dir / "store.zarr"), mode="r")
    maps = np.ones((4, 2, 2, 2), dtype=np.float32)
    assert sheet_degeneracy(group, ["gradient", "integrated_gradients"], slice(0, 4),
                            np.ones(4, dtype=bool), maps) == (
        "DEGENERATE OUTPUT: the model's output does not depend on its input; F(x) = "
        "F(baseline) for every image (integrated_gradients). The maps mean nothing.")
    maps[:, 0] = 0.0
    assert "all maps zero (gradient)" in str(sheet_degeneracy(
        group, ["gradient", "integrated_gradients"], slice(0, 4), np.ones(4, dtype=bool),
        maps))


def test_a_random_resnet18_is_not_flagged(tmp_path):
    make_images(tmp_path / "images", n=3, broken=False)
    config = write_config(tmp_path / "tiny.toml", tmp_path / "images", tmp_path / "runs",
                          methods=["gradient", "integrated_gradients"])
    result = run_ok(config)
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert summary["degenerate"] == []
    assert "DEGENERATE" not in result.output
    assert "zero_gap" not in summary["completeness"][0]


def test_zero_maps_are_found_in_a_float16_store_too(tmp_path):
    """A 16-bit store keeps its maps as ``raw_float16``: the check reads them decoded, so
    a method whose maps are all zero is flagged whatever the store's encoding."""
    import numpy as np
    import zarr

    from pipeline.store.schema import SCHEMA
    from pipeline.store.view import StoreView
    from tests.store.test_backend import CROP, NAMES, N, make_store
    from workflows.runner.run_summary import degeneracy_summary

    path = make_store(tmp_path / "s.zarr", "float16", "float32")
    group = zarr.open_group(str(path), mode="r+")
    assert "raw" not in group and "raw_float16" in group
    SCHEMA.create(group, "logits", {"image": N, "class_name": 3}, 3)
    view = StoreView(path)
    view.write("logits", slice(0, N),
               np.random.default_rng(0).standard_normal((N, 3)).astype(np.float32))
    view.write_maps("raw", 0, slice(0, N), np.zeros((N, 3, CROP, CROP), np.float32))
    found = degeneracy_summary(zarr.open_group(str(path), mode="r"), path, NAMES)
    assert [(f["what"], f["methods"]) for f in found] == [("zero_maps", [NAMES[0]])]
