"""Matching two runs' strategies of a class by their members."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.comparison.strategies import jaccard, match_strategies


def test_equal_clusterings_match_one_to_one_whatever_their_numbers() -> None:
    a = np.array([0, 0, 1, 1, 2, -1])
    b = np.array([2, 2, 0, 0, 1, -1])
    rows = match_strategies(a, b)
    assert {(r.kind, r.cluster_a, r.cluster_b, r.overlap) for r in rows} == {
        ("matched", 0, 2, 1.0), ("matched", 1, 0, 1.0), ("matched", 2, 1, 1.0)}


def test_a_split_cluster_is_matched_once_and_its_rest_appears() -> None:
    a = np.array([0] * 8 + [1] * 4)
    b = np.array([0] * 5 + [2] * 3 + [1] * 4)
    rows = {(r.kind, r.cluster_a, r.cluster_b) for r in match_strategies(a, b)}
    assert rows == {("matched", 0, 0), ("matched", 1, 1), ("appeared", -1, 2)}
    matched = next(r for r in match_strategies(a, b) if r.cluster_a == 0)
    assert matched.share_a == pytest.approx(8 / 12) and matched.share_b == pytest.approx(5 / 12)


def test_a_strategy_gone_from_b_disappeared() -> None:
    a = np.array([0, 0, 1, 1])
    b = np.array([0, 0, -1, -1])
    kinds = sorted(r.kind for r in match_strategies(a, b))
    assert kinds == ["disappeared", "matched"]


def test_jaccard() -> None:
    a = np.array([[1, 1, 0, 0]], bool)
    b = np.array([[0, 1, 1, 0], [0, 0, 0, 0]], bool)
    assert jaccard(a, b).tolist() == [[1 / 3, 0.0]]
