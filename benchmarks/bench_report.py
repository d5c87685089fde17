"""Report benchmark: build the report of 1,000 images x 5 methods from maps that exist, and
time its first screen in headless Chromium.

The maps are made here (seeded photo-like crops, smooth heavy-tailed maps, 224 px, 30
predicted classes so that SpRAy clusters them) and written to a real store; then the
report stage's shard tasks run in ``workers`` processes, as a local cluster runs them, and the
coordinator's step (clustering, pages, publication) follows. Nothing but the report is timed.

Run alone with ``python -m benchmarks.bench_report [images] [workers]``; ``xai bench`` runs it
with 1,000 images (``--quick``: 64).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.attribution.method_registry import DEFAULT_METHODS as METHODS


def _config(out: Path, images: int, shard_size: int) -> Any:
    from workflows.config.loading import load_config
    from workflows.config.paths import config_dir

    return load_config(config_dir() / "synthetic.toml",
                       [f"dataset.count={images}", f"run.shard_size={shard_size}",
                        f"run.out={out}"])


def make_store(cfg: Any, images: int, size: int = 224, seed: int = 0) -> Path:
    """A store whose maps exist: every array the report reads, filled shard by shard."""
    from PIL import Image, ImageFilter

    from pipeline.models.classifier import class_names
    from pipeline.store.access import create_store
    from pipeline.store.arrays import array
    from pipeline.store.axes import resize_explainers
    from workflows.stages import REGISTRY

    run_dir = cfg.run_dir
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    ids = [f"bench/{i:06d}.jpg" for i in range(images)]
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 30, images)  # ~33 images a class: SpRAy clusters them
    assert cfg.dataset.crop == size, (cfg.dataset.crop, size)
    group = create_store(run_dir / "store.zarr", ids, labels.tolist(), cfg.run.shard_size,
                         {"classes": list(class_names()), "random_weights": False})
    resize_explainers(group, list(METHODS))
    for stage in REGISTRY:  # every array a run would have
        stage.prepare(group, cfg)
    s = cfg.run.shard_size
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    for start in range(0, images, s):
        stop = min(start + s, images)
        k = stop - start
        small = rng.integers(0, 255, (k, size // 8, size // 8, 3), dtype=np.uint8)
        pixels = np.stack([np.asarray(Image.fromarray(p).resize(
            (size, size), Image.Resampling.BICUBIC)) for p in small])
        pred = np.where(rng.random(k) < 0.7, labels[start:stop], rng.integers(0, 30, k))
        maps = np.empty((len(METHODS), k, size, size), dtype=np.float32)
        for j in range(len(METHODS)):
            for i in range(k):
                noise = Image.fromarray((rng.random((size // 4, size // 4)) * 255
                                         ).astype(np.uint8)).filter(ImageFilter.GaussianBlur(2))
                base = np.asarray(noise.resize((size, size)), dtype=np.float32) / 255
                cy, cx = (0.3 + 0.4 * (pred[i] % 2)) * size, rng.uniform(0.2, 0.8) * size
                blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 10) ** 2))
                m = base ** 3 + blob
                maps[j, i] = m / m.max()
        rows = slice(start, stop)
        array(group, "pixels")[rows] = pixels
        array(group, "status")[rows] = np.array(["ok"] * k, dtype=object)
        array(group, "pred")[rows] = pred.astype(np.int16)
        array(group, "prob")[rows] = rng.uniform(0.05, 1.0, k).astype(np.float32)
        array(group, "normalized")[:, rows] = maps
        array(group, "delta")[:, rows] = rng.normal(0, 0.01, (len(METHODS), k)).astype(
            np.float32)
        array(group, "gap")[:, rows] = rng.uniform(0.5, 1, (len(METHODS), k)).astype(np.float32)
    return run_dir


def build(cfg: Any, workers: int) -> dict[str, float]:
    """The report stage on the existing maps: shard tasks in ``workers`` processes, then the
    coordinator's step. Returns seconds for each part."""
    from pipeline.store.access import open_store
    from pipeline.store.arrays import array
    from workflows.runner.stage_api import Task, execute
    from workflows.stages import REGISTRY
    from workflows.stages.report import build_report

    run_dir = cfg.run_dir
    store = run_dir / "store.zarr"
    group = open_store(store)
    n = array(group, "image").shape[0]
    stage = REGISTRY["report"]
    units = REGISTRY.units(stage, n, cfg)
    tasks = [Task(u, stage, str(store), str(run_dir), cfg) for u in units]
    t0 = time.perf_counter()
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(execute, tasks))
    else:
        for task in tasks:
            execute(task)
    t1 = time.perf_counter()
    build_report(group, cfg, run_dir, units, [], None, {}, [])
    t2 = time.perf_counter()
    return {"shards_s": t1 - t0, "assemble_s": t2 - t1, "total_s": t2 - t0}


