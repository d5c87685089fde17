"""Spectral relevance analysis: exact answers on planted map families."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluation.spray import by_size, downsample, eigengap, purity, strategies


def _family(rng: np.random.Generator, centre: tuple[int, int], n: int, side: int = 56
            ) -> list[np.ndarray]:
    """``n`` maps with a jittered Gaussian blob at ``centre`` plus uniform noise, in [0, 1]."""
    yy, xx = np.mgrid[:side, :side]
    out = []
    for _ in range(n):
        cy, cx = np.asarray(centre) + rng.normal(0, 2, 2)
        m = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30) + rng.uniform(0, 0.2, (side, side))
        out.append(m / m.max())
    return out


def test_downsample_is_the_block_mean() -> None:
    maps = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    got = downsample(maps, 2)
    want = maps.reshape(2, 2, 2, 2, 2).mean(axis=(2, 4)).reshape(2, 4)
    np.testing.assert_array_equal(got, want)
    assert got[0].tolist() == [2.5, 4.5, 10.5, 12.5]


def test_downsample_of_an_uneven_size_keeps_the_mean() -> None:
    maps = np.random.default_rng(0).random((3, 30, 30)).astype(np.float32)
    got = downsample(maps, 7)
    assert got.shape == (3, 49)
    np.testing.assert_allclose(got.mean(axis=1), maps.mean(axis=(1, 2)), atol=0.02)


def test_eigengap_picks_the_largest_jump() -> None:
    assert eigengap(np.array([0.0, 0.0, 0.01, 0.6, 0.7])) == 3
    assert eigengap(np.array([0.0, 0.9, 0.95])) == 1
    assert eigengap(np.array([0.0])) == 1


@pytest.mark.parametrize("sizes", [(15, 25), (15, 25, 10)])
def test_planted_strategies_are_found_exactly(sizes: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    centres = [(10, 10), (40, 40), (10, 45)]
    maps = np.stack([m for k, n in enumerate(sizes) for m in _family(rng, centres[k], n)])
    truth = np.repeat(np.arange(len(sizes)), sizes)
    found = strategies(maps, size=28, n_neighbors=8)
    assert found.n_clusters == len(sizes)
    assert purity(found.labels, truth) == 1.0
    # numbered by size: the 25-map family is cluster 0
    assert set(found.labels[truth == 1]) == {0}
    assert found.eigenvalues[0] == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("seed", range(6))
def test_one_family_is_one_connected_graph_and_never_split_into_singletons(seed: int) -> None:
    """Nothing planted: the graph is connected (the second eigenvalue is far from the zero a
    second family gives, 0.18 or more here), so a split is the eigengap cutting noise, and
    it never cuts off a few maps alone. (SpRAy's eigengap does split one family: seeds 1-5
    give 2 or 3 clusters of 6 or more maps each, seed 0 one cluster.)"""
    rng = np.random.default_rng(seed)
    maps = np.stack(_family(rng, (28, 28), 30))
    found = strategies(maps, size=28, max_clusters=6)
    assert found.eigenvalues[1] > 0.15
    assert np.bincount(found.labels).min() >= 6


def test_too_few_maps_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least 3 maps"):
        strategies(np.zeros((2, 8, 8)))


def test_clusters_are_numbered_by_size_then_first_member() -> None:
    assert by_size(np.array([5, 7, 7, 5, 9, 7])).tolist() == [1, 0, 0, 1, 2, 0]
    assert by_size(np.array([3, 4])).tolist() == [0, 1]


def test_purity_counts_each_clusters_majority() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2])
    truth = np.array([1, 1, 0, 0, 0, 1])
    assert purity(labels, truth) == pytest.approx(5 / 6)
    assert purity(np.zeros(4), np.array([0, 1, 0, 1])) == 0.5
    with pytest.raises(ValueError, match="one non-empty shape"):
        purity(np.zeros(3), np.zeros(4))


def _planted(sizes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    centres = [(10, 10), (40, 40), (10, 45)]
    maps = np.stack([m for k, n in enumerate(sizes) for m in _family(rng, centres[k], n)])
    return maps, np.repeat(np.arange(len(sizes)), sizes)


def test_the_sparse_eigenvalues_equal_the_dense_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above ``DENSE_LIMIT`` maps the eigenvalues come from Lanczos on the normalized
    adjacency: the same numbers as the dense decomposition of the Laplacian."""
    from pipeline.evaluation import spray

    maps, _ = _planted((60, 90, 50))
    graph = spray.affinity(spray.downsample(maps, 28), 8)
    dense = spray.laplacian_eigenvalues(graph, 9)
    monkeypatch.setattr(spray, "DENSE_LIMIT", 10)
    sparse = spray.laplacian_eigenvalues(graph, 9)
    np.testing.assert_allclose(sparse, dense, atol=1e-7)
    assert spray.eigengap(sparse) == 3


def test_planted_strategies_are_found_exactly_on_the_sparse_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Large classes (LOBPCG for the embedding, Lanczos for the eigenvalues) find the same
    families as small ones."""
    from pipeline.evaluation import spray

    maps, truth = _planted((60, 90, 50))
    small = strategies(maps, size=28, n_neighbors=8)
    monkeypatch.setattr(spray, "DENSE_LIMIT", 10)
    large = strategies(maps, size=28, n_neighbors=8)
    assert large.n_clusters == small.n_clusters == 3
    assert purity(large.labels, truth) == 1.0
    np.testing.assert_array_equal(large.labels, small.labels)
