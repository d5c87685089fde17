"""``xai clean``: asks before removing a run, removes its lock, clears a stage and every
stage after it, and names the argument the user typed."""

from __future__ import annotations

import pytest

from tests.workflow_helpers import cli, make_images, records, run_ok, write_config


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clean")
    make_images(tmp / "images", n=2, broken=False)
    config = write_config(tmp / "tiny.toml", tmp / "images", tmp / "runs",
                          methods=["gradient"], report=True)
    run_ok(config)
    return config, tmp / "runs" / "tiny"


def _records(run_dir, stage):
    return sorted(records(run_dir, stage))


def test_removing_a_whole_run_without_a_terminal_needs_yes(reported):
    config, run_dir = reported
    refused = cli("clean", "--config", str(config))
    assert refused.exit_code == 2
    assert "Expected --yes to remove the whole run" in refused.output
    assert (run_dir / "store.zarr").is_dir()  # nothing removed


def test_clean_stage_clears_it_and_every_stage_after_it_the_report_included(reported):
    config, run_dir = reported
    assert _records(run_dir, "report") and _records(run_dir, "render")
    done = cli("clean", "render", "--config", str(config))
    assert done.exit_code == 0, done.output
    assert "cleared render, evaluate, report" in done.output
    assert not _records(run_dir, "render") and not _records(run_dir, "report")
    assert _records(run_dir, "normalize")
    run_ok(config)  # and the run builds them again
    assert _records(run_dir, "render") and _records(run_dir, "report")


def test_errors_name_the_argument_typed(reported, tmp_path):
    config, _ = reported
    bogus = cli("clean", "bogus", "--config", str(config))
    assert bogus.exit_code == 2
    assert "Expected STAGE to be one of ingest, predict" in bogus.output
    assert "--force" not in bogus.output
    not_a_run = cli("clean", str(tmp_path), "--yes")
    assert not_a_run.exit_code == 2
    assert f"Expected a run folder at {tmp_path}" in not_a_run.output
    assert "config.toml" in not_a_run.output


def test_the_run_folder_alone_names_the_run_and_yes_removes_it_with_its_lock(tmp_path):
    make_images(tmp_path / "images", n=2, broken=False)
    config = write_config(tmp_path / "tiny.toml", tmp_path / "images", tmp_path / "runs",
                          methods=["gradient"])
    run_ok(config)
    run_dir = tmp_path / "runs" / "tiny"
    assert (run_dir / "run.lock").exists() and (run_dir / "config.toml").is_file()
    stage = cli("clean", str(run_dir), "normalize")
    assert stage.exit_code == 0 and "cleared normalize, render" in stage.output
    gone = cli("clean", str(run_dir), "--yes")
    assert gone.exit_code == 0, gone.output
    assert not run_dir.exists()  # the lock and the folder too
