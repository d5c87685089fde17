"""Matching the explanation strategies (SpRAy clusters) of one class in two runs.

A strategy is a set of images. A's clusters of a class and B's are matched one to one by
their members' overlap (Jaccard index), maximising the total overlap (the Hungarian
algorithm, :func:`scipy.optimize.linear_sum_assignment`); a pair that shares less than
``min_overlap`` is no match. A strategy of B with no match appeared, one of A disappeared,
and a matched one may have changed its share of the class's images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StrategyMatch:
    """One row of the matching: a matched pair, or a strategy only one run has.

    Attributes
    ----------
    kind
        ``matched``, ``appeared`` (B only) or ``disappeared`` (A only).
    cluster_a, cluster_b
        The cluster numbers (-1: none in that run).
    images_a, images_b
        Members in each run.
    share_a, share_b
        Members over the class's clustered images, in each run.
    overlap
        Jaccard index of the members (0 for an unmatched strategy).
    """

    kind: str
    cluster_a: int
    cluster_b: int
    images_a: int
    images_b: int
    share_a: float
    share_b: float
    overlap: float


def jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(Ka, Kb)`` Jaccard index of every pair of member sets given as bool ``(Ka, N)`` and
    ``(Kb, N)``."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def match_strategies(labels_a: np.ndarray, labels_b: np.ndarray,
                     min_overlap: float = 0.2) -> list[StrategyMatch]:
    """Match the clusters of one class in A and B.

    Parameters
    ----------
    labels_a, labels_b
        ``(N,)`` over the same images: each image's cluster in that run's class (-1: not in
        the class there, or not clustered).
    min_overlap
        The least Jaccard index of a match.
    """
    la, lb = np.asarray(labels_a), np.asarray(labels_b)
    ka = sorted(int(v) for v in np.unique(la) if v >= 0)
    kb = sorted(int(v) for v in np.unique(lb) if v >= 0)
    na, nb = int((la >= 0).sum()), int((lb >= 0).sum())
    ma = np.stack([la == k for k in ka]) if ka else np.zeros((0, len(la)), bool)
    mb = np.stack([lb == k for k in kb]) if kb else np.zeros((0, len(lb)), bool)
    overlap = jaccard(ma, mb)
    pairs: list[tuple[int, int]] = []
    if ka and kb:
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(-overlap)
        pairs = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True)
                 if overlap[r, c] >= min_overlap]
    size_a, size_b = ma.sum(1), mb.sum(1)
    out = [StrategyMatch("matched", ka[r], kb[c], int(size_a[r]), int(size_b[c]),
                         float(size_a[r] / max(na, 1)), float(size_b[c] / max(nb, 1)),
                         float(overlap[r, c])) for r, c in pairs]
    used_a, used_b = {r for r, _ in pairs}, {c for _, c in pairs}
    out += [StrategyMatch("disappeared", ka[r], -1, int(size_a[r]), 0,
                          float(size_a[r] / max(na, 1)), 0.0, 0.0)
            for r in range(len(ka)) if r not in used_a]
    out += [StrategyMatch("appeared", -1, kb[c], 0, int(size_b[c]), 0.0,
                          float(size_b[c] / max(nb, 1)), 0.0)
            for c in range(len(kb)) if c not in used_b]
    return out
