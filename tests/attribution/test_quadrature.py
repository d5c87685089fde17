"""The quadrature rules of the path integral (:mod:`pipeline.attribution.quadrature`)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.attribution.quadrature import QUADRATURE_RULES, quadrature, rule_name


def _g(alpha: np.ndarray) -> np.ndarray:
    return 1.0 + 3.0 * alpha - 2.0 * alpha**2 + np.sin(5.0 * alpha)


@pytest.mark.parametrize("m", [2, 3, 8, 50])
def test_linspace_mean_is_the_mean_over_linspace_including_both_ends(m):
    alphas, weights = quadrature("linspace_mean", m)
    np.testing.assert_array_equal(alphas, np.linspace(0.0, 1.0, m))
    np.testing.assert_array_equal(weights, np.full(m, 1.0 / m))
    # = (m - 1)/m times the left Riemann sum on m - 1 intervals, plus g(1)/m
    left = _g(np.arange(m - 1) / (m - 1)).sum() / (m - 1)
    assert weights @ _g(alphas) == pytest.approx((m - 1) / m * left + _g(np.ones(1))[0] / m,
                                                 rel=1e-14)


@pytest.mark.parametrize("m", [2, 9])
def test_the_stored_spelling_seed_is_linspace_mean(m):
    assert rule_name("seed") == "linspace_mean"
    for got, want in zip(quadrature("seed", m), quadrature("linspace_mean", m), strict=True):
        np.testing.assert_array_equal(got, want)


def test_trapezoid_and_gausslegendre_integrate_what_they_must_exactly():
    """Trapezoid: linear functions; Gauss-Legendre with m nodes: degree 2m - 1."""
    alphas, weights = quadrature("trapezoid", 5)
    assert weights @ (2.0 + 3.0 * alphas) == pytest.approx(3.5, rel=1e-14)
    alphas, weights = quadrature("gausslegendre", 3)
    assert weights @ alphas**5 == pytest.approx(1.0 / 6.0, rel=1e-14)


def test_unknown_rules_and_too_few_points_are_refused():
    assert set(QUADRATURE_RULES) == {"linspace_mean", "trapezoid", "gausslegendre"}
    with pytest.raises(ValueError, match="Expected a quadrature rule in linspace_mean"):
        quadrature("simpson", 5)
    with pytest.raises(ValueError, match="num_samples >= 2"):
        quadrature("linspace_mean", 1)
    assert quadrature("gausslegendre", 1)[1].tolist() == [1.0]
