"""Rendering benchmark: the Pillow contact sheet against a matplotlib baseline
(:mod:`benchmarks.render_baseline`).

Both render the same rows (8 images at 224 px, five methods, smooth random maps) in this
process, each timed best of ``repeats``, encoding included. Run alone with
``python -m benchmarks.bench_render``; ``xai bench`` includes it.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.attribution.method_registry import DEFAULT_METHODS as METHODS


def bench_rows(images: int = 8, size: int = 224, seed: int = 0) -> list[Any]:
    """Seeded rows with photo-like crops and smooth, heavy-tailed maps in [0, 1]."""
    from PIL import Image, ImageFilter

    from pipeline.render.heatmaps import SheetRow

    rng = np.random.default_rng(seed)
    rows = []
    for k in range(images):
        photo = Image.fromarray(rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8))
        photo = photo.resize((size, size), Image.Resampling.BICUBIC)
        maps = []
        for _ in METHODS:
            noise = Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8))
            smooth = np.asarray(noise.filter(ImageFilter.GaussianBlur(6)), dtype=np.float32)
            amap = np.abs(smooth - smooth.mean()) ** 2
            maps.append(amap / amap.max())
        rows.append(SheetRow(f"bench/{k:04d}.jpg", np.asarray(photo), np.stack(maps), "ok",
                             "tabby", 0.42, "tabby" if k % 2 else "junco"))
    return rows


def _best(fn: Callable[[], int], repeats: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        size = fn()
        times.append(time.perf_counter() - t0)
    return min(times), size


def measure(images: int = 8, repeats: int = 3) -> dict[str, float]:
    """Seconds per sheet and bytes per sheet for both renderers, and the per-image ratio."""
    from benchmarks.render_baseline import matplotlib_contact_sheet
    from pipeline.render.heatmaps import contact_sheet, encode_png

    rows = bench_rows(images)
    banner = "RANDOM WEIGHTS: results are meaningless"

    def before() -> int:
        fig = matplotlib_contact_sheet(rows, METHODS, banner=banner, title="images 1-8")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100)
        return len(buf.getvalue())

    def after() -> int:
        sheet = contact_sheet(rows, METHODS, banner=banner, title="images 1-8")
        return len(encode_png(np.asarray(sheet)))  # as the render stage writes it

    after()  # fonts and lookup tables load once per process
    before()
    t_before, b_before = _best(before, repeats)
    t_after, b_after = _best(after, repeats)
    return {"images": images, "before_s": t_before, "after_s": t_after,
            "before_mb": b_before / 2**20, "after_mb": b_after / 2**20,
            "speedup": t_before / t_after}


if __name__ == "__main__":  # pragma: no cover
    import json

    print(json.dumps(measure(), indent=2))
