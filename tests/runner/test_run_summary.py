"""Honest timings: busy time beside the span, the command's own wall time, and figures that
survive a rerun that recomputes nothing."""

from __future__ import annotations

import json
import subprocess
import sys

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
