"""Spectral relevance analysis (SpRAy): the explanation strategies of one class.

Lapuschkin et al. 2019, "Unmasking Clever Hans predictors and assessing what machines really
learn": downsample the normalized maps of the images predicted as one class, connect each map
to its nearest neighbours, and cluster that graph spectrally. The number of clusters is where
the normalized graph Laplacian's sorted eigenvalues jump the most (the eigengap): ``k`` nearly
disconnected groups give ``k`` eigenvalues near zero, then a gap. A class whose model looks at
the object in some images and at a watermark in others splits into (at least) two clusters.

Arrays: maps ``(N, H, W)`` float in [0, 1] (the store's ``normalized``), features
``(N, size * size)``, labels ``(N,)`` int.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

#: Dense eigendecomposition up to this many maps per class; sparse (ARPACK) above.
DENSE_LIMIT = 2000


@dataclass
class Cluster:
    """One explanation strategy of one class under one method (for the report).

    Attributes
    ----------
    cls
        The class the maps explain.
    number
        The cluster's number within the class (0: the largest).
    members
        Image indices, nearest to the cluster's mean first.
    mean
        The mean downsampled map ``(size * size,)``.
    watermark
        Members with a planted watermark, where the dataset plants one; else None.
    """

    cls: int
    number: int
    members: list[int]
    mean: np.ndarray
    watermark: int | None = None


@dataclass(frozen=True)
class Strategies:
    """The clusters of one class's maps.

    Attributes
    ----------
    labels
        ``(N,)`` cluster of each map, numbered by size: 0 is the largest cluster.
    n_clusters
        Number of clusters (the eigengap's choice).
    eigenvalues
        The smallest eigenvalues of the normalized Laplacian, ascending (``max_clusters + 1``
        of them, fewer for tiny classes): what the choice was made from.
    """

    labels: np.ndarray
    n_clusters: int
    eigenvalues: np.ndarray


def downsample(maps: np.ndarray, size: int) -> np.ndarray:
    """Area-average ``(N, H, W)`` maps to ``(N, size * size)`` features.

    Exact block means where ``size`` divides the sides; PIL's box filter (also an area
    average) elsewhere.
    """
    maps = np.asarray(maps, dtype=np.float32)
    n, h, w = maps.shape
    if h % size == 0 and w % size == 0:
        blocks = maps.reshape(n, size, h // size, size, w // size)
        return blocks.mean(axis=(2, 4)).reshape(n, size * size)
    from PIL import Image

    out = np.empty((n, size * size), dtype=np.float32)
    for i, m in enumerate(maps):
        small = Image.fromarray(m, mode="F").resize((size, size), Image.Resampling.BOX)
        out[i] = np.asarray(small, dtype=np.float32).ravel()
    return out


def affinity(features: np.ndarray, n_neighbors: int) -> object:
    """Symmetric k-nearest-neighbour connectivity ``(N, N)`` (sparse): 1 where both maps are
    among each other's neighbours, 0.5 where one is, 0 elsewhere (SpRAy's graph, and what
    scikit-learn's ``affinity="nearest_neighbors"`` builds)."""
    from sklearn.neighbors import kneighbors_graph

    graph = kneighbors_graph(features, n_neighbors=n_neighbors, mode="connectivity",
                             include_self=False)
    return 0.5 * (graph + graph.T)


