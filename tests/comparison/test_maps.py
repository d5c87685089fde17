"""Per-image statistics of two maps: exact answers and scipy's as the reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from pipeline.comparison.maps import block_mean, spearman, top_count, top_iou


def test_spearman_is_one_for_equal_maps_and_minus_one_for_reversed_ranks() -> None:
    m = np.random.default_rng(0).random((3, 8, 8))
    assert np.allclose(spearman(m, m), 1.0)
    assert np.allclose(spearman(m, 1 - m), -1.0)


def test_spearman_matches_scipy_with_ties() -> None:
    rng = np.random.default_rng(1)
    a = np.round(rng.random((4, 6, 6)), 1)  # many ties, as normalized maps' zeros
    b = np.round(rng.random((4, 6, 6)), 1)
    want = [spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b, strict=True)]
    assert np.allclose(spearman(a, b), want)


def test_spearman_is_nan_for_a_constant_or_missing_map() -> None:
    a = np.random.default_rng(2).random((3, 4, 4))
    b = a.copy()
    b[0] = 0.0
    b[1, 0, 0] = np.nan
    rho = spearman(a, b)
    assert np.isnan(rho[0]) and np.isnan(rho[1]) and rho[2] == pytest.approx(1.0)


def test_top_iou_is_one_for_equal_maps_and_zero_for_disjoint_tops() -> None:
    a = np.arange(100, dtype=float).reshape(1, 10, 10)
    assert top_iou(a, a, 0.1)[0] == 1.0
    assert top_iou(a, -a, 0.1)[0] == 0.0  # top 10 of a are the lowest 10 of -a


def test_top_iou_counts_the_asked_fraction() -> None:
    a = np.arange(100, dtype=float).reshape(1, 10, 10)
    b = np.roll(a, 5)  # the top 20 of a (80..99) and of b share 15 pixels
    assert top_count(100, 0.2) == 20
    assert top_iou(a, b, 0.2)[0] == pytest.approx(15 / 25)


def test_top_count_refuses_a_fraction_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="Expected a top fraction in"):
        top_count(10, 0.0)


def test_block_mean_averages_blocks() -> None:
    m = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    assert block_mean(m, 2).tolist() == [[2.5, 4.5, 10.5, 12.5]]
