"""What ``[store] layout`` costs: writing one shard of maps per method, per layout and dtype.

Writes ``SHARDS`` shards of ``raw`` (224 px, 32 images a shard) for ``METHODS`` methods,
method by method within each shard as the attribute tasks do, through
:meth:`pipeline.store.view.StoreView.write_maps` (the stage's own call, locks included),
for each ``[store] attributions`` dtype and each layout. Reports the files, the bytes stored, the
bytes written (every write's file, summed: a ``"shard"`` file is rewritten whole by each
method), the seconds per shard and method, and the write rate in images per second, to set
against the attribute stage's rate on a device (docs/performance.md).

The maps are Gaussian noise at a gradient's scale (1e-3): like real gradients they barely
compress, so the bytes are close to a real run's.

usage: .venv/bin/python -m benchmarks.bench_layout [PX] [SHARDS] [METHODS]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.store.access import create_store
from pipeline.store.axes import resize_explainers
from pipeline.store.encoding import ATTRIBUTION_DTYPES, STORE_LAYOUTS
from pipeline.store.schema import SCHEMA
from pipeline.store.view import StoreView

SHARD = 32


def measure(root: Path, px: int, shards: int, methods: int, dtype: str, layout: str
            ) -> dict[str, float | int | str]:
    """One (dtype, layout): write every shard's maps, method by method."""
    n = shards * SHARD
    path = root / f"{dtype}-{layout}.zarr"
    group = create_store(path, [f"i{k}" for k in range(n)], [0] * n, SHARD,
                         {"attributions": dtype, "layout": layout})
    resize_explainers(group, [f"m{k}" for k in range(methods)])
    sizes = {"image": n, "explainer": methods, "y": px, "x": px}
    SCHEMA.create(group, "raw", sizes, SHARD)
    if dtype == "float16":
        SCHEMA.create(group, "raw_scale", sizes, SHARD)
    view = StoreView(path)
    arr = view.array("raw")
    per_file = (arr.shards or arr.chunks)[0]  # explainer slots per file
    rng = np.random.default_rng(0)
    maps = (rng.standard_normal((SHARD, 3, px, px)) * 1e-3).astype(np.float32)
    written = 0
    seconds = 0.0
    for s in range(shards):
        rows = slice(s * SHARD, (s + 1) * SHARD)
        for m in range(methods):
            t = time.perf_counter()
            view.write_maps("raw", m, rows, maps)
            seconds += time.perf_counter() - t
            # The file this write wrote: raw/c/<explainer file>/<shard>/0/0/0.
            written += (path / "raw" / "c" / str(m // per_file) / str(s) / "0" / "0" / "0"
                        ).stat().st_size
    files = [p for p in (path / "raw" / "c").rglob("*") if p.is_file()]
    stored = sum(p.stat().st_size for p in files)
    writes = shards * methods
    return {"dtype": dtype, "layout": layout, "files": len(files), "stored_MB": stored / 1e6,
            "written_MB": written / 1e6, "written_over_stored": written / stored,
            "s_per_write": seconds / writes, "img_per_s": writes * SHARD / seconds}


def main(argv: list[str]) -> None:
    px = int(argv[0]) if argv else 224
    shards = int(argv[1]) if len(argv) > 1 else 4
    methods = int(argv[2]) if len(argv) > 2 else 5
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ATTRIBUTION_DTYPES:
            for layout in STORE_LAYOUTS:
                row = measure(Path(tmp), px, shards, methods, dtype, layout)
                rows.append(row)
                print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                                  for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
