"""The report: its encodings, its atomic folder, and the stage on tiny runs."""

from __future__ import annotations

import json
import re
import signal
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.attribution.registry import DEFAULT_METHODS
from pipeline.report import pages as rp
from tests.workflow_helpers import (
    cli,
    make_images,
    records,
    run_ok,
    run_subprocess,
    units_run,
    write_config,
)
from workflows.runner.records import Records

XSS = "<img src=x onerror=alert(1)>.png"


def _payload(path: Path) -> dict:
    """The JSON inside a ``data/*.js`` script."""
    text = path.read_text()
    return json.loads(text[text.index("(", text.index("push")) + 1:text.rindex(")")]) \
        if "push(" in text else json.loads(text.split("=", 1)[1].strip().rstrip(";"))


# --------------------------------------------------------------------------- encodings


def test_script_json_cannot_close_a_tag_and_stays_json() -> None:
    value = {"id": "</script><script>alert(1)</script>", "q": "\"'&é猫", "n": None}
    text = rp.script_json(value)
    assert "<" not in text and ">" not in text and "&" not in text
    assert text.isascii()
    assert json.loads(text) == value


def test_script_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        rp.script_json({"x": float("nan")})
    assert rp.finite(float("nan")) is None
    assert rp.finite(0.123456789) == 0.12346


def test_data_script_names_a_variable() -> None:
    assert rp.data_script("XAI_X", [1]) == b"window.XAI_X = [1];\n"
    assert rp.data_script("XAI_S", {"a": 1}, append=True).startswith(
        b"(window.XAI_S = window.XAI_S || []).push(")
    with pytest.raises(ValueError, match="identifier"):
        rp.data_script("a; alert(1)", 1)


def test_colormap_filter_tables_are_the_colormap() -> None:
    from pipeline.render.heatmaps import colormap_lut

    svg = rp.svg_filters(["viridis"], default="gray")
    lut = colormap_lut("viridis") / 255.0
    red = re.search(r'id="cmap-viridis".*?<feFuncR type="table" tableValues="([^"]+)"', svg)
    assert red is not None
    values = [float(v) for v in red.group(1).split()]
    assert len(values) == rp.TABLE_SIZE
    assert values[0] == pytest.approx(lut[0, 0], abs=1e-3)
    assert values[-1] == pytest.approx(lut[255, 0], abs=1e-3)
    assert 'id="cmap-default"' in svg


def test_map_png_is_the_grey_level_of_the_map() -> None:
    from io import BytesIO

    from PIL import Image

    values = np.array([[0.0, 0.5], [1.0, np.nan]], dtype=np.float32)
    img = Image.open(BytesIO(rp.map_png(values)))
    assert img.mode == "L"
    assert np.asarray(img).tolist() == [[0, 128], [255, 0]]


@pytest.mark.parametrize("images,shard,px", [(100, 32, 224), (70, 32, 32), (5, 2, 32),
                                             (1000, 300, 224)])
def test_every_image_has_one_tile_place_and_a_sprite_holds_whole_tiles(images, shard, px):
    tiles = rp.sprite_tiles(px, shard)
    assert tiles * px <= rp.SPRITE_PX and 1 <= tiles <= shard
    seen = {}
    for i in range(images):
        at = rp.tile_place(i, shard, images, tiles)
        assert 0 <= at.pos < at.count <= tiles
        seen.setdefault((at.shard, at.part), []).append(at.pos)
        assert at.shard * shard + at.part * tiles + at.pos == i
    for (sh, part), positions in seen.items():  # a sprite's tiles: 0..count-1, each once
        count = rp.tile_place(sh * shard + part * tiles, shard, images, tiles).count
        assert positions == list(range(count))


