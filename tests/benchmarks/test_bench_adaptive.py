"""The quadrature benchmark's oracle: exact answers on paths whose integral is known."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from benchmarks.bench_adaptive import (
    DensePath,
    bisection_needed,
    dense_path,
    density_bound,
    reference,
    uniform_needed,
    window_needed,
)

K = 256


def _path(profile: np.ndarray, seed: int = 0) -> DensePath:
    """``D[k] = profile[k] * v`` for one seeded direction ``v`` of 12 map entries."""
    v = np.random.default_rng(seed).standard_normal(12)
    return DensePath((profile[:, None] * v[None, :]).astype(np.float32))


def test_the_reference_is_the_trapezoid_on_every_node_and_interval_errors_add_up():
    rng = np.random.default_rng(1)
    path = DensePath(rng.standard_normal((K + 1, 12)).astype(np.float32))
    assert path.error(np.arange(K + 1)) == pytest.approx(0.0, abs=1e-12)
    nodes = np.array([0, 17, 64, 65, 200, K])
    total = sum(path.interval_error(p, q) for p, q in itertools.pairwise(nodes))
    a = nodes / K
    w = np.zeros(len(nodes))
    w[:-1] += np.diff(a) / 2
    w[1:] += np.diff(a) / 2
    np.testing.assert_allclose(total, w @ path.d[nodes].astype(np.float64) - path.ref,
                               atol=1e-12)


def test_a_linear_path_needs_two_uniform_nodes_and_no_bisection():
    path = _path(np.linspace(0.0, 1.0, K + 1))
    # within float32's rounding of the stored path
    assert uniform_needed(path, 1e-6, 50) == 2
    assert bisection_needed(path, 1e-6, 3, 50) == 3  # already exact on the starting grid
    assert window_needed(path, 1e-6, 50) == 3


@pytest.mark.parametrize("threshold", [0.05, 0.01])
def test_uniform_needed_is_the_smallest_count_within_the_threshold(threshold):
    alpha = np.linspace(0.0, 1.0, K + 1)
    path = _path(np.exp(-((alpha - 0.6) / 0.05) ** 2) + 0.1 * (alpha > 0.3))
    n = uniform_needed(path, threshold, 200)
    assert n is not None
    assert path.error(path.uniform(n)) <= threshold < path.error(path.uniform(n - 1))


def test_placement_saves_points_where_the_mass_sits_in_a_narrow_band():
    # a rough band on [0.55, 0.7] (a new value every 2 nodes), nothing elsewhere: what the
    # softmax head of a trained ReLU network looks like along the path
    band = np.zeros(K + 1)
    band[141:180] = np.repeat(np.random.default_rng(2).uniform(0.5, 1.5, 20), 2)[:39]
    path = _path(band)
    u = uniform_needed(path, 0.01, 200)
    b = bisection_needed(path, 0.01, 9, 200)
    w = window_needed(path, 0.01, u)
    assert u is not None and b is not None and w is not None
    assert b < u and w < u


def test_a_single_jump_is_found_by_bisection():
    # the integrand jumps once, inside the interval [24, 32] of a 9-node start on K = 64
    profile = (np.arange(65) >= 27).astype(float)
    path = _path(profile)
    assert path.error(path.uniform(9)) > 0.01
    # each bisection halves the interval that holds the jump and nothing else is wrong
    assert bisection_needed(path, 1e-12, 9, 40) == 9 + 3


def test_the_window_never_needs_more_than_the_uniform_rule():
    rng = np.random.default_rng(3)
    path = DensePath(rng.standard_normal((65, 12)).astype(np.float32))
    u = uniform_needed(path, 0.05, 65)
    assert u is not None
    w = window_needed(path, 0.05, u)
    assert w is not None and w <= u


def test_dense_path_of_a_linear_model_is_its_weights_times_the_difference():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).double()
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    base = torch.zeros_like(x)
    d, f = dense_path(model, x, torch.tensor([1]), base, points=8, max_batch=3)
    expected = (model[1].weight[1].detach() * (x - base).flatten()).numpy()
    assert d.shape == (9, 48) and f.shape == (9,)
    np.testing.assert_allclose(d, np.broadcast_to(expected, (9, 48)), rtol=1e-6)
    with torch.no_grad():
        ends = model(torch.cat([base, x]))[:, 1].numpy()
    np.testing.assert_allclose(f[[0, -1]], ends, rtol=1e-12)
    np.testing.assert_allclose(np.diff(f), np.diff(f)[0], rtol=1e-9)  # linear in alpha


def test_the_density_bound_is_one_for_even_roughness_and_two_for_a_quarter_of_the_path():
    # odd nodes carry the map, even ones nothing: every block's trapezoid misses the same
    odd = (np.arange(K + 1) % 2).astype(float)
    assert density_bound(_path(odd), blocks=16) == pytest.approx(1.0)
    band = odd * ((np.arange(K + 1) >= 64) & (np.arange(K + 1) <= 128))
    # rough on 4 of 16 blocks: sqrt(mean c) / mean(sqrt c) = 1 / sqrt(1/4)
    assert density_bound(_path(band), blocks=16) == pytest.approx(2.0)


def test_the_reference_is_kept_by_the_cache_and_recomputed_for_other_settings(tmp_path):
    class Boom(nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise AssertionError("the cached reference should have been used")

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    x, target = torch.randn(2, 3, 4, 4), torch.tensor([0, 1])
    base = torch.zeros_like(x)
    ref, half = reference(model, x, target, base, 8, 4, str(tmp_path))
    assert len(list(tmp_path.glob("reference-*.pt"))) == 1
    boom = Boom(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    boom.load_state_dict(model.state_dict())
    again, again_half = reference(boom, x, target, base, 8, 4, str(tmp_path))
    assert torch.equal(again, ref) and torch.equal(again_half, half)
    assert ref.dtype == torch.float64
    with pytest.raises(AssertionError, match="cached"):
        reference(boom, x, target, base, 16, 4, str(tmp_path))  # other settings


def test_parse_args_converts_and_names_a_bad_key() -> None:
    from benchmarks.bench_adaptive import parse_args

    assert parse_args(["images=24", "cases=evidence/softmax,random/logits", "ref_cache=/tmp/r",
                       "quick=1"]) == {"images": 24, "cases": ("evidence/softmax", "random/logits"),
                                       "ref_cache": "/tmp/r", "quick": True}
    with pytest.raises(ValueError, match="got 'imags'"):
        parse_args(["imags=24"])
    with pytest.raises(ValueError, match="integer for oracle, got 'x'"):
        parse_args(["oracle=x"])
    with pytest.raises(ValueError, match="key=value"):
        parse_args(["images"])


def test_stats_median_p90_and_each_image_with_unreached_as_beyond_the_grid() -> None:
    from benchmarks.bench_adaptive import _stats

    v = np.array([10.0, 20.0, 30.0, np.inf])
    s = _stats(v)
    assert s["median"] == 25.0 and s["p90"] is None and s["reached"] == 3
    assert s["per_image"] == [10.0, 20.0, 30.0, None]
    s = _stats(np.arange(1.0, 13.0))  # 12 images: the p90 is the second-hardest
    assert s["median"] == 6.5 and s["p90"] == 11.0
