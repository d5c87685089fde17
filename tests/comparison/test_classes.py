"""Running class sums and the sign-flip permutation test."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.comparison.classes import (
    class_test,
    fold,
    holm,
    shard_signs,
    shard_totals,
)


def _maps(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((2, n, 8, 8))


def test_folding_shards_gives_the_sums_of_the_whole() -> None:
    a, b = _maps(10, 0), _maps(10, 1)
    groups = np.array([0, 1, 0, 2, 1, 0, -1, 2, 0, 1])
    signs = shard_signs(0, 0, 7, 10)
    whole = shard_totals(a, b, groups, signs, 4)
    parts: dict = {}
    for rows in (slice(0, 4), slice(4, 10)):
        fold(parts, shard_totals(a[:, rows], b[:, rows], groups[rows], signs[:, rows], 4))
    assert sorted(parts) == sorted(whole) == [0, 1, 2]  # -1 is in no class
    for c in whole:
        for name in ("count", "sum_a", "sum_b", "observed", "permuted"):
            assert np.allclose(getattr(parts[c], name), getattr(whole[c], name))
    assert whole[0].count.tolist() == [4, 4]
    assert np.allclose(whole[0].sum_a, a[:, groups == 0].sum(1))


def test_a_nan_map_is_left_out_of_its_explainers_sums() -> None:
    a, b = _maps(3, 0), _maps(3, 1)
    a[1, 0] = np.nan
    t = shard_totals(a, b, np.zeros(3, int), shard_signs(0, 0, 5, 3), 4)[0]
    assert t.count.tolist() == [3, 2]
    assert np.isfinite(t.sum_a).all()


def test_signs_are_fixed_by_seed_and_shard() -> None:
    assert np.array_equal(shard_signs(3, 5, 9, 4), shard_signs(3, 5, 9, 4))
    assert not np.array_equal(shard_signs(3, 5, 9, 40), shard_signs(3, 6, 9, 40))
    assert set(np.unique(shard_signs(0, 0, 9, 40))) == {-1.0, 1.0}


def test_no_change_gives_p_one_and_score_zero() -> None:
    a = _maps(20, 0)
    t = shard_totals(a, a, np.zeros(20, int), shard_signs(0, 0, 99, 20), 4)[0]
    test = class_test(t.count[0], t.observed[0], t.permuted[0])
    assert test.statistic == 0.0 and test.p_value == 1.0 and test.score == 0.0


def test_a_consistent_shift_gets_the_smallest_p() -> None:
    a = _maps(20, 0)
    b = a.copy()
    b[:, :, :2, :2] += 0.5  # every image gains relevance in one corner
    t = shard_totals(a, b, np.zeros(20, int), shard_signs(0, 0, 99, 20), 4)[0]
    test = class_test(t.count[0], t.observed[0], t.permuted[0])
    assert test.p_value == pytest.approx(1 / 100)
    assert test.score > 5


def test_holm_matches_its_definition() -> None:
    adjusted = holm([0.01, 0.04, 0.03, np.nan])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(adjusted[3])
