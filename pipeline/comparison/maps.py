"""Per-image statistics of two runs' normalized maps of the same images.

Arrays: maps ``(N, H, W)`` float in [0, 1] (the store's ``normalized``), NaN where an image
was not explained; results ``(N,)`` float64, NaN where a map is missing or constant.
"""

from __future__ import annotations

import math

import numpy as np


def _ranks(maps: np.ndarray) -> np.ndarray:
    """Average ranks of each map's pixels ``(N, H * W)`` (ties share their mean rank, as
    Spearman's definition asks: a normalized map has many pixels at exactly 0)."""
    from scipy.stats import rankdata

    flat = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    return np.asarray(rankdata(flat, axis=1, method="average"), dtype=np.float64)


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each pair of maps.

    Parameters
    ----------
    a, b
        ``(N, H, W)`` maps of the same images.

    Returns
    -------
    ``(N,)`` correlations in [-1, 1]; NaN where either map has a NaN or is constant (no
    ranking to correlate).
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"Expected maps of one shape, got {a.shape} and {b.shape}.")
    out = np.full(len(a), np.nan)
    if not len(a):
        return out
    bad = np.isnan(a.reshape(len(a), -1)).any(1) | np.isnan(b.reshape(len(b), -1)).any(1)
    good = ~bad
    if not good.any():
        return out
    ra, rb = _ranks(a[good]), _ranks(b[good])
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(1) / den
    out[good] = np.where(den > 0, np.clip(rho, -1.0, 1.0), np.nan)
    return out


def top_count(pixels: int, fraction: float) -> int:
    """How many pixels "the top ``fraction``" of ``pixels`` is (at least one)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"Expected a top fraction in (0, 1], got {fraction}.")
    return max(1, math.ceil(fraction * pixels - 1e-9))


def top_masks(maps: np.ndarray, fraction: float) -> np.ndarray:
    """``(N, H * W)`` bool: each map's ``fraction`` highest pixels (ties broken by pixel
    order, so two equal maps give the same set)."""
    flat = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    k = top_count(flat.shape[1], fraction)
    order = np.argsort(-np.nan_to_num(flat, nan=-np.inf), axis=1, kind="stable")[:, :k]
    mask = np.zeros(flat.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


def top_iou(a: np.ndarray, b: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Intersection over union of each pair of maps' top ``fraction`` pixels ``(N,)``; NaN
    where either map has a NaN."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"Expected maps of one shape, got {a.shape} and {b.shape}.")
    ma, mb = top_masks(a, fraction), top_masks(b, fraction)
    inter = (ma & mb).sum(1)
    union = (ma | mb).sum(1)
    iou = inter / np.maximum(union, 1)
    bad = np.isnan(a.reshape(len(a), -1)).any(1) | np.isnan(b.reshape(len(b), -1)).any(1)
    return np.where(bad, np.nan, iou.astype(np.float64))


def block_mean(maps: np.ndarray, size: int) -> np.ndarray:
    """Area-average ``(N, H, W)`` maps to ``(N, size * size)`` (SpRAy's downsampling, one
    definition for both): the grid the significance test runs on."""
    from pipeline.evaluation.spray import downsample

    return downsample(np.nan_to_num(np.asarray(maps, dtype=np.float32)), size)
