"""The quadrature rules of the path integral in Integrated Gradients: nodes and weights.

Integrated Gradients integrates the gradient along the straight path from the baseline to the
image, ``int_0^1 g(alpha) d alpha``; a rule replaces the integral by ``sum_k w_k g(alpha_k)``.

``linspace_mean``
    The mean of the gradients at ``alpha = linspace(0, 1, m)``: ``m`` equally spaced points
    that include both ends, each weighted ``1/m``. A Riemann-type sum whose error is of order
    ``1/m``: it equals ``(m - 1)/m`` times the left Riemann sum on ``m - 1`` intervals plus
    ``g(1)/m``. The default of the from-scratch method and of the original function API.
``trapezoid``
    The trapezoid rule on the same points: weights ``[1/2, 1, ..., 1, 1/2] / (m - 1)``.
``gausslegendre``
    Gauss-Legendre nodes and weights mapped to ``[0, 1]`` (Captum's default).

Numpy only: configs and the CLI read the names without torch.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

QuadratureRule = Literal["linspace_mean", "trapezoid", "gausslegendre"]

#: The rules, by the name configs and the engine use.
QUADRATURE_RULES: tuple[str, ...] = ("linspace_mean", "trapezoid", "gausslegendre")

#: Other accepted spellings of a rule, and the rule they mean. ``seed`` is how stores and
#: stage hashes spell ``linspace_mean`` (see ``pipeline.attribution.method_registry.Param``).
RULE_SPELLINGS: dict[str, str] = {"seed": "linspace_mean"}


def rule_name(rule: str) -> str:
    """``rule`` under the name :data:`QUADRATURE_RULES` uses (an accepted spelling mapped)."""
    return RULE_SPELLINGS.get(rule, rule)


def quadrature(rule: str, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``alpha`` in ``[0, 1]`` and weights (summing to 1) of a path-integral rule.

    Parameters
    ----------
    rule
        One of :data:`QUADRATURE_RULES` (or a spelling in :data:`RULE_SPELLINGS`).
    num_samples
        ``m``, the number of nodes: at least 2 (at least 1 for ``gausslegendre``).

    Returns
    -------
    (alphas, weights)
        float64 arrays of shape ``(m,)``.
    """
    name = rule_name(rule)
    if name not in QUADRATURE_RULES:
        raise ValueError(
            f"Expected a quadrature rule in {', '.join(QUADRATURE_RULES)}, got {rule!r}."
        )
    minimum = 1 if name == "gausslegendre" else 2
    if num_samples < minimum:
        raise ValueError(f"Expected num_samples >= {minimum} for rule {rule!r}, got {num_samples}.")
    if name == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(num_samples)
        return (nodes + 1.0) / 2.0, weights / 2.0
    alphas = np.linspace(0.0, 1.0, num_samples)
    if name == "linspace_mean":
        return alphas, np.full(num_samples, 1.0 / num_samples)
    weights = np.full(num_samples, 1.0 / (num_samples - 1))
    weights[[0, -1]] *= 0.5
    return alphas, weights
