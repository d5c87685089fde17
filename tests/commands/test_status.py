"""``xai status``: images as the unit, and a run in progress named from its lock."""

from __future__ import annotations

import os

from tests.workflow_helpers import cli, make_images, run_ok, write_config
from workflows.runner.run_lock import RunLock


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


def _equivalence_run(tmp_path):
    make_images(tmp_path / "images", n=5)  # and one broken file: a skipped image
    config = write_config(tmp_path / "tiny.toml", tmp_path / "images", tmp_path / "runs",
                          methods=["gradient", "integrated_gradients",
                                   "custom_integrated_gradients"],
                          params={"integrated_gradients": {"n_steps": 3},
                                  "custom_integrated_gradients": {
                                      "rule": '"adaptive"', "n_steps": 3, "tolerance": 1e-6,
                                      "max_steps": 6}},
                          run_extra="completeness_warning = 0.0001\n")
    run_ok(config)
    return config, tmp_path / "runs" / "tiny"


def test_status_from_the_records_equals_status_from_the_store(tmp_path, monkeypatch):
    """Skipped images and completeness come from the records: the same answer as the arrays
    give, and no chunk but the flagged images' ids is read."""
    from pipeline.store.access import open_store
    from workflows.commands import status as status_module
    from workflows.config.loading import load_config
    from workflows.runner.completion_records import Records
    from workflows.runner.run_summary import completeness_summary, skipped_images
    from workflows.stages import REGISTRY

    config, run_dir = _equivalence_run(tmp_path)
    cfg = load_config(config)
    group = open_store(run_dir / "store.zarr", mode="r")
    expected_skipped = [(i, w) for i, w in skipped_images(group, cfg.run.target) if w]
    expected = completeness_summary(group, cfg.method_names, cfg.run.completeness_warning)
    assert expected_skipped and len(expected) == 2 and expected[0].flagged
    assert expected[1].adaptive is not None

    def refuse(*args, **kwargs):
        raise AssertionError("status read the arrays")

    with monkeypatch.context() as m:
        m.setattr(status_module, "skipped_images", refuse)
        m.setattr(status_module, "completeness_summary", refuse)
        st = status_module.run_status(cfg)
    assert st.skipped == expected_skipped
    assert [c.to_dict() for c in st.completeness] == [c.to_dict() for c in expected]

    # Records from before they kept these facts: status reads the store, same answer.
    recs = Records(run_dir)
    for folder in recs.folders("attribute") + recs.folders("ingest"):
        recs.put_all({k: {kk: vv for kk, vv in r.items()
                          if kk not in ("per_image", "skipped", "unlabelled")}
                      for k, r in recs.entries(folder).items()})
    old = status_module.run_status(cfg, REGISTRY)
    assert old.skipped == expected_skipped
    assert [c.to_dict() for c in old.completeness] == [c.to_dict() for c in expected]


def test_verify_a_sample_checks_that_many_and_finds_damage_in_it(tmp_path):
    import shutil

    from workflows.commands.verify import verify
    from workflows.config.loading import load_config

    make_images(tmp_path / "images", n=5, broken=False)
    config = write_config(tmp_path / "tiny.toml", tmp_path / "images", tmp_path / "runs",
                          methods=["gradient"], shard_size=1)
    run_ok(config)
    cfg = load_config(config)
    full = verify(cfg, repair=False)
    assert full.checked == full.finished > 10 and not full.damaged
    sampled = verify(cfg, repair=False, sample=4, seed=1)
    assert sampled.checked == 4 and sampled.finished == full.finished
    shutil.rmtree(tmp_path / "runs" / "tiny" / "store.zarr" / "raw" / "c")  # every raw chunk
    hits = verify(cfg, repair=False, sample=full.finished, seed=2)
    assert {(stage, i) for stage, i, _ in hits.damaged} == {("attribute/gradient", i)
                                                            for i in range(5)}
    line = cli("verify", "--check-only", "--sample", "3", "--config", str(config))
    assert line.exit_code in (0, 1) and "drawn at random of" in line.output, line.output
    assert "shards" in line.output