def laplacian_eigenvalues(graph: object, count: int) -> np.ndarray:
    """The ``count`` smallest eigenvalues of the normalized Laplacian of ``graph``."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import laplacian

    lap = laplacian(sp.csr_matrix(graph), normed=True)
    n = lap.shape[0]
    if n <= DENSE_LIMIT:
        from scipy.linalg import eigh

        return np.asarray(eigh(lap.toarray(), eigvals_only=True, subset_by_index=(0, count - 1)))
    from scipy.sparse.linalg import lobpcg

    # The smallest of L are 1 minus the largest of I - L (the normalized adjacency), found by
    # LOBPCG: a block method, so the repeated eigenvalue 0 of a graph in several parts comes
    # out once per part (single-vector Lanczos finds one copy), and linear in the maps.
    # Shift-invert around 0 (what this did before) factorizes L, whose fill-in made it
    # superlinear: 104 s against well under a second for one class of 7,400 maps, the same
    # eigenvalues (docs/performance.md).
    adjacency = sp.identity(n, format="csr", dtype=np.float64) - lap.astype(np.float64)
    start = np.random.default_rng(0).standard_normal((n, count))
    with warnings.catch_warnings():  # "not reaching the requested tolerance" at 1e-9
        warnings.simplefilter("ignore", UserWarning)
        values, _ = lobpcg(adjacency, start, largest=True, tol=1e-9, maxiter=2000)
    return np.sort(1.0 - np.asarray(values))


def eigengap(eigenvalues: np.ndarray) -> int:
    """The cluster count ``k`` (1-based) that maximises ``lambda_{k+1} - lambda_k``."""
    ev = np.asarray(eigenvalues, dtype=np.float64)
    if ev.size < 2:
        return 1
    return int(np.argmax(np.diff(ev))) + 1


def strategies(maps: np.ndarray, *, size: int = 28, n_neighbors: int = 10,
               max_clusters: int = 8, seed: int = 0) -> Strategies:
    """Cluster one class's maps ``(N, H, W)`` into explanation strategies.

    Parameters
    ----------
    maps
        ``(N, H, W)`` normalized maps of the images predicted as one class (N >= 3).
    size
        Side of the downsampled maps the clustering sees.
    n_neighbors
        Neighbours per map in the affinity graph (capped at ``N - 1``).
    max_clusters
        The most clusters the eigengap may choose (capped at ``N - 1``).
    seed
        Seeds the k-means step of spectral clustering.
    """
    n = len(maps)
    if n < 3:
        raise ValueError(f"Expected at least 3 maps to cluster, got {n}.")
    features = downsample(maps, size)
    graph = affinity(features, min(n_neighbors, n - 1))
    eigenvalues = laplacian_eigenvalues(graph, min(max_clusters, n - 1) + 1)
    k = eigengap(eigenvalues)
    if k == 1:
        labels = np.zeros(n, dtype=np.int64)
    else:
        from sklearn.cluster import SpectralClustering

        with warnings.catch_warnings():  # "graph is not fully connected": exactly our case
            warnings.simplefilter("ignore", UserWarning)
            # ARPACK's shift-invert is superlinear in the maps (90 s at 7,400); LOBPCG is
            # 1.4 s there. Small classes keep ARPACK, so their clusters are as before.
            labels = SpectralClustering(
                n_clusters=k, affinity="precomputed", random_state=seed, n_init=10,
                assign_labels="kmeans",
                eigen_solver="lobpcg" if n > DENSE_LIMIT else None).fit_predict(graph)
    return Strategies(by_size(labels), k, eigenvalues)


def by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters by size, largest first (ties by first member), so that numbers are
    stable across runs and "cluster 0" means the class's most common strategy."""
    labels = np.asarray(labels)
    ids, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = sorted(range(len(ids)), key=lambda i: (-counts[i], first[i]))
    mapping = {int(ids[i]): rank for rank, i in enumerate(order)}
    return np.asarray([mapping[int(v)] for v in labels], dtype=np.int64)


def purity(labels: np.ndarray, truth: np.ndarray) -> float:
    """Cluster purity: each cluster counts its most common ``truth`` value; the sum over
    clusters divided by N. 1.0 means no cluster mixes two kinds (clusters may still split one
    kind into several)."""
    labels, truth = np.asarray(labels), np.asarray(truth)
    if labels.shape != truth.shape or labels.size == 0:
        raise ValueError(f"Expected labels and truth of one non-empty shape, got "
                         f"{labels.shape} and {truth.shape}.")
    total = 0
    for c in np.unique(labels):
        _, counts = np.unique(truth[labels == c], return_counts=True)
        total += int(counts.max())
    return total / labels.size
