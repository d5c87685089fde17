"""Aggregate and normalize numpy blocks: what the aggregate and normalize stages apply, one
method and shard at a time.

Blocks keep the store's axis order: ``raw`` blocks are ``(method, image, channel, y, x)``,
``aggregated`` and ``normalized`` blocks ``(method, image, y, x)``. Rows that were not
explained are all-NaN and stay all-NaN: never zeros that look like a result.
"""

from __future__ import annotations

import numpy as np


def aggregate_block(raw: np.ndarray) -> np.ndarray:
    """Channel sum: ``(M, S, 3, Y, X)`` -> ``(M, S, Y, X)`` float32."""
    if raw.ndim != 5:
        raise ValueError(f"Expected a (method, image, channel, y, x) block, got {raw.shape}.")
    return raw.sum(axis=2, dtype=np.float64).astype(np.float32)


def normalize_block(aggregated: np.ndarray) -> np.ndarray:
    """Per map: ``|A|``, minus its minimum, divided by the new maximum, in ``[0, 1]``.

    ``(M, S, Y, X)`` -> same. A constant map gives zeros; an all-NaN map (an image that was
    not explained) stays NaN.
    """
    if aggregated.ndim != 4:
        raise ValueError(f"Expected a (method, image, y, x) block, got {aggregated.shape}.")
    m, s, y, x = aggregated.shape
    flat = np.abs(aggregated.reshape(m * s, y * x).astype(np.float64))
    missing = np.isnan(flat).all(axis=1)
    out = np.full_like(flat, np.nan)
    ok = ~missing
    if ok.any():
        rows = flat[ok]
        shifted = rows - np.nanmin(rows, axis=1, keepdims=True)
        peak = np.nanmax(shifted, axis=1, keepdims=True)
        safe = np.where(peak > 0, peak, 1.0)
        out[ok] = np.where(peak > 0, shifted / safe, 0.0)
    return out.reshape(m, s, y, x).astype(np.float32)
