"""``xai status``: images as the unit, and a run in progress named from its lock."""

from __future__ import annotations

import os

from tests.workflow_helpers import cli, make_images, run_ok, write_config
from workflows.state import RunLock


def test_status_counts_images_and_says_a_run_is_in_progress(tmp_path):
    make_images(tmp_path / "images", n=5, broken=False)
    config = write_config(tmp_path / "tiny.toml", tmp_path / "images", tmp_path / "runs",
                          methods=["gradient"], shard_size=2)
    run_ok(config)
    run_dir = tmp_path / "runs" / "tiny"
    quiet = cli("status", str(run_dir))
    assert quiet.exit_code == 0, quiet.output
    assert "in progress" not in quiet.output
    rows = [line for line in quiet.output.splitlines() if "attribute" in line]
    assert rows and all(" 5 " in row for row in rows)  # 5 images of 5, not 3 shards of 3
    assert "images done" in quiet.output
    with RunLock(run_dir):  # as a running `xai run` holds it
        busy = cli("status", str(run_dir))
    assert busy.exit_code == 0, busy.output
    assert "a run is in progress" in busy.output and f"pid {os.getpid()}" in busy.output


def test_a_cpu_stage_alone_prints_no_weights_warning(tmp_path):
    make_images(tmp_path / "images", n=2, broken=False)
    config = write_config(tmp_path / "tiny.toml", tmp_path / "images", tmp_path / "runs",
                          methods=["gradient"], report=True)
    text = config.read_text().replace('weights = "random"', 'weights = "auto"')
    config.write_text(text)
    run_ok(config)
    report = cli("report", "--config", str(config))
    assert report.exit_code == 0, report.output
    assert "warning" not in report.output.lower(), report.output