def test_a_static_page_places_a_tile_by_a_class_its_stylesheet_defines() -> None:
    sprites = rp.Sprites(shard_size=4, images=10, px=32)
    img = sprites.img(rp.map_kind(1), 9, "image <10>")  # shard 2 holds images 8 and 9
    assert 'class="sp t2-1"' in img and 'src="img/m1/000002-0.png"' in img
    assert "image &lt;10&gt;" in img and "loading=lazy" in img and "style=" not in img
    css = sprites.css()  # full shards: sprites of 4 tiles; the last shard's: 2
    assert "img.sp.t2-1{object-position:0 100%}" in css
    assert "img.sp.t4-0{object-position:0 0%}" in css
    assert "img.sp.t4-2{object-position:0 66.6667%}" in css
    assert css.count("{") == 4 + 2
    assert rp.sprite_position(0, 1) == "0%"


# --------------------------------------------------------------------------- the folder


def _folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "index.html").write_text(text)
    return path


def test_publish_replaces_the_folder_whole(tmp_path: Path) -> None:
    target = _folder(tmp_path / "report", "old")
    build = rp.build_folder(target)
    (build / "index.html").write_text("new")
    rp.publish(build, target)
    assert (target / "index.html").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_publish_without_an_atomic_exchange(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(rp, "_exchange", lambda a, b: False)
    target = _folder(tmp_path / "report", "old")
    build = rp.build_folder(target)
    (build / "index.html").write_text("new")
    rp.publish(build, target)
    assert (target / "index.html").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_recover_puts_the_old_report_back_after_a_crash_between_renames(tmp_path: Path) -> None:
    target = tmp_path / "report"
    _folder(rp.old_path(target), "old")          # renamed away, the new one never arrived
    _folder(tmp_path / ".report.build-123", "half")  # a build killed half-way
    rp.recover(target)
    assert (target / "index.html").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_link_tree_links_every_file_but_temporaries(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "a" / "b" / "x.png").write_bytes(b"x")
    (src / "a" / ".x.png.tmp").write_bytes(b"torn")
    assert rp.link_tree(src, tmp_path / "dst") == 1
    assert (tmp_path / "dst" / "a" / "b" / "x.png").read_bytes() == b"x"
    assert not (tmp_path / "dst" / "a" / ".x.png.tmp").exists()


# --------------------------------------------------------------------------- the stage


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
            assert (report / rp.sprite_path(rp.CROP, r["i"] // 2, 0)).is_file()
            for j in range(len(manifest["methods"])):
                assert (report / rp.sprite_path(rp.map_kind(j), r["i"] // 2, 0)).is_file()
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
        at = rp.tile_place(i, shard, len(pixels), rp.sprite_tiles(px, shard))
        rows = slice(at.pos * px, (at.pos + 1) * px)
        crop = np.asarray(Image.open(report / rp.sprite_path(rp.CROP, at.shard, at.part)))
        alone = np.asarray(Image.open(BytesIO(rp.crop_jpeg(pixels[i])))).astype(int)
        error = np.abs(crop[rows].astype(int) - pixels[i]).mean()
        assert error <= np.abs(alone - pixels[i]).mean() + 1.0, (i, error)
        for j in range(normalized.shape[0]):
            grey = np.asarray(Image.open(
                report / rp.sprite_path(rp.map_kind(j), at.shard, at.part)))
            np.testing.assert_array_equal(
                grey[rows], rp.grey_levels(display_values(normalized[j, i], style)))


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


# --------------------------------------------------------------------------- which method


class _Tables(HTMLParser):
    """Every ``<table>`` of a page as rows of ``(tag, attrs, text)`` cells, with each row's
    attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[tuple[dict, list[tuple[str, dict, str]]]]] = []
        self._cell: list | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append((dict(attrs), []))
        elif tag in ("td", "th") and self.tables and self.tables[-1]:
            self._cell = [tag, dict(attrs), ""]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1][1].append((self._cell[0], self._cell[1], self._cell[2].strip()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell[2] += data


def _tables(text: str) -> list:
    parser = _Tables()
    parser.feed(text)
    return parser.tables


def _stat(mean: float | None, half: float = 0.01, n: int = 6) -> dict:
    if mean is None:
        return {"mean": None, "low": None, "high": None, "n": 0}
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def _curve(*means: float) -> dict:
    groups = ["fc", "layer4", "layer3", "layer2", "layer1+conv1+bn1"]
    return {g: _stat(m, 0.05) for g, m in zip(groups, means, strict=False)}


EVALUATION = {
    "metrics": {
        "deletion": {"better": "lower", "description": "AUC as pixels are removed",
                     "methods": {"gradient": _stat(0.30), "custom_gradient": _stat(0.20),
                                 "integrated_gradients": _stat(0.25)},
                     "random": _stat(0.31, 0.02)},
        "sparseness": {"better": "higher", "description": "Gini index",
                       "methods": {"gradient": _stat(0.40), "custom_gradient": _stat(0.60),
                                   "integrated_gradients": _stat(None)},
                       "random": _stat(0.35)},
    },
    "randomisation": {"gradient": _curve(0.64, 0.6, 0.55, 0.52, 0.51),
                      "custom_gradient": _curve(-0.8, 0.6, 0.2, 0.1, 0.0),
                      "integrated_gradients": _curve(-0.10, 0.0, 0.0, 0.0, 0.0)},
    "notes": [],
}
SIGNS = {"gradient": "absolute", "custom_gradient": "signed", "integrated_gradients": "signed"}


def test_the_overview_has_a_row_per_method_the_floor_and_the_best_per_column() -> None:
    verdicts = rp.sanity_verdicts(EVALUATION)
    rows = _tables(rp.overview_table(EVALUATION, SIGNS, verdicts))[0]
    header = [c[2] for c in rows[0][1]]
    assert header[:2] == ["method", "map"]
    assert header[2].startswith("deletion") and "↓ lower is better" in header[2]
    assert header[3].startswith("sparseness") and "↑ higher is better" in header[3]
    assert header[4].startswith("model randomisation")
    body = {r[0]["data-method"]: r[1] for r in rows[1:]}
    assert list(body) == ["gradient", "custom_gradient", "integrated_gradients", "random"]
    assert body["random"][0][2] == "random maps (floor)"
    best = {h: [m for m, cells in body.items() if "best" in cells[k][1].get("class", "")]
            for k, h in ((2, "deletion"), (3, "sparseness"))}
    assert best == {"deletion": ["custom_gradient"], "sparseness": ["custom_gradient"]}
    assert body["custom_gradient"][2][2].startswith("★ 0.2 [0.19, 0.21]")
    assert "chance" in body["gradient"][2][1]["class"], "0.30 lies in the floor's interval"
    assert body["integrated_gradients"][3][2] == "—"
    assert [body[m][1][2] for m in SIGNS] == ["absolute", "signed", "signed"]
    assert body["gradient"][4][2] == "does not depend on the model"
    assert body["custom_gradient"][4][2] == "lower layers only"
    assert body["integrated_gradients"][4][2] == "depends on the model"


def test_the_sanity_verdict_uses_the_absolute_correlation_and_a_documented_line() -> None:
    assert rp.SANITY_THRESHOLD == 0.5
    v = rp.sanity_verdicts(EVALUATION)
    assert v["integrated_gradients"].kind == "depends"
    assert "-0.10 [-0.15, -0.05]" in v["integrated_gradients"].sentence
    assert "(fc)" in v["integrated_gradients"].sentence
    # A map that flips its sign (-0.8) keeps its structure: it falls below the line later.
    assert v["custom_gradient"].kind == "lower" and "layer3" in v["custom_gradient"].sentence
    assert v["gradient"].kind == "independent"
    stuck = rp.sanity_verdict("guided_backprop", _curve(0.9, 0.9, 0.8, 0.7, 0.6))
    assert stuck.kind == "independent" and "do not depend on the model" in stuck.sentence
    assert "layer1, conv1, bn1" in stuck.sentence and "0.60 [0.55, 0.65]" in stuck.sentence
    assert rp.sanity_verdict("x", {"fc": _stat(None)}).kind == "untested"
    assert rp.sanity_verdict("x", _curve(0.64), threshold=0.7).kind == "depends"
    for m, verdict in v.items():
        assert verdict.sentence.startswith(f"{m}: ")


def test_the_sign_caveat_appears_only_where_signed_and_unsigned_maps_are_mixed() -> None:
    caveat = rp.sign_caveat(SIGNS)
    assert caveat is not None
    assert "custom_gradient, integrated_gradients" in caveat and "gradient: absolute" in caveat
    assert rp.sign_caveat({"a": "signed", "b": "signed"}) is None
    assert rp.sign_caveat({"a": "absolute", "b": "non-negative"}) is None
    page = rp.summary_page("t", [], {}, None, EVALUATION, [], [], [], SIGNS)
    assert 'id=sign-caveat' in page
    alone = rp.summary_page("t", [], {}, None, EVALUATION, [], [], [],
                            dict.fromkeys(SIGNS, "signed"))
    assert "sign-caveat" not in alone


def test_the_summary_page_puts_the_answer_before_the_run_facts() -> None:
    page = rp.summary_page("t", [("dataset", "d")], {}, None, EVALUATION, [], [], [], SIGNS,
                           "plots/randomisation.png")
    order = [page.index(s) for s in ("Which method to trust", "Sanity check: model "
                                     "randomisation", "<h2>Run</h2>", "metric by metric")]
    assert order == sorted(order)
    assert '<img src="plots/randomisation.png"' in page
    sentences = re.findall(r'<li class="verdict (\w+)" data-method="(\w+)">', page)
    assert sorted(m for _k, m in sentences) == sorted(SIGNS)
    sanity = _tables(page)[1]
    assert [c[2] for c in sanity[0][1]][:3] == ["method", "trained", "fc"]
    assert [c[2] for c in sanity[0][1]][-1] == "+ layer1, conv1, bn1"
    bare = rp.summary_page("t", [], {}, None, {}, [], [], [], SIGNS)
    assert "Not evaluated" in bare and "[evaluate]" in bare


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


def test_a_mask_outline_is_the_masks_border() -> None:
    from io import BytesIO

    from PIL import Image

    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 2:6] = True
    edge = rp.mask_outline(mask)
    ring = mask.copy()
    ring[3:5, 3:5] = False
    np.testing.assert_array_equal(edge, ring)
    assert rp.mask_outline(mask, width=2)[2:6, 2:6].all()
    img = Image.open(BytesIO(rp.outline_png(rp.outline_rgba(mask))))
    assert img.mode == "RGBA"
    alpha = np.asarray(img)[..., 3]
    np.testing.assert_array_equal(alpha > 0, ring)


def test_the_randomisation_figure_draws_every_method_or_nothing() -> None:
    from pipeline.render.figures import randomisation_figure

    fig = randomisation_figure(EVALUATION["randomisation"], 0.5)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert all(m in labels for m in EVALUATION["randomisation"])
    assert randomisation_figure({}, 0.5) is None
    assert randomisation_figure({"a": {"fc": _stat(None)}}, 0.5) is None


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
        sprite = np.asarray(Image.open(report / rp.sprite_path(rp.OUTLINE, r["i"] // 3, 0)))
        outline = sprite[(r["i"] % 3) * px:(r["i"] % 3 + 1) * px]
        np.testing.assert_array_equal(outline[..., 3] > 0, rp.mask_outline(mask[r["i"]]))


def test_stale_parts_go_per_shard_and_a_tile_a_file_folders_of_older_reports_all(
        tmp_path: Path) -> None:
    from workflows.stages.report import Report, parts_dir

    parts = parts_dir(tmp_path)
    old = parts / "img" / "c" / "000000"  # a report made before sprites: a file per image
    old.mkdir(parents=True)
    (old / "000000.jpg").write_bytes(b"x")
    for shard in (0, 1):
        for kind in (rp.CROP, rp.map_kind(0)):
            path = parts / rp.sprite_path(kind, shard, 0)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
    removed = Report().remove_stale(tmp_path, valid={0})
    assert not old.exists(), "its shards are all rebuilt as sprites"
    assert (parts / rp.sprite_path(rp.CROP, 0, 0)).is_file()
    assert (parts / rp.sprite_path(rp.map_kind(0), 0, 0)).is_file()
    assert not (parts / rp.sprite_path(rp.CROP, 1, 0)).exists()
    assert not (parts / rp.sprite_path(rp.map_kind(0), 1, 0)).exists()
    assert removed == 3
