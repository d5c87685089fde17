"""From-scratch gradient, straight-line path and Integrated Gradients (the seed's Task 2).

All functions take a batch ``(N, 3, H, W)`` of normalized images and explain each row with
respect to the model's own predicted class for that row. The Integrated Gradients engine
streams the ``N x num_samples`` path points through the model in chunks of at most
``max_batch`` samples, so peak memory depends on ``max_batch``, not on ``num_samples``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import nn

from pipeline.data import black_baseline

Rule = Literal["seed", "trapezoid", "gausslegendre"]
#: Quadrature rules of the custom IG; ``seed`` is the seed's average over ``linspace(0, 1, m)``.
QUADRATURE_RULES: tuple[str, ...] = ("seed", "trapezoid", "gausslegendre")
#: Samples per forward/backward when nobody says otherwise and no planner is at hand.
DEFAULT_MAX_BATCH: int = 32


def predicted_class(model: nn.Module, image: torch.Tensor, max_batch: int | None = None
                    ) -> torch.Tensor:
    """The model's predicted class per row: ``(N, 3, H, W)`` -> ``(N,)`` int64.

    With ``max_batch``, no forward pass sees more than that many rows.
    """
    step = max_batch or max(1, image.shape[0])
    with torch.no_grad():
        return torch.cat([model(image[i:i + step]).argmax(dim=1)
                          for i in range(0, image.shape[0], step)])


def _as_target(target: torch.Tensor | int | None, model: nn.Module, image: torch.Tensor,
               max_batch: int | None = None) -> torch.Tensor:
    if target is None:
        return predicted_class(model, image, max_batch)
    t = torch.as_tensor(target, device=image.device, dtype=torch.long)
    return t.expand(image.shape[0]) if t.ndim == 0 else t


def input_gradient(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Gradient of ``model(inputs)[i, target[i]]`` w.r.t. ``inputs``, one row at a time in effect.

    Rows are independent (eval-mode BatchNorm), so the gradient of the summed selected outputs
    is the per-row gradient.

    Parameters
    ----------
    inputs
        ``(B, 3, H, W)``.
    target
        ``(B,)`` class indices.

    Returns
    -------
    torch.Tensor
        ``(B, 3, H, W)``, the dtype of ``inputs``.
    """
    x = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        selected = out.gather(1, target.view(-1, 1).to(out.device)).sum()
        (grad,) = torch.autograd.grad(selected, x)
    return grad


