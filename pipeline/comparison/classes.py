"""Per-class mean maps of two runs and a test of whether they differ, as running sums.

Grouping the images by class (A's prediction, or the label), every figure here is a sum over
images, so that a comparison streams over shards and holds one shard of maps at a time:

- the mean normalized map of each run: ``sum_a / n`` and ``sum_b / n`` ``(H, W)``;
- the significance of their difference, by a sign-flip permutation test. Under "the change
  of model changed nothing in this class", A's and B's maps of an image are exchangeable, so
  swapping them (flipping the sign of the image's difference map ``d_i = B_i - A_i``) gives
  an equally likely data set. The statistic is the root mean square of the class's mean
  difference map on a coarse grid, ``T = ||sum_i d_i|| / (n sqrt(D))``; permutation ``p``
  flips each image's sign by a fixed coin ``s_ip`` and gives ``T_p = ||sum_i s_ip d_i|| /
  (n sqrt(D))``. Both are running sums: ``(D,)`` for the observed one, ``(P, D)`` for the
  permutations, so memory is flat in the number of images. The coins of a shard are drawn from
  ``(seed, shard index)``, so a resumed comparison draws the same ones.

Arrays: maps ``(E, n, H, W)`` (explainers, images of one shard), groups ``(n,)`` int (the
class, -1 none), signs ``(P, n)`` in {-1, +1}, grid features ``D = grid * grid``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from pipeline.comparison.maps import block_mean


@dataclass
class ClassTotals:
    """Running sums of one class: per explainer, the images counted, each run's map sum, the
    observed difference sum and the permuted ones on the test grid (float64)."""

    count: np.ndarray      # (E,)
    sum_a: np.ndarray      # (E, H, W)
    sum_b: np.ndarray      # (E, H, W)
    observed: np.ndarray   # (E, D)
    permuted: np.ndarray   # (E, P, D)

    def add(self, other: ClassTotals) -> None:
        """Fold ``other`` (a later shard's part) into these sums."""
        self.count += other.count
        self.sum_a += other.sum_a
        self.sum_b += other.sum_b
        self.observed += other.observed
        self.permuted += other.permuted


def shard_signs(seed: int, shard: int, permutations: int, rows: int) -> np.ndarray:
    """The permutation test's coins of one shard ``(P, rows)`` in {-1, +1}, drawn from
    ``(seed, shard)`` alone: the same on every run and resume."""
    rng = np.random.default_rng([seed, shard])
    return (rng.integers(0, 2, size=(permutations, rows), dtype=np.int8) * 2 - 1).astype(
        np.float64)


def shard_totals(a: np.ndarray, b: np.ndarray, groups: np.ndarray, signs: np.ndarray,
                 grid: int) -> dict[int, ClassTotals]:
    """One shard's sums per class (see the module's docstring).

    Parameters
    ----------
    a, b
        ``(E, n, H, W)`` the two runs' normalized maps; a NaN map (not explained) is left out
        of its explainer's sums.
    groups
        ``(n,)`` each image's class; -1 images are in no class.
    signs
        ``(P, n)`` the shard's coins (:func:`shard_signs`).
    grid
        Side of the test's grid.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    e, n = a.shape[:2]
    valid = (np.isfinite(a.reshape(e, n, -1)).all(2) & np.isfinite(b.reshape(e, n, -1)).all(2))
    a0, b0 = np.where(np.isfinite(a), a, 0.0), np.where(np.isfinite(b), b, 0.0)
    diff = np.stack([block_mean((b0[j] - a0[j]).astype(np.float32), grid).astype(np.float64)
                     for j in range(e)]) if n else np.zeros((e, 0, grid * grid))
    out: dict[int, ClassTotals] = {}
    for cls in np.unique(groups):
        if cls < 0:
            continue
        rows = np.flatnonzero(groups == cls)
        w = valid[:, rows].astype(np.float64)                         # (E, k)
        wd = diff[:, rows] * w[:, :, None]                            # (E, k, D)
        out[int(cls)] = ClassTotals(
            w.sum(1),
            (a0[:, rows] * w[:, :, None, None]).sum(1),
            (b0[:, rows] * w[:, :, None, None]).sum(1),
            wd.sum(1),
            np.stack([signs[:, rows] @ wd[j] for j in range(e)]))     # (E, P, D): BLAS
    return out


def fold(totals: dict[int, ClassTotals], part: Mapping[int, ClassTotals]) -> None:
    """Add one shard's ``part`` into ``totals``, in place."""
    for cls, t in part.items():
        if cls in totals:
            totals[cls].add(t)
        else:
            totals[cls] = ClassTotals(t.count.copy(), t.sum_a.copy(), t.sum_b.copy(),
                                      t.observed.copy(), t.permuted.copy())


@dataclass(frozen=True)
class ClassTest:
    """The permutation test of one class under one explainer.

    Attributes
    ----------
    statistic
        ``T``: RMS of the mean difference map on the grid (0: no change).
    null_mean, null_sd
        Mean and standard deviation of ``T_p`` over the permutations.
    score
        ``(T - null_mean) / null_sd``: the change in units of the maps' own noise (0 where the
        null has no spread); classes are ranked by it.
    p_value
        ``(1 + #{T_p >= T}) / (P + 1)``.
    """

    statistic: float
    null_mean: float
    null_sd: float
    score: float
    p_value: float


def class_test(count: float, observed: np.ndarray, permuted: np.ndarray) -> ClassTest:
    """The test of one class and explainer from its sums ``observed (D,)`` and ``permuted
    (P, D)`` over ``count`` images."""
    if count <= 0:
        return ClassTest(np.nan, np.nan, np.nan, np.nan, np.nan)
    d = observed.shape[-1]
    t = float(np.linalg.norm(observed) / (count * np.sqrt(d)))
    tp = np.linalg.norm(permuted, axis=1) / (count * np.sqrt(d))
    # Ties count as extreme (T_p >= T): a class whose maps did not change at all (T = 0 = T_p)
    # gets p = 1. The tolerance absorbs summation-order rounding between T and T_p.
    extreme = int((tp >= t * (1 - 1e-9)).sum())
    p = (1 + extreme) / (len(tp) + 1)
    sd = float(tp.std())
    # A null without spread (one image: flipping its sign keeps the norm) says nothing.
    score = (t - float(tp.mean())) / sd if sd > 1e-9 * max(t, 1e-30) else 0.0
    return ClassTest(t, float(tp.mean()), sd, score, p)


def holm(p_values: Iterable[float]) -> np.ndarray:
    """Holm's step-down adjustment of ``p_values`` (NaN kept as NaN): a class is flagged when
    its adjusted p is at most alpha, and the chance of flagging any unchanged class is then
    at most alpha, however many classes there are."""
    p = np.asarray(list(p_values), dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if not m:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out
