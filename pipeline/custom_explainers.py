"""The original function API of the from-scratch explainers: the input gradient, the
straight-line path and Integrated Gradients.

All functions take a batch ``(N, 3, H, W)`` of normalized images and explain each row with
respect to the model's own predicted class for that row. They call the engines of
:mod:`pipeline.attribution`: the gradient (:mod:`~pipeline.attribution.gradient`), the
chunked path engine (:mod:`~pipeline.attribution.path_engine`, peak memory set by
``max_batch``, not by the number of path points) and its quadrature rules
(:mod:`~pipeline.attribution.quadrature`).
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.attribution.gradient import as_target, input_gradient, predicted_class
from pipeline.attribution.path_engine import (
    DEFAULT_MAX_BATCH,
    GradientFn,
    integrated_gradients,
    straight_line_path,
)
from pipeline.attribution.quadrature import QUADRATURE_RULES, QuadratureRule, quadrature
from pipeline.data.images import black_baseline

#: The quadrature rule names of :func:`get_custom_integrated_gradients` (the original API's
#: name for :data:`pipeline.attribution.quadrature.QuadratureRule`).
Rule = QuadratureRule

# The original function API: these names stay importable from here.
__all__ = [
    "DEFAULT_MAX_BATCH", "QUADRATURE_RULES", "GradientFn", "Rule", "get_custom_gradient",
    "get_custom_integrated_gradients", "get_path", "input_gradient", "integrated_gradients",
    "predicted_class", "quadrature",
]


def get_custom_gradient(
    model: nn.Module,
    image: torch.Tensor,
    absolute: bool = False,
    *,
    target: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """The gradient ``A = d f(x)_c / d x`` for the predicted class ``c`` of each row.

    Parameters
    ----------
    model
        Classifier mapping ``(N, 3, H, W)`` to ``(N, C)``.
    image
        ``(N, 3, H, W)`` normalized images.
    absolute
        Return ``|A|`` (as Captum ``Saliency`` does by default).
    target
        Override the class per row; default: the model's prediction.

    Returns
    -------
    torch.Tensor
        ``(N, 3, H, W)``.
    """
    grad = input_gradient(model, image, as_target(target, model, image))
    return grad.abs() if absolute else grad


def get_path(image: torch.Tensor, baseline: torch.Tensor, num_samples: int) -> list[torch.Tensor]:
    """Points on the straight line ``x_bar + alpha (x - x_bar)``, ``alpha = linspace(0, 1, m)``.

    The first point is the baseline and the last the image, bitwise. ``image`` and
    ``baseline`` have one shape, e.g. ``(3, H, W)`` or ``(N, 3, H, W)``; ``m >= 2``. See
    :func:`pipeline.attribution.path_engine.straight_line_path`.

    Returns
    -------
    list[torch.Tensor]
        ``m`` tensors shaped like ``image``.
    """
    return straight_line_path(image, baseline, num_samples)


def get_custom_integrated_gradients(
    model: nn.Module,
    image: torch.Tensor,
    num_samples: int,
    *,
    baseline: torch.Tensor | None = None,
    max_batch: int | None = None,
    rule: str = "linspace_mean",
    target: torch.Tensor | int | None = None,
    tolerance: float = 0.01,
    max_steps: int = 512,
    criterion: str = "completeness",
) -> torch.Tensor:
    """Integrated Gradients: ``(x - x_bar) * mean of the gradients on the path`` by default.

    Parameters
    ----------
    model
        Classifier mapping ``(N, 3, H, W)`` to ``(N, C)``.
    image
        ``(N, 3, H, W)`` normalized images.
    num_samples
        Points on the path (``alpha = linspace(0, 1, num_samples)`` for ``linspace_mean``).
    baseline
        ``(N, 3, H, W)`` or ``(3, H, W)``; default: the normalized black image.
    max_batch
        Samples per forward/backward; default chosen by
        :mod:`pipeline.attribution.memory_planner` from the device's memory.
    rule
        ``linspace_mean`` (default; also spelled ``seed``), ``trapezoid``,
        ``gausslegendre`` (see :mod:`pipeline.attribution.quadrature`) or ``adaptive`` (to
        ``tolerance``, at most ``max_steps`` points, ``num_samples`` the starting grid).
    target
        Override the class per row; default: the model's prediction.

    Returns
    -------
    torch.Tensor
        ``(N, 3, H, W)``.
    """
    base = black_baseline(image) if baseline is None else baseline.expand_as(image)
    if max_batch is None:
        from pipeline.attribution.memory_planner import plan_max_batch

        max_batch = plan_max_batch(model, tuple(image.shape[1:]), image.device)
    return integrated_gradients(
        model, image, as_target(target, model, image, max_batch), base, num_samples,
        rule=rule, max_batch=max_batch, tolerance=tolerance, max_steps=max_steps,
        criterion=criterion,
    )
