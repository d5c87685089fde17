"""The report stage on tiny runs: its folder, its incremental shards, its pages."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.attribution.method_registry import DEFAULT_METHODS
from pipeline.report.sprites import CROP, OUTLINE, map_kind, sprite_path, sprite_tiles, tile_place
from pipeline.report.tile_files import crop_jpeg, grey_levels, mask_outline
from tests.report.html_tables import _tables
from tests.workflow_helpers import (
    cli,
    make_images,
    records,
    run_ok,
    run_subprocess,
    units_run,
    write_config,
)
from workflows.runner.completion_records import Records

XSS = "<img src=x onerror=alert(1)>.png"


def _payload(path: Path) -> dict:
    """The JSON inside a ``data/*.js`` script."""
    text = path.read_text()
    return json.loads(text[text.index("(", text.index("push")) + 1:text.rindex(")")]) \
        if "push(" in text else json.loads(text.split("=", 1)[1].strip().rstrip(";"))


def _tiny(tmp_path: Path, names: list[str] | None = None, extra: str = "",
          methods: tuple[str, ...] = ("gradient", "integrated_gradients")
          ) -> tuple[Path, Path]:
    make_images(tmp_path / "images", n=5)
    for name in names or []:
        (tmp_path / "images" / name).write_bytes((tmp_path / "images" / "img0.png").read_bytes())
    config = write_config(tmp_path / "tiny.toml", tmp_path / "images", tmp_path / "runs",
                          extra=extra, methods=methods, report=True)
    return config, tmp_path / "runs" / "tiny"


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("report")
    config, run_dir = _tiny(tmp, [XSS, "quote\"d 'é' 猫.png"], methods=DEFAULT_METHODS)
    result = run_ok(config)
    assert "report: clustering" in result.output  # type: ignore[attr-defined]
    return config, run_dir


def test_the_report_holds_every_image_with_relative_paths_only(tiny_report) -> None:
    _config, run_dir = tiny_report
    report = run_dir / "report"
    for name in ("index.html", "summary.html", "strategies.html", "assets/gallery.js",
                 "assets/report.css", "data/manifest.js"):
        assert (report / name).is_file(), name
    manifest = _payload(report / "data" / "manifest.js")
    rows = [r for s in manifest["shards"] for r in _payload(report / s["file"])["rows"]]
    assert [r["i"] for r in rows] == list(range(8))
    assert sum(r["st"] == "ok" for r in rows) == 7  # broken.jpg is skipped, with its reason
    skipped = next(r for r in rows if r["st"] != "ok")
    assert skipped["id"] == "broken.jpg" and not skipped["c"] and not any(skipped["m"])
    for r in rows:
        if r["st"] == "ok":  # shards of 2, 32 px: one sprite of 2 tiles a shard and kind
            assert (report / sprite_path(CROP, r["i"] // 2, 0)).is_file()
            for j in range(len(manifest["methods"])):
                assert (report / sprite_path(map_kind(j), r["i"] // 2, 0)).is_file()
    texts = [p.read_text() for p in report.rglob("*") if p.suffix in (".html", ".js", ".css")]
    for text in texts:
        assert not re.search(r"""(src|href)\s*=\s*["']?(/|[a-z]+:)""", text), \
            "every path is relative to the report folder"
        assert "http://" not in text and "https://" not in text


def test_each_tile_of_a_sprite_is_the_image_s_crop_and_map(tiny_report) -> None:
    # The sprite's row k of each kind is image k of its shard: the crop (JPEG: as close as
    # the crop alone as a JPEG) and the map's grey levels (PNG: exact), from the store.
    import dataclasses
    from io import BytesIO

    from PIL import Image

    from pipeline.render.heatmaps import display_values
    from workflows.config.loading import load_config
    from workflows.runner.stage_api import sheet_style

    config, run_dir = tiny_report
    cfg = load_config(config)
    report = run_dir / "report"
    group = zarr.open_group(str(run_dir / "store.zarr"), mode="r")
    pixels, status = np.asarray(group["pixels"][:]), np.asarray(group["status"][:])
    normalized = np.asarray(group["normalized"][:])
    style = dataclasses.replace(sheet_style(cfg), signed=False)
    px, shard = pixels.shape[1], cfg.run.shard_size
    files = [p for p in (report / "img").glob("*/*") if p.is_file()]  # not img/s/: means
    shards = -(-len(pixels) // shard)
    kinds = 2 + normalized.shape[0]  # crops, outlines (none here), a kind per method
    assert len(files) <= shards * kinds, "a file per shard and kind, not per image"
    for i in range(len(pixels)):
        if str(status[i]) != "ok":
            continue
        at = tile_place(i, shard, len(pixels), sprite_tiles(px, shard))
        rows = slice(at.pos * px, (at.pos + 1) * px)
        crop = np.asarray(Image.open(report / sprite_path(CROP, at.shard, at.part)))
        alone = np.asarray(Image.open(BytesIO(crop_jpeg(pixels[i])))).astype(int)
        error = np.abs(crop[rows].astype(int) - pixels[i]).mean()
        assert error <= np.abs(alone - pixels[i]).mean() + 1.0, (i, error)
        for j in range(normalized.shape[0]):
            grey = np.asarray(Image.open(
                report / sprite_path(map_kind(j), at.shard, at.part)))
            np.testing.assert_array_equal(
                grey[rows], grey_levels(display_values(normalized[j, i], style)))


def test_names_are_escaped_everywhere(tiny_report) -> None:
    _config, run_dir = tiny_report
    report = run_dir / "report"
    for path in report.rglob("*"):
        if path.suffix in (".html", ".js") and path.parent.name != "assets":
            assert "<img src=x" not in path.read_text(), path
    ids = [r["id"] for s in (report / "data").glob("shard-*.js") for r in _payload(s)["rows"]]
    assert XSS in ids and "quote\"d 'é' 猫.png" in ids
    assert all("<img" not in p.name for p in report.rglob("*")), "names never become paths"


def test_the_store_holds_the_strategy_array(tiny_report) -> None:
    _config, run_dir = tiny_report
    group = zarr.open_group(str(run_dir / "store.zarr"), mode="r")
    strategy = group["strategy"]
    assert strategy.dtype == np.int16
    assert tuple(strategy.metadata.dimension_names) == ("explainer", "image")
    assert strategy.shape == (5, 8)
    assert (np.asarray(strategy[:]) == -1).all()  # 8 images: no class reaches min_images


def test_the_summary_page_has_the_run_facts(tiny_report) -> None:
    _config, run_dir = tiny_report
    text = (run_dir / "report" / "summary.html").read_text()
    for fact in ("RANDOM WEIGHTS", "Stage timings", "Package versions", "config hash",
                 "Completeness of the Integrated Gradients methods", "broken.jpg",
                 "plots/completeness.png"):
        assert fact in text, fact
    assert (run_dir / "report" / "plots" / "completeness.png").is_file()
    assert "<img src=x" not in text
    # built inside the run, before summary.json has the run's total: the time so far
    wall = re.search(r"This command had run for ([0-9.]+) s of wall time when it built", text)
    assert wall and float(wall.group(1)) > 0, "the wall-time sentence"


def test_a_rerun_rebuilds_nothing_and_a_changed_shard_alone(tiny_report) -> None:
    config, run_dir = tiny_report
    data = run_dir / "report-parts" / "data"
    before = {p.name: p.stat().st_mtime_ns for p in data.glob("shard-*.js")}
    result = run_ok(config)
    assert "report" not in units_run(result.output)  # type: ignore[attr-defined]
    Records(run_dir).drop("report/000001")  # as if shard 1's inputs had changed
    result = run_ok(config)
    assert units_run(result.output)["report"] == "1/4"  # type: ignore[attr-defined]
    after = {p.name: p.stat().st_mtime_ns for p in data.glob("shard-*.js")}
    assert [k for k in before if before[k] != after[k]] == ["shard-000001.js"]


def test_report_of_a_run_with_missing_stages_says_so_and_is_rebuilt(tmp_path: Path) -> None:
    config, run_dir = _tiny(tmp_path)
    run_ok(config, "--set", "report.enabled=false")
    Records(run_dir).clear("normalize")
    result = cli("report", "--config", str(config), "--scheduler", "synchronous")
    assert result.exit_code == 0, result.output
    assert "stages missing" in result.output
    assert "normalize (6 of 6 units missing)" in result.output
    manifest = _payload(run_dir / "report" / "data" / "manifest.js")
    assert any("normalize" in n for n in manifest["notes"])
    summary = (run_dir / "report" / "summary.html").read_text()
    assert "Stages missing" in summary and "normalize (6 of 6 units missing)" in summary
    assert not Records(run_dir).in_folder("report"), "built from incomplete inputs: unrecorded"
    run_ok(config)  # completes normalize, then the report again
    manifest = _payload(run_dir / "report" / "data" / "manifest.js")
    assert not any("missing" in n for n in manifest["notes"])
    assert len(Records(run_dir).in_folder("report")) == 3


def test_a_run_whose_images_were_all_skipped_gets_a_report_that_says_so(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    for k in range(3):
        (tmp_path / "images" / f"bad{k}.jpg").write_bytes(b"not an image")
    config = write_config(tmp_path / "bad.toml", tmp_path / "images", tmp_path / "runs",
                          report=True)
    run_ok(config)
    report = tmp_path / "runs" / "bad" / "report"
    manifest = _payload(report / "data" / "manifest.js")
    assert any("All 3 images were skipped" in n for n in manifest["notes"])
    assert "All 3 images were skipped" in (report / "summary.html").read_text()


def test_report_disabled_and_the_report_command_explains(tmp_path: Path) -> None:
    config, run_dir = _tiny(tmp_path, extra="\n[report]\nenabled = false\n")
    run_ok(config)
    assert not (run_dir / "report").exists()
    result = cli("report", "--config", str(config))
    assert result.exit_code != 0
    assert "enabled = false" in result.output and "report.enabled=true" in result.output


def _stamp(run_dir: Path) -> str:
    return json.loads((run_dir / "report" / "data" / "build.json").read_text())["stamp"]


@pytest.mark.slow
def test_a_report_killed_while_publishing_leaves_the_old_one(tmp_path: Path) -> None:
    config, run_dir = _tiny(tmp_path)
    run_ok(config)
    old = (run_dir / "report" / "data" / "manifest.js").read_bytes()
    old_stamp = _stamp(run_dir)
    change = ("--set", "render.clip_percentile=90")  # new tiles: every report shard again
    proc = run_subprocess("run", "--config", str(config), "--scheduler", "synchronous",
                          *change, env={"XAI_FAULT": "report:before-publish"})
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == -signal.SIGKILL, output
    assert (run_dir / "report" / "data" / "manifest.js").read_bytes() == old
    assert _stamp(run_dir) == old_stamp
    assert list(run_dir.glob(".report.build-*")), "the killed build's folder is left over"
    assert len(Records(run_dir).in_folder("report")) == 3, "its shards were recorded"
    result = run_ok(config, *change)  # nothing left to compute, but the report is old
    assert "report: clustering" in result.output  # type: ignore[attr-defined]
    assert _stamp(run_dir) != old_stamp
    assert not list(run_dir.glob(".report*")), "the left-over build folder is removed"
    assert "report: clustering" not in run_ok(config, *change).output  # type: ignore[attr-defined]


def test_the_report_command_refuses_a_config_that_changes_the_run(tmp_path: Path) -> None:
    config, run_dir = _tiny(tmp_path)
    run_ok(config)
    before = records(run_dir, "attribute")
    result = cli("report", "--config", str(config), "--set",
                 "methods.integrated_gradients.n_steps=7")
    assert result.exit_code != 0
    assert "attribute/integrated_gradients" in result.output
    assert "drop the --set" in result.output
    after = records(run_dir, "attribute")
    assert before == after, "nothing was purged"
    ok = cli("report", "--config", str(config), "--set", "report.max_clusters=3")
    assert ok.exit_code == 0, ok.output


def test_method_signs_follow_each_methods_parameters(tmp_path: Path) -> None:
    from workflows.config.loading import load_config
    from workflows.stages.report import method_signs

    methods = ("gradient", "smoothgrad", "custom_gradient", "integrated_gradients", "grad_cam")
    path = write_config(tmp_path / "s.toml", tmp_path, tmp_path / "runs", methods=methods)
    signs = method_signs(load_config(path))
    assert signs == {"gradient": "absolute", "smoothgrad": "absolute",
                     "custom_gradient": "signed", "integrated_gradients": "signed",
                     "grad_cam": "non-negative"}
    path.write_text(path.read_text().replace("[methods.custom_gradient]",
                                             "[methods.custom_gradient]\nabsolute = true"))
    assert method_signs(load_config(path))["custom_gradient"] == "absolute"


def evaluated_config(tmp: Path) -> tuple[Path, Path]:
    """Six 32-px evidence images (masks), random weights, an absolute and two signed
    methods, three metrics and the randomisation test on two images, with the report."""
    from tests.workflow_helpers import ROOT

    extra = ('\n[evaluate]\nmetrics = ["deletion", "relevance_mass_accuracy", "sparseness"]\n'
             "steps = 4\nrandomisation_images = 2\nbootstrap = 100\n")
    cfg = write_config(tmp / "ev.toml", ROOT / "data" / "sample", tmp / "runs", shard_size=3,
                       methods=("gradient", "integrated_gradients", "custom_gradient"),
                       extra=extra, report=True)
    cfg.write_text(cfg.read_text().replace('layout = "plain"', 'layout = "evidence"\ncount = 6')
                   .replace("resize = 40", "resize = 32"))
    return cfg, tmp / "runs" / "ev"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    config, run_dir = evaluated_config(tmp_path_factory.mktemp("evaluated"))
    run_ok(config)
    return run_dir


def test_the_evaluated_runs_summary_says_which_method_to_trust(evaluated) -> None:
    report = evaluated / "report"
    page = (report / "summary.html").read_text()
    methods = ["gradient", "integrated_gradients", "custom_gradient"]
    overview = _tables(page)[0]
    assert [r[0]["data-method"] for r in overview[1:]] == [*methods, "random"]
    evaluation = json.loads((evaluated / "evaluation.json").read_text())
    for k, name in enumerate(evaluation["metrics"]):
        column = [cells[2 + k] for _attrs, cells in overview[1:-1]]
        marked = [c for c in column if "best" in c[1].get("class", "")]
        assert marked, name
        means = [evaluation["metrics"][name]["methods"][m]["mean"] for m in methods]
        top = max(means) if evaluation["metrics"][name]["better"] == "higher" else min(means)
        assert all(c[2].startswith(f"★ {top:.3g}") for c in marked)
    verdicts = re.findall(r'<li class="verdict \w+" data-method="(\w+)">\1: ', page)
    assert verdicts == methods, "one sentence per method"
    assert "id=sign-caveat" in page, "gradient (absolute) beside custom_gradient (signed)"
    assert (report / "plots" / "randomisation.png").read_bytes()[:4] == b"\x89PNG"
    assert page.index("Which method to trust") < page.index("<h2>Run</h2>")
    assert "metric by metric (12 rows)" in page, "the detail is kept"


def test_evidence_images_get_a_mask_outline_and_compact_metric_names(evaluated) -> None:
    report = evaluated / "report"
    manifest = _payload(report / "data" / "manifest.js")
    assert [m["short"] for m in manifest["metrics"]] == ["del", "mass", "sparse"]
    assert [m["sign"] for m in manifest["methods"]] == ["absolute", "signed", "signed"]
    rows = [r for s in manifest["shards"] for r in _payload(report / s["file"])["rows"]]
    assert len(rows) == 6 and all(r["o"] for r in rows)
    group = zarr.open_group(str(evaluated / "store.zarr"), mode="r")
    mask = np.asarray(group["mask"][:])
    from PIL import Image

    px = mask.shape[1]
    for r in rows:  # shards of 3: the tile is row r["i"] % 3 of its shard's sprite
        sprite = np.asarray(Image.open(report / sprite_path(OUTLINE, r["i"] // 3, 0)))
        outline = sprite[(r["i"] % 3) * px:(r["i"] % 3 + 1) * px]
        np.testing.assert_array_equal(outline[..., 3] > 0, mask_outline(mask[r["i"]]))


def test_stale_parts_go_per_shard_and_a_tile_a_file_folders_of_older_reports_all(
        tmp_path: Path) -> None:
    from workflows.stages.report import Report, parts_dir

    parts = parts_dir(tmp_path)
    old = parts / "img" / "c" / "000000"  # a report made before sprites: a file per image
    old.mkdir(parents=True)
    (old / "000000.jpg").write_bytes(b"x")
    for shard in (0, 1):
        for kind in (CROP, map_kind(0)):
            path = parts / sprite_path(kind, shard, 0)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
    removed = Report().remove_stale(tmp_path, valid={0})
    assert not old.exists(), "its shards are all rebuilt as sprites"
    assert (parts / sprite_path(CROP, 0, 0)).is_file()
    assert (parts / sprite_path(map_kind(0), 0, 0)).is_file()
    assert not (parts / sprite_path(CROP, 1, 0)).exists()
    assert not (parts / sprite_path(map_kind(0), 1, 0)).exists()
    assert removed == 3
