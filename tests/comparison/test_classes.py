"""Running class sums, the mean maps' resolution and the sign-flip permutation test."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pipeline.comparison.classes import (
    FIRST_DRAWS,
    MEAN_MAP_BUDGET,
    STOP_AFTER,
    fold,
    grid_differences,
    holm,
    mean_map_side,
    permutations_for,
    reduce_maps,
    shard_totals,
    sign_flip_test,
)


def _maps(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((2, n, 8, 8))


def test_folding_shards_gives_the_sums_of_the_whole() -> None:
    a, b = _maps(10, 0), _maps(10, 1)
    groups = np.array([0, 1, 0, 2, 1, 0, -1, 2, 0, 1])
    whole = shard_totals(a, b, groups, 8)
    parts: dict = {}
    for rows in (slice(0, 4), slice(4, 10)):
        fold(parts, shard_totals(a[:, rows], b[:, rows], groups[rows], 8))
    assert sorted(parts) == sorted(whole) == [0, 1, 2]  # -1 is in no class
    for c in whole:
        for name in ("count", "sum_a", "sum_b"):
            assert np.allclose(getattr(parts[c], name), getattr(whole[c], name))
    assert whole[0].count.tolist() == [4, 4]
    assert np.allclose(whole[0].sum_a, a[:, groups == 0].sum(1))


def test_the_sums_on_a_coarser_side_are_the_block_means_of_the_sums() -> None:
    a, b = _maps(6, 0), _maps(6, 1)
    groups = np.zeros(6, int)
    full, coarse = shard_totals(a, b, groups, 8)[0], shard_totals(a, b, groups, 4)[0]
    assert coarse.sum_a.shape == (2, 4, 4)
    blocks = full.sum_b.reshape(2, 4, 2, 4, 2).mean(axis=(2, 4))
    assert np.allclose(coarse.sum_b, blocks)


def test_a_nan_map_is_left_out_of_its_explainers_sums() -> None:
    a, b = _maps(3, 0), _maps(3, 1)
    a[1, 0] = np.nan
    t = shard_totals(a, b, np.zeros(3, int), 8)[0]
    assert t.count.tolist() == [3, 2]
    assert np.isfinite(t.sum_a).all()


def test_mean_maps_keep_their_size_while_the_sums_fit_the_budget() -> None:
    assert mean_map_side(6, 3, 112) == 112
    # 1,000 ImageNet classes, 5 methods, 224 px: 8 GB at full size; the largest divisor of
    # 224 whose sums fit is 32 (exact 7x7 block means).
    side = mean_map_side(1000, 5, 224)
    assert side == 32
    assert 2 * 2 * 8 * 1000 * 5 * side**2 <= MEAN_MAP_BUDGET
    # No divisor near the largest side that fits: that side, as an area average.
    assert mean_map_side(1000, 5, 227) == 40
    assert reduce_maps(np.ones((2, 227, 227)), 40).shape == (2, 40, 40)


def test_grid_differences_mark_a_missing_map_with_a_nan_row() -> None:
    a, b = _maps(3, 0)[0], _maps(3, 1)[0]
    a[2] = np.nan
    d = grid_differences(a, b, 4)
    assert d.shape == (3, 16) and d.dtype == np.float32
    assert np.isnan(d[2]).all() and np.isfinite(d[:2]).all()
    assert np.allclose(d[0], (b[0] - a[0]).reshape(4, 2, 4, 2).mean(axis=(1, 3)).ravel())


def test_no_change_gives_p_one_and_score_zero_and_stops_early() -> None:
    test = sign_flip_test(np.zeros((20, 16)), (0, 0, 0, 0), 999)
    assert test.statistic == 0.0 and test.p_value == 1.0 and test.score == 0.0
    assert test.permutations == STOP_AFTER


def test_a_consistent_shift_gets_the_smallest_p_of_all_permutations_drawn() -> None:
    rng = np.random.default_rng(0)
    diffs = rng.normal(0.0, 0.1, (20, 16)) + 0.5  # every image gains relevance everywhere
    test = sign_flip_test(diffs, (0, 0, 0, 0), 4999)
    assert test.permutations == 4999
    assert test.p_value == pytest.approx(1 / 5000)
    assert test.score > 5


def test_the_p_value_estimates_the_exact_one_over_every_sign_pattern() -> None:
    rng = np.random.default_rng(0)
    diffs = rng.normal(0.4, 1.0, (10, 4)).astype(np.float32)
    stats = [np.linalg.norm(np.asarray(s, np.float32) @ diffs)
             for s in itertools.product((-1.0, 1.0), repeat=10)]
    observed = np.linalg.norm(diffs.sum(0))
    exact = float(np.mean(np.asarray(stats) >= observed * (1 - 1e-5)))
    test = sign_flip_test(diffs, (3, 0, 0, 0), 20_000)
    assert 0.02 < exact < 0.5  # a p the test must estimate, not an extreme one
    # Besag and Clifford's p (10 hits) is exact in distribution, and near the exact p.
    assert test.p_value == pytest.approx(exact, rel=0.6)


def test_under_no_change_p_is_uniform_so_flags_stay_at_alpha() -> None:
    rng = np.random.default_rng(2)
    p = np.array([sign_flip_test(rng.normal(0, 1, (12, 16)), (0, 0, 0, k), 999).p_value
                  for k in range(300)])
    assert (p <= 0.05).mean() <= 0.09      # alpha 0.05, 3 binomial sd above
    assert (p <= 0.5).mean() >= 0.35       # not a test that never rejects
    assert holm(p).min() > 0.05            # none of 300 unchanged classes flagged


def test_the_coins_are_fixed_by_the_key() -> None:
    diffs = np.random.default_rng(4).normal(0, 1, (15, 16))
    assert sign_flip_test(diffs, (1, 0, 2, 3), 999) == sign_flip_test(diffs, (1, 0, 2, 3), 999)
    assert sign_flip_test(diffs, (1, 0, 2, 3), 999).null_mean != \
        sign_flip_test(diffs, (1, 0, 2, 4), 999).null_mean


def test_nan_rows_are_left_out_and_an_empty_class_is_nan() -> None:
    diffs = np.random.default_rng(5).normal(0, 1, (6, 16))
    with_nan = np.vstack([diffs, np.full((2, 16), np.nan)])
    assert sign_flip_test(with_nan, (0,), 999) == sign_flip_test(diffs, (0,), 999)
    assert np.isnan(sign_flip_test(np.full((2, 16), np.nan), (0,), 999).p_value)


def test_enough_permutations_for_holm_to_flag_every_class() -> None:
    assert permutations_for(4, 0.01) == FIRST_DRAWS
    assert permutations_for(6, 0.01) == 1199
    assert permutations_for(1000, 0.01) == 199_999
    for classes, alpha in ((1000, 0.01), (250, 0.05), (37, 0.001)):
        most = permutations_for(classes, alpha)
        # The smallest p survives Holm's first step with room for a draw reaching T.
        assert classes * 2 / (most + 1) <= alpha


def test_holm_matches_its_definition() -> None:
    adjusted = holm([0.01, 0.04, 0.03, np.nan])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert np.isnan(adjusted[3])
