"""Run folders made directly (no model): a store with the arrays a comparison reads, seeded
maps and a saved config, so that the comparison's tests know every answer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.store.access import create_store
from pipeline.store.axes import resize_explainers
from pipeline.store.schema import SCHEMA

CLASSES = ["cat", "dog", "bird"]


def fake_run(path: Path, maps: np.ndarray, pred: np.ndarray, *, labels: Sequence[int] | None
             = None, ids: Sequence[str] | None = None, methods: Sequence[str] = ("gradient",),
             shard: int = 4, seed: int = 0, strategy: np.ndarray | None = None,
             metric: np.ndarray | None = None, config: dict | None = None,
             normalized: str = "float32", classes: Sequence[str] = CLASSES) -> Path:
    """A run folder at ``path`` holding ``maps`` ``(E, N, H, W)`` as ``normalized``.

    ``pred`` ``(N,)``: the predictions (probability 0.9); ``strategy`` ``(E, N)``: the
    SpRAy clusters; ``metric`` ``(E, N)``: ``metric_sparseness``; ``config``: the saved
    config (``{"run": {"seed": seed}}`` by default); ``classes``: the class names.
    """
    e, n, h, w = maps.shape
    ids = list(ids) if ids is not None else [f"img/{i:04d}.png" for i in range(n)]
    labels = list(labels) if labels is not None else [int(p) for p in pred]
    path.mkdir(parents=True, exist_ok=True)
    cfg = config if config is not None else {"run": {"seed": seed}, "model": {"weights": "x"}}
    group = create_store(path / "store.zarr", ids, labels, shard,
                         {"classes": list(classes), "config_hash": json.dumps(cfg, sort_keys=True),
                          "stage_hashes": {}, "normalized": normalized})
    resize_explainers(group, list(methods))
    sizes = {"image": n, "explainer": e, "y": h, "x": w}
    arr = SCHEMA.create(group, "normalized", sizes, shard)
    if normalized == "uint16":
        from pipeline.store.encoding import encode_maps

        arr[:] = encode_maps(maps.astype(np.float32), "uint16")[0]
    else:
        arr[:] = maps.astype(np.float32)
    SCHEMA.create(group, "pred", sizes, shard)[:] = np.asarray(pred, np.int16)
    SCHEMA.create(group, "prob", sizes, shard)[:] = np.full(n, 0.9, np.float32)
    SCHEMA.create(group, "status", sizes, shard)[:] = np.asarray(["ok"] * n, dtype=object)
    if strategy is not None:
        SCHEMA.create(group, "strategy", sizes, shard)[:] = np.asarray(strategy, np.int16)
    if metric is not None:
        SCHEMA.create(group, "metric_sparseness", sizes, shard)[:] = np.asarray(
            metric, np.float32)
    (path / "config.resolved.json").write_text(json.dumps(cfg))
    return path


def blob_maps(n: int, size: int = 16, methods: int = 1, seed: int = 0,
              corner: np.ndarray | None = None) -> np.ndarray:
    """``(methods, n, size, size)`` maps in [0, 1]: a centre blob plus seeded noise; where
    ``corner`` ``(n,)`` is True, the relevance sits in the bottom-right corner instead."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    centre = np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 6) ** 2))
    edge = np.exp(-((yy - size + 2) ** 2 + (xx - size + 2) ** 2) / (2 * (size / 10) ** 2))
    out = np.empty((methods, n, size, size), np.float32)
    for j in range(methods):
        for i in range(n):
            base = edge if corner is not None and corner[i] else centre
            m = base + 0.3 * rng.random((size, size))
            out[j, i] = (m - m.min()) / (m.max() - m.min())
    return out
