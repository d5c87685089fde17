"""Per-class mean maps of two runs, and a test of whether their maps differ.

Grouping the images by class (A's prediction, or the label):

- **mean maps** are running sums over images, so a comparison streams over shards and holds
  one shard of maps at a time: ``sum_a / n`` and ``sum_b / n`` per class and explainer. They
  are kept at full resolution when the sums of every class fit :data:`MEAN_MAP_BUDGET`, and
  area-averaged to a coarser square otherwise (:func:`mean_map_side`): 1,000 ImageNet classes
  at 224 px would need 8 GB at full resolution.
- **the test** is a sign-flip permutation test on each image's difference map ``d_i = B_i -
  A_i``, area-averaged to a ``grid x grid`` grid (``D`` cells) and kept per image (1 KiB). Under
  "the change of model changed nothing in this class", A's and B's maps of an image are
  exchangeable, so swapping them (flipping the sign of ``d_i``) gives an equally likely data
  set. The statistic is the root mean square of the class's mean difference,
  ``T = ||sum_i d_i|| / (n sqrt(D))``; a permutation flips each image's sign by a coin. The
  test runs per class once the stream is done (:func:`sign_flip_test`), with as many
  permutations as the number of classes needs (:func:`permutations_for`), stopping early
  (Besag and Clifford's sequential p-value) once a class is plainly unchanged.

Arrays: maps ``(E, n, H, W)`` (explainers, images of one shard), groups ``(n,)`` int (the
class, -1 none), differences ``(n, D)`` float32.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.comparison.maps import block_mean
from pipeline.evaluation.spray import downsample

#: The most memory the class sums of mean maps may take, both runs and both groupings
#: together; above it the mean maps are area-averaged to a coarser square.
MEAN_MAP_BUDGET = 256 * 2**20
#: The first permutations of every test: the null's mean and spread (the score) come from
#: them, so that the scores of all classes rest on the same number of draws.
FIRST_DRAWS = 999
#: A test stops once this many permutations reach the observed statistic (Besag and
#: Clifford's sequential p-value, ``p = STOP_AFTER / draws``): the class is plainly not
#: significant, and more draws would only refine a large p.
STOP_AFTER = 10


@dataclass
class ClassTotals:
    """Running sums of one class: per explainer, the images counted and each run's map sum
    on the mean maps' grid (float64)."""

    count: np.ndarray      # (E,)
    sum_a: np.ndarray      # (E, h, w)
    sum_b: np.ndarray      # (E, h, w)

    def add(self, other: ClassTotals) -> None:
        """Fold ``other`` (a later shard's part) into these sums."""
        self.count += other.count
        self.sum_a += other.sum_a
        self.sum_b += other.sum_b