#: The cards' images in the window (``visible``) and whether one is decoded (``drawn``): the
#: start of the scripts that wait for a screen of the gallery.
VISIBLE_IMAGES_JS = (
    "var visible = [].slice.call(document.querySelectorAll('#cards img'))"
    ".filter(function (i) { var r = i.getBoundingClientRect();"
    " return r.top < innerHeight && getComputedStyle(i).display != 'none'; });"
    "function drawn(i) { return i.complete && i.naturalWidth > 0; }")


def first_screen(page: Path, runs: int = 3) -> dict[str, float] | None:
    """Seconds from navigation until the first screen's cards and their images are drawn, and
    until all the gallery's data is in, in headless Chromium from file:// (best of ``runs``,
    each in a fresh browser); None without a browser."""
    from tests.browser import chromium_paths, headless_chrome

    if chromium_paths() is None:
        return None
    painted_js = VISIBLE_IMAGES_JS + "return visible.length > 0 && visible.every(drawn);"
    best: dict[str, float] | None = None
    for _ in range(runs):
        drv = headless_chrome(page_load="none")  # the first screen comes before "load"
        try:
            drv.get("about:blank")
            start = time.perf_counter()
            drv.get(page.as_uri())
            first = painted = ready = None
            while time.perf_counter() - start < 60.0 and (painted is None or ready is None):
                now = time.perf_counter() - start
                state = drv.execute_script(
                    "return document.body ? [document.body.dataset.first || null, "
                    "document.body.dataset.ready || null] : [null, null]")
                if first is None and state[0]:
                    first = now
                if ready is None and state[1]:
                    ready = now
                if first is not None and painted is None and drv.execute_script(painted_js):
                    painted = time.perf_counter() - start
                time.sleep(0.01)
            nav = drv.execute_script(
                "var t = performance.timing; return t.domContentLoadedEventEnd - "
                "t.navigationStart;")
            cards = drv.execute_script("return document.querySelectorAll('#cards .card').length")
        finally:
            drv.quit()
        if painted is None or ready is None:
            continue
        row = {"cards_s": first, "first_screen_s": painted, "all_data_s": ready,
               "dom_content_loaded_s": nav / 1000, "cards": cards}
        if best is None or row["first_screen_s"] < best["first_screen_s"]:
            best = row
    return best


def sorted_screen(page: Path, key: str = "prob", runs: int = 3) -> dict[str, Any] | None:
    """Seconds from choosing sort ``key`` (descending), once every row is in, until the
    sorted first screen's visible images are decoded, and how many distinct image files
    they came from, in headless Chromium (best of ``runs``); None without a browser. A
    sorted view scatters its cards over many shards, so each card's tiles cost their
    shards' sprites."""
    from selenium.webdriver.support.ui import Select

    from tests.browser import chromium_paths, headless_chrome

    if chromium_paths() is None:
        return None
    painted_js = (VISIBLE_IMAGES_JS + "return visible.length > 0 && visible.every(drawn) ? "
                  "new Set(visible.map(function (i) { return i.src; })).size : 0;")
    best: dict[str, Any] | None = None
    for _ in range(runs):
        drv = headless_chrome()
        try:
            drv.get(page.as_uri())
            deadline = time.perf_counter() + 60.0
            while time.perf_counter() < deadline and not drv.execute_script(
                    "return document.body.dataset.ready"):
                time.sleep(0.02)
            Select(drv.find_element("id", "order")).select_by_value("desc")
            start = time.perf_counter()
            Select(drv.find_element("id", "sort")).select_by_value(key)
            files = 0
            while time.perf_counter() - start < 60.0 and not files:
                files = int(drv.execute_script(painted_js) or 0)
                time.sleep(0.01)
            took = time.perf_counter() - start
        finally:
            drv.quit()
        if files and (best is None or took < best["sorted_screen_s"]):
            best = {"sort": key, "sorted_screen_s": took, "image_files": files}
    return best


def _script_json(path: Path) -> Any:
    """The object a ``data/*.js`` script sets or pushes
    (:func:`pipeline.report.data_scripts.data_script`)."""
    text = path.read_text()
    if text.startswith("(window."):
        return json.loads(text[text.index(".push(") + 6:text.rindex(");")])
    return json.loads(text[text.index("=") + 1:text.rindex(";")])