def get_custom_gradient(
    model: nn.Module,
    image: torch.Tensor,
    absolute: bool = False,
    *,
    target: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """The seed's gradient ``A = d f(x)_c / d x`` for the predicted class ``c`` of each row.

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
    grad = input_gradient(model, image, _as_target(target, model, image))
    return grad.abs() if absolute else grad


def get_path(image: torch.Tensor, baseline: torch.Tensor, num_samples: int) -> list[torch.Tensor]:
    """Points on the straight line ``x_bar + alpha (x - x_bar)``, ``alpha = linspace(0, 1, m)``.

    The first point is the baseline and the last the image, bitwise (they are copied, not
    computed, so rounding cannot move them).

    Parameters
    ----------
    image, baseline
        Tensors of the same shape, e.g. ``(3, H, W)`` or ``(N, 3, H, W)``.
    num_samples
        ``m >= 2``.

    Returns
    -------
    list[torch.Tensor]
        ``m`` tensors shaped like ``image``.
    """
    if num_samples < 2:
        raise ValueError(f"Expected num_samples >= 2 (the path has two ends), got {num_samples}.")
    if image.shape != baseline.shape:
        raise ValueError(
            f"Expected baseline of shape {tuple(image.shape)}, got {tuple(baseline.shape)}."
        )
    alphas = torch.linspace(0.0, 1.0, num_samples, dtype=torch.float64)
    diff = image - baseline
    path = [baseline + float(a) * diff for a in alphas[1:-1]]
    return [baseline.clone(), *path, image.clone()]


def quadrature(rule: str, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``alpha`` in [0, 1] and weights (summing to 1) of a path-integral rule.

    ``seed``: ``linspace(0, 1, m)``, equal weights ``1/m`` (the seed's average of gradients).
    ``trapezoid``: ``linspace(0, 1, m)``, weights ``[1/2, 1, ..., 1, 1/2] / (m - 1)``.
    ``gausslegendre``: Gauss-Legendre nodes and weights mapped to [0, 1].

    Returns
    -------
    (alphas, weights)
        float64 arrays of shape ``(m,)``.
    """
    if rule not in QUADRATURE_RULES:
        raise ValueError(
            f"Expected a quadrature rule in {', '.join(QUADRATURE_RULES)}, got {rule!r}."
        )
    minimum = 1 if rule == "gausslegendre" else 2
    if num_samples < minimum:
        raise ValueError(f"Expected num_samples >= {minimum} for rule {rule!r}, got {num_samples}.")
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(num_samples)
        return (nodes + 1.0) / 2.0, weights / 2.0
    alphas = np.linspace(0.0, 1.0, num_samples)
    if rule == "seed":
        return alphas, np.full(num_samples, 1.0 / num_samples)
    weights = np.full(num_samples, 1.0 / (num_samples - 1))
    weights[[0, -1]] *= 0.5
    return alphas, weights


def integrated_gradients(
    model: nn.Module,
    image: torch.Tensor,
    target: torch.Tensor,
    baseline: torch.Tensor,
    num_samples: int,
    *,
    rule: str = "seed",
    max_batch: int = DEFAULT_MAX_BATCH,
    gradient_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Chunked Integrated Gradients: ``(x - x_bar) * sum_k w_k grad f_c(x_bar + a_k (x - x_bar))``.

    The ``N * m`` path points form one stream cut into chunks of at most ``max_batch``; a chunk
    may span several images. Gradients are accumulated in float64, so the result does not
    depend on the chunking beyond the per-sample gradient's own rounding.

    Parameters
    ----------
    image, baseline
        ``(N, 3, H, W)``.
    target
        ``(N,)`` class per row.
    num_samples
        Path points ``m`` per image.
    rule
        One of :data:`QUADRATURE_RULES`.
    max_batch
        Largest number of samples in one forward/backward.
    gradient_fn
        Replaces :func:`input_gradient` (e.g. a compiled or autocast variant).

    Returns
    -------
    torch.Tensor
        ``(N, 3, H, W)`` attributions in ``image``'s dtype.
    """
    if max_batch < 1:
        raise ValueError(f"Expected max_batch >= 1, got {max_batch}.")
    grad_fn = gradient_fn or input_gradient
    n, m = image.shape[0], num_samples
    alphas_np, weights_np = quadrature(rule, m)
    dev = image.device
    alphas = torch.as_tensor(alphas_np, dtype=image.dtype, device=dev)
    weights = torch.as_tensor(weights_np, dtype=torch.float64, device=dev)
    diff = image - baseline
    acc = torch.zeros(image.shape, dtype=torch.float64, device=dev)
    total = n * m
    for start in range(0, total, max_batch):
        idx = torch.arange(start, min(start + max_batch, total), device=dev)
        rows, steps = idx // m, idx % m
        a = alphas[steps].view(-1, 1, 1, 1)
        points = baseline[rows] + a * diff[rows]
        # The path's end is the image itself, bitwise, as in get_path.
        points = torch.where(a == 1.0, image[rows], points)
        grads = grad_fn(model, points, target[rows])
        acc.index_add_(0, rows, grads.to(torch.float64) * weights[steps].view(-1, 1, 1, 1))
    return (diff.to(torch.float64) * acc).to(image.dtype)


def get_custom_integrated_gradients(
    model: nn.Module,
    image: torch.Tensor,
    num_samples: int,
    *,
    baseline: torch.Tensor | None = None,
    max_batch: int | None = None,
    rule: str = "seed",
    target: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """The seed's Integrated Gradients: ``(x - x_bar) * mean of the gradients on the path``.

    Parameters
    ----------
    model
        Classifier mapping ``(N, 3, H, W)`` to ``(N, C)``.
    image
        ``(N, 3, H, W)`` normalized images.
    num_samples
        Points on the path, ``alpha = linspace(0, 1, num_samples)``.
    baseline
        ``(N, 3, H, W)`` or ``(3, H, W)``; default: the normalized black image.
    max_batch
        Samples per forward/backward; default chosen by :mod:`pipeline.planner` from the
        device's memory.
    rule
        ``seed`` (default), ``trapezoid`` or ``gausslegendre``.
    target
        Override the class per row; default: the model's prediction.

    Returns
    -------
    torch.Tensor
        ``(N, 3, H, W)``.
    """
    base = black_baseline(image) if baseline is None else baseline.expand_as(image)
    if max_batch is None:
        from pipeline.planner import plan_max_batch

        max_batch = plan_max_batch(model, tuple(image.shape[1:]), image.device)
    return integrated_gradients(
        model, image, _as_target(target, model, image, max_batch), base, num_samples,
        rule=rule, max_batch=max_batch,
    )