def mean_map_side(classes: int, explainers: int, side: int, groupings: int = 2,
                  budget: int | None = None) -> int:
    """The side of the mean maps: ``side`` (the maps' own) when the sums of ``classes`` x
    ``explainers`` maps of both runs and ``groupings`` fit ``budget`` bytes of float64
    (:data:`MEAN_MAP_BUDGET`); else
    the largest divisor of ``side`` that fits (exact block means) when it is at least half
    of the largest side that fits, else that largest side (an area average)."""
    per_cell = 2 * groupings * 8 * max(1, classes) * max(1, explainers)
    fits = max(1, math.isqrt((MEAN_MAP_BUDGET if budget is None else budget) // per_cell))
    if fits >= side:
        return side
    divisor = max(d for d in range(1, fits + 1) if side % d == 0)
    return divisor if 2 * divisor >= fits else fits


def reduce_maps(maps: np.ndarray, side: int) -> np.ndarray:
    """``(n, H, W)`` maps area-averaged to ``(n, side, side)`` (as they are when ``side`` is
    their own, or 0)."""
    maps = np.asarray(maps)
    if side <= 0 or (maps.shape[-1] == side and maps.shape[-2] == side):
        return maps
    return downsample(maps.astype(np.float32), side).reshape(len(maps), side, side)


def shard_totals(a: np.ndarray, b: np.ndarray, groups: np.ndarray, side: int
                 ) -> dict[int, ClassTotals]:
    """One shard's sums per class.

    Parameters
    ----------
    a, b
        ``(E, n, H, W)`` the two runs' normalized maps; a NaN map (not explained) is left out
        of its explainer's sums.
    groups
        ``(n,)`` each image's class; -1 images are in no class.
    side
        The mean maps' side (:func:`mean_map_side`; 0: the maps' own size).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    e, n = a.shape[:2]
    valid = (np.isfinite(a.reshape(e, n, -1)).all(2) & np.isfinite(b.reshape(e, n, -1)).all(2))
    a0, b0 = (np.stack([reduce_maps(np.where(np.isfinite(x), x, 0.0), side).astype(np.float64)
                        for x in m]) for m in (a, b))
    out: dict[int, ClassTotals] = {}
    for cls in np.unique(groups):
        if cls < 0:
            continue
        rows = np.flatnonzero(groups == cls)
        w = valid[:, rows].astype(np.float64)[:, :, None, None]       # (E, k, 1, 1)
        out[int(cls)] = ClassTotals(valid[:, rows].sum(1).astype(np.float64),
                                    (a0[:, rows] * w).sum(1), (b0[:, rows] * w).sum(1))
    return out


def grid_differences(a: np.ndarray, b: np.ndarray, grid: int) -> np.ndarray:
    """``(n, grid * grid)`` float32: each image's ``B - A`` area-averaged to the test's grid;
    a NaN row where either map is missing (the image is left out of the test)."""
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    n = len(a)
    bad = ~(np.isfinite(a.reshape(n, -1)).all(1) & np.isfinite(b.reshape(n, -1)).all(1))
    diff = block_mean(np.nan_to_num(b) - np.nan_to_num(a), grid) if n else \
        np.zeros((0, grid * grid), np.float32)
    diff[bad] = np.nan
    return diff


def fold(totals: dict[int, ClassTotals], part: Mapping[int, ClassTotals]) -> None:
    """Add one shard's ``part`` into ``totals``, in place."""
    for cls, t in part.items():
        if cls in totals:
            totals[cls].add(t)
        else:
            totals[cls] = ClassTotals(t.count.copy(), t.sum_a.copy(), t.sum_b.copy())


def permutations_for(classes: int, alpha: float) -> int:
    """The most permutations a test draws so that Holm's correction over ``classes`` tests
    can flag every class: the smallest p, ``1 / (P + 1)``, is half of ``alpha / classes``, so
    that a class changed beyond doubt is flagged even when a draw reaches its T (the
    observed signs, or all flipped, come up with chance ``2^(1-n)`` a draw: one class in five
    of 20 images at 100,000 draws); never fewer than :data:`FIRST_DRAWS`."""
    return max(FIRST_DRAWS, math.ceil(2 * max(1, classes) / alpha - 1e-9) - 1)


@dataclass(frozen=True)
class ClassTest:
    """The permutation test of one class under one explainer.

    Attributes
    ----------
    statistic
        ``T``: RMS of the mean difference map on the grid (0: no change).
    null_mean, null_sd
        Mean and standard deviation of ``T_p`` over the first :data:`FIRST_DRAWS`
        permutations.
    score
        ``(T - null_mean) / null_sd``: the change in units of the maps' own noise (0 where the
        null has no spread).
    p_value
        Besag and Clifford's sequential p: ``STOP_AFTER / l`` when the ``STOP_AFTER``-th
        permutation reaching ``T`` is the ``l``-th drawn, else ``(1 + #{T_p >= T}) / (P + 1)``
        after all ``P``.
    permutations
        How many were drawn.
    """

    statistic: float
    null_mean: float
    null_sd: float
    score: float
    p_value: float
    permutations: int


def _rms(signs: np.ndarray, diffs: np.ndarray, gram: np.ndarray | None) -> np.ndarray:
    """``||signs @ diffs|| / (n sqrt(D))`` per row of ``signs (P, n)``: float32 BLAS, one
    arithmetic for the observed statistic and the permuted ones. With ``gram`` (``diffs @
    diffs.T``, ``(n, n)``) the squared norm is ``s G s``: ``n`` multiply-adds a coin instead of
    ``D``, for classes of fewer images than grid cells."""
    n, d = diffs.shape
    # Float32 sums of n or D products: relative error about 1e-6, under the ties' tolerance.
    if gram is not None:
        squares = np.einsum("pn,pn->p", signs @ gram, signs)
    else:
        sums = signs @ diffs
        squares = np.einsum("pd,pd->p", sums, sums)
    return np.sqrt(np.maximum(squares.astype(np.float64), 0.0)) / (n * math.sqrt(d))


def _draws(rng: np.random.Generator, count: int, cap: int, diffs: np.ndarray,
           gram: np.ndarray | None) -> np.ndarray:
    """``T_p`` of ``count`` permutations ``(count,)``, their coins drawn ``cap`` rows at a
    time."""
    out = []
    n = len(diffs)
    while count > 0:
        size = min(cap, count)
        signs = (rng.integers(0, 2, size=(size, n), dtype=np.int8) * 2 - 1).astype(np.float32)
        out.append(_rms(signs, diffs, gram))
        count -= size
    return np.concatenate(out)


def sign_flip_test(diffs: np.ndarray, key: Sequence[int], max_permutations: int,
                   batch: int = FIRST_DRAWS) -> ClassTest:
    """The sign-flip permutation test of one class and explainer.

    Parameters
    ----------
    diffs
        ``(n, D)`` the class's images' grid differences (:func:`grid_differences`), NaN rows
        left out.
    key
        Seeds the coins (the comparison's seed, the grouping, the explainer, the class): the
        same on every run and resume.
    max_permutations
        The most drawn (:func:`permutations_for`).
    batch
        Drawn at a time after the first :data:`FIRST_DRAWS` (more for small classes: up to
        ~4 M coins a step).
    """
    diffs = np.asarray(diffs, dtype=np.float32)
    diffs = diffs[np.isfinite(diffs).all(1)] if diffs.size else diffs.reshape(0, 1)
    n = len(diffs)
    if n == 0:
        return ClassTest(np.nan, np.nan, np.nan, np.nan, np.nan, 0)
    gram = (diffs.astype(np.float64) @ diffs.T.astype(np.float64)).astype(np.float32) \
        if n < diffs.shape[1] else None
    t = float(_rms(np.ones((1, n), np.float32), diffs, gram)[0])
    rng = np.random.default_rng(list(key))
    # At most ~4 M coins in memory at once, however large the class.
    cap = max(1, 4_000_000 // n)
    tp = _draws(rng, min(FIRST_DRAWS, max_permutations), cap, diffs, gram)
    null_mean, null_sd = float(tp.mean()), float(tp.std())
    drawn = exceed = 0
    while True:
        # Ties count as reaching T: a class whose maps did not change at all (T = 0 = T_p)
        # gets p = 1. The tolerance absorbs float32 rounding between T and an equal T_p.
        hits = np.cumsum(tp >= t * (1 - 1e-5)) + exceed
        if hits[-1] >= STOP_AFTER:
            drawn += int(np.argmax(hits >= STOP_AFTER)) + 1
            p = STOP_AFTER / drawn
            break
        exceed, drawn = int(hits[-1]), drawn + len(tp)
        if drawn >= max_permutations:
            p = (1 + exceed) / (drawn + 1)
            break
        tp = _draws(rng, min(max(cap, batch), max_permutations - drawn), cap, diffs, gram)
    # A null without spread (one image: flipping its sign keeps the norm) says nothing.
    score = (t - null_mean) / null_sd if null_sd > 1e-9 * max(t, 1e-30) else 0.0
    return ClassTest(t, null_mean, null_sd, score, p, drawn)


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