def scale_up(report: Path, out: Path, images: int, shard_size: int, link_images: bool = True
             ) -> Path:
    """A copy of the report folder ``report`` whose gallery lists ``images`` images in shards of
    ``shard_size`` (the original's): the original's shards repeated with new numbers (and,
    with ``link_images``, their sprites of crops, maps and outlines as hard links; the last
    shard's cut to its rows). For timing the page at a size that no run here builds quickly:
    the rows are real rows, so the page does the work a real one would. Returns the new
    ``index.html``."""
    from PIL import Image

    from pipeline.report.data_scripts import data_script, shard_data_path
    from pipeline.report.publishing import link_tree_file
    from pipeline.report.sprites import sprite_path

    manifest = _script_json(report / "data" / "manifest.js")
    template = [_script_json(report / shard["file"]) for shard in manifest["shards"]]
    template = [t for t in template if t["stop"] - t["start"] == shard_size]
    if not template:
        raise ValueError(f"Expected a report with shards of {shard_size} images to scale up, "
                         f"got shards of {sorted({len(t['rows']) for t in template})}.")
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(report, out, ignore=shutil.ignore_patterns("shard-*.js", "img"))
    kinds = ["c", "o", *(f"m{j}" for j in range(len(manifest["methods"])))]
    shards = []
    for index, start in enumerate(range(0, images, shard_size)):
        src = template[index % len(template)]
        n = min(shard_size, images - start)
        rows = [{**r, "i": start + (r["i"] - src["start"]), "id": f"{r['id']} #{start + k}"}
                for k, r in enumerate(src["rows"][:n])]
        for kind in kinds if link_images else []:
            for part in range(-(-n // src["sprite"])):
                name = sprite_path(kind, src["index"], part)
                if not (report / name).is_file():
                    continue
                dst = out / sprite_path(kind, index, part)
                count = min(src["sprite"], n - part * src["sprite"])
                if count == min(src["sprite"], shard_size - part * src["sprite"]):
                    link_tree_file(report / name, dst)
                else:  # the last shard holds fewer rows: its sprite is cut to them
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    with Image.open(report / name) as im:
                        side = im.width
                        im.crop((0, 0, side, count * side)).save(dst)
        payload = {**src, "index": index, "start": start, "stop": start + n, "rows": rows,
                   "missing": []}
        (out / shard_data_path(index)).write_bytes(
            data_script("XAI_SHARDS", payload, append=True))
        shards.append({"index": index, "file": shard_data_path(index)})
    strategies = out / "data" / "strategies.js"
    if strategies.is_file():
        data = _script_json(strategies)
        data["methods"] = {m: [v[i % len(v)] for i in range(images)]
                           for m, v in data["methods"].items()}
        strategies.write_bytes(data_script("XAI_STRATEGIES", data))
    manifest.update(images=images, shards=shards, title=f"{manifest['dataset']}: {images} images")
    (out / "data" / "manifest.js").write_bytes(data_script("XAI_MANIFEST", manifest))
    return out / "index.html"


def measure(images: int = 1000, workers: int = 2, shard_size: int = 64, browser_runs: int = 3
            ) -> dict[str, Any]:
    """Make the maps, build the report, time its first screen; return the numbers."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(Path(tmp), images, shard_size)
        t0 = time.perf_counter()
        make_store(cfg, images)
        made = time.perf_counter() - t0
        out: dict[str, Any] = {"images": images, "methods": len(METHODS), "workers": workers,
                               "shard_size": shard_size, "make_maps_s": made}
        out.update(build(cfg, workers))
        report = cfg.run_dir / "report"
        out["files"] = sum(1 for p in report.rglob("*") if p.is_file())
        out["megabytes"] = sum(p.stat().st_size for p in report.rglob("*") if p.is_file()) / 2**20
        out["browser"] = first_screen(report / "index.html", browser_runs)
    return out


def measure_scaled(images: int = 50_000, template: int = 128, shard_size: int = 32,
                   browser_runs: int = 3) -> dict[str, Any]:
    """The gallery's first screen at ``images`` images x 5 methods: a real report of
    ``template`` images (224 px) scaled up with :func:`scale_up` (every row, crop, map,
    and the data scripts at full size). Returns the numbers, with the data's size."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = _config(Path(tmp), template, shard_size)
        make_store(cfg, template)
        build(cfg, 1)
        t0 = time.perf_counter()
        page = scale_up(cfg.run_dir / "report", Path(tmp) / "scaled", images, shard_size)
        made = time.perf_counter() - t0
        data = page.parent / "data"
        out: dict[str, Any] = {
            "images": images, "methods": len(METHODS), "shard_size": shard_size,
            "template_images": template, "scale_up_s": round(made, 1),
            "shard_scripts": len(list(data.glob("shard-*.js"))),
            "data_megabytes": round(sum(p.stat().st_size for p in data.glob("*.js")) / 2**20, 1),
            "index_html_bytes": page.stat().st_size}
        out["browser"] = first_screen(page, browser_runs)
        out["sorted"] = sorted_screen(page, "prob", browser_runs)
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "scaled":  # scaled [images] [template]
        print(json.dumps(measure_scaled(*(int(a) for a in sys.argv[2:4])), indent=1))
        raise SystemExit(0)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    w = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    print(measure(n, w))
