"""Scale benchmark of ``xai compare``: its time against the report stage of one of the runs,
and its peak memory as the number of images grows.

Two measurements:

- **real runs** (``--real N``): two ``xai run`` runs of ``N`` synthetic images made as
  :mod:`benchmarks.bench_scale` makes them (32 px crop, ``gradient``, random weights, the
  report on), seeds 0 and 1. Timed as fresh commands, as a user types them: ``xai report
  RUN_A`` after ``xai clean RUN_A report`` (the whole report stage, every shard's part and
  the pages, computed again; without the clean it only checks that the parts are current
  and rebuilds the pages) and ``xai compare RUN_A RUN_B``; the ratio is the target (at most
  1.5).
- **store-only runs** (``--stores N ...``): run folders written directly, shard by shard,
  with the arrays a comparison reads (seeded maps, predictions, labels, strategies), so that
  50,000 images need no model. ``xai compare`` on each size: wall time and peak memory (the
  child's max RSS), which must stay flat in the number of images.

``python -m benchmarks.bench_compare --real 2000 --stores 2000 20000 50000`` writes
``runs/bench/compare.json``. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_scale import CONFIG, ROOT, _timed, _xai

CLASSES = [f"class{i}" for i in range(10)]


def real_runs(images: int, out: Path, shard: int = 32, reuse: bool = False
              ) -> dict[str, Any]:
    """Two ``xai run`` runs (``reuse``: resumed, so a finished one is kept), then the whole
    report stage of A against ``xai compare A B``."""
    runs = {}
    for name, seed in (("A", 0), ("B", 1)):
        run = out / f"real{images}" / name
        if not reuse:
            shutil.rmtree(run, ignore_errors=True)
        config = out / f"real{images}-{name}.toml"
        config.write_text(CONFIG.format(images=images, crop=32, out=run.parent, shard=shard,
                                        report="true", layout="method")
                          .replace("seed = 0", f"seed = {seed}"))
        _, rc, _, text = _timed([*_xai(), "run", "--config", str(config), "--name", name])
        if rc != 0:
            raise RuntimeError(f"xai run exited {rc}:\n{text[-3000:]}")
        runs[name] = run
    _, rc, _, text = _timed([*_xai(), "clean", str(runs["A"]), "report"])
    if rc != 0:
        raise RuntimeError(f"xai clean exited {rc}:\n{text[-3000:]}")
    report_s, rc, report_mb, text = _timed([*_xai(), "report", str(runs["A"])])
    if rc != 0:
        raise RuntimeError(f"xai report exited {rc}:\n{text[-3000:]}")
    target = out / f"real{images}" / "compare"
    shutil.rmtree(target, ignore_errors=True)
    compare_s, rc, compare_mb, text = _timed(
        [*_xai(), "compare", str(runs["A"]), str(runs["B"]), "--out", str(target)])
    if rc != 0:
        raise RuntimeError(f"xai compare exited {rc}:\n{text[-3000:]}")
    return {"images": images, "report_s": round(report_s, 2), "report_peak_mb": report_mb,
            "compare_s": round(compare_s, 2), "compare_peak_mb": compare_mb,
            "ratio": round(compare_s / report_s, 2)}


def store_run(path: Path, images: int, seed: int, size: int = 32, shard: int = 32,
              methods: tuple[str, ...] = ("gradient",), classes: int = len(CLASSES),
              shift: float = 0.0) -> Path:
    """A run folder with the arrays a comparison reads, written shard by shard: seeded
    uniform maps, ``shift`` added to their top-left quarter (a change in every class)."""
    from pipeline.store.access import create_store
    from pipeline.store.axes import resize_explainers
    from pipeline.store.schema import SCHEMA

    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    ids = [f"synthetic/{i:06d}.png" for i in range(images)]
    names = CLASSES if classes == len(CLASSES) else [f"class{i}" for i in range(classes)]
    labels = np.arange(images) % classes
    group = create_store(path / "store.zarr", ids, labels.tolist(), shard,
                         {"classes": names, "config_hash": f"bench{seed}",
                          "stage_hashes": {}})
    resize_explainers(group, list(methods))
    sizes = {"image": images, "explainer": len(methods), "y": size, "x": size}
    arrays = {name: SCHEMA.create(group, name, sizes, shard)
              for name in ("normalized", "pred", "prob", "status", "strategy")}
    rng = np.random.default_rng(seed)
    for start in range(0, images, shard):
        rows = slice(start, min(start + shard, images))
        n = rows.stop - rows.start
        maps = rng.random((len(methods), n, size, size), dtype=np.float32)
        maps[..., : size // 2, : size // 2] += np.float32(shift)
        arrays["normalized"][:, rows] = maps
        arrays["pred"][rows] = labels[rows].astype(np.int16)
        arrays["prob"][rows] = np.full(n, 0.5, np.float32)
        arrays["status"][rows] = np.asarray(["ok"] * n, dtype=object)
        arrays["strategy"][:, rows] = rng.integers(0, 2, (len(methods), n), dtype=np.int16)
    (path / "config.resolved.json").write_text(json.dumps({"run": {"seed": seed}}))
    return path


def store_runs(images: int, out: Path, reuse: bool = False, classes: int = len(CLASSES),
               size: int = 32, shift: float = 0.0) -> dict[str, Any]:
    """``xai compare`` of two store-only runs of ``images`` images in ``classes`` classes
    (``reuse``: those a previous measurement left, when there); B's maps gain ``shift`` in a
    corner (every class changes: every class's test draws all its permutations)."""
    suffix = f"-{classes}c-{size}px-shift{shift:g}" if (classes, size, shift) != (
        len(CLASSES), 32, 0.0) else ""
    where = out / f"stores{images}{suffix}"
    a, b = where / "A", where / "B"
    for path, seed, add in ((a, 0, 0.0), (b, 1, shift)):
        if not (reuse and (path / "config.resolved.json").is_file()):
            store_run(path, images, seed, size=size, classes=classes, shift=add)
    target = where / "compare"
    shutil.rmtree(target, ignore_errors=True)
    wall, rc, peak, text = _timed([*_xai(), "compare", str(a), str(b), "--out", str(target)])
    if rc != 0:
        raise RuntimeError(f"xai compare exited {rc}:\n{text[-3000:]}")
    return {"images": images, "classes": classes, "size": size, "shift": shift,
            "compare_s": round(wall, 2), "compare_peak_mb": peak,
            "s_per_1000_images": round(1000 * wall / images, 3)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=int, nargs="*", default=[2000])
    parser.add_argument("--stores", type=int, nargs="*", default=[2000, 20000, 50000])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "compare")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the runs a previous measurement made (store-only runs "
                             "as they are, real runs resumed)")
    parser.add_argument("--classes", type=int, default=len(CLASSES),
                        help="classes of the store-only runs")
    parser.add_argument("--size", type=int, default=32, help="map side of the store-only runs")
    parser.add_argument("--shift", type=float, default=0.0,
                        help="added to a corner of B's maps in the store-only runs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"real": [], "stores": []}
    for n in args.real:
        result["real"].append(real_runs(n, args.out, reuse=args.reuse))
        print(json.dumps(result["real"][-1]), flush=True)
    for n in args.stores:
        result["stores"].append(store_runs(n, args.out, args.reuse, args.classes, args.size,
                                           args.shift))
        print(json.dumps(result["stores"][-1]), flush=True)
    (args.out.parent / "compare.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
