"""Integrated Gradients to a tolerance: path points placed where the integral needs them.

Every gradient evaluation at a path point ``alpha`` also gives ``F(alpha)``, the target output
there, and the directional derivative ``s(alpha) = grad F . (x - x_bar)``. On an interval
``[a, b]`` of the path the exact change ``F(b) - F(a)`` can be compared with what the
trapezoid rule credits to it, ``(b - a) (s(a) + s(b)) / 2``: the interval's completeness
residual. An image starts on a uniform grid; each round, the intervals with the largest
residuals are bisected, until the summed residual is at most ``tolerance * |F(x) - F(x_bar)|``
or the image has ``max_steps`` points. The attribution is the trapezoid rule on the final
points.

Rounds are batched across images: each round's new points, from every image still refining,
are cut into chunks of at most ``max_batch`` samples, so the device stays busy as images drop
out, and the result does not depend on how images are grouped or chunked (each point's
gradient is computed alone in effect; sums run in float64 in a fixed order).

Memory: the gradients at an image's points are kept until it is done (the trapezoid weights
of old points change when a neighbour interval is bisected), so at most
``max_steps * images_in_flight`` gradients are held; ``max_points`` bounds that, and images
wait until there is room.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

#: Gaps ``|F(x) - F(x_bar)|`` below this are treated as zero: nothing to converge to.
ZERO_GAP = 1e-12


@dataclass
class _Image:
    """One image's path points while it refines (alphas sorted)."""

    alphas: list[float]
    values: dict[float, float] = field(default_factory=dict)      # F(alpha)
    slopes: dict[float, float] = field(default_factory=dict)      # s(alpha)
    grads: dict[float, torch.Tensor] = field(default_factory=dict)
    jumps: dict[tuple[float, float], float] = field(default_factory=dict)
    done: bool = False
    residual: float = float("nan")
    zero_gap: bool = False


@dataclass(frozen=True)
class AdaptiveResult:
    """Attributions ``(N, 3, H, W)``; per image: path points used ``(N,)`` int64, the final
    relative residual ``(N,)`` float64 (summed interval residuals over ``|F(x) - F(x_bar)|``;
    NaN where that gap is zero), and whether the gap was zero ``(N,)`` bool."""

    attributions: torch.Tensor
    steps: np.ndarray
    residual: np.ndarray
    zero_gap: np.ndarray
    evaluations: int


def values_and_gradients(model: nn.Module, inputs: torch.Tensor, target: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """``F = model(inputs)[i, target[i]]`` ``(B,)`` and its gradient ``(B, 3, H, W)``."""
    x = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        selected = out.gather(1, target.view(-1, 1).to(out.device)).view(-1)
        (grad,) = torch.autograd.grad(selected.sum(), x)
    return selected.detach(), grad


def interval_residuals(alphas: list[float], values: dict[float, float],
                       slopes: dict[float, float]) -> np.ndarray:
    """``|F(b) - F(a) - (b - a)(s(a) + s(b)) / 2|`` per interval ``(len(alphas) - 1,)``."""
    a = np.asarray(alphas)
    f = np.asarray([values[v] for v in alphas])
    s = np.asarray([slopes[v] for v in alphas])
    return np.abs(np.diff(f) - np.diff(a) * (s[:-1] + s[1:]) / 2)


def _to_bisect(residuals: np.ndarray, excess: float, room: int) -> list[int]:
    """The intervals to bisect: largest residuals first until they cover ``excess`` (at least
    one), at most ``room``; ties by position, so the choice is deterministic."""
    order = sorted(range(len(residuals)), key=lambda i: (-residuals[i], i))
    chosen: list[int] = []
    covered = 0.0
    for i in order:
        if len(chosen) >= room or (chosen and covered >= excess):
            break
        chosen.append(i)
        covered += float(residuals[i])
    return sorted(chosen)


#: Stopping criteria: ``completeness`` (the summed interval residuals against
#: ``|F(x) - F(x_bar)|``) or ``map`` (an estimate of the map's relative L2 error from the
#: gradient jumps across each interval, see :func:`map_error`).
CRITERIA: tuple[str, ...] = ("completeness", "map")


def interval_jumps(st: _Image, diff64: torch.Tensor) -> np.ndarray:
    """Per interval ``[a, b]``: ``(b - a) / 2 * ||(g(b) - g(a)) * (x - x_bar)||``, the most
    the trapezoid rule can be off on it (in L2 over the map) when the gradient jumps once
    inside it, as it does on a ReLU network. Cached per interval."""
    out = []
    for a, b in zip(st.alphas[:-1], st.alphas[1:], strict=True):
        if (a, b) not in st.jumps:
            d = (st.grads[b].to(torch.float64) - st.grads[a].to(torch.float64)) * diff64
            st.jumps[(a, b)] = (b - a) / 2 * float(d.norm())
        out.append(st.jumps[(a, b)])
    return np.asarray(out)


def _weighted_sum(st: _Image, like: torch.Tensor) -> torch.Tensor:
    """The trapezoid rule's gradient average on the image's current points, float64."""
    total = torch.zeros(like.shape, dtype=torch.float64, device=like.device)
    for weight, v in zip(trapezoid_weights(st.alphas), st.alphas, strict=True):
        total += float(weight) * st.grads[v].to(torch.float64)
    return total


def trapezoid_weights(alphas: list[float]) -> np.ndarray:
    """Trapezoid weights of sorted nodes on [0, 1] (they sum to 1)."""
    a = np.asarray(alphas, dtype=np.float64)
    w = np.zeros_like(a)
    d = np.diff(a)
    w[:-1] += d / 2
    w[1:] += d / 2
    return w


def adaptive_integrated_gradients(
    model: nn.Module,
    image: torch.Tensor,
    target: torch.Tensor,
    baseline: torch.Tensor,
    num_samples: int = 17,
    *,
    tolerance: float = 0.01,
    max_steps: int = 512,
    max_batch: int = 32,
    max_points: int | None = None,
    criterion: str = "completeness",
    gradient_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor],
                          tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> AdaptiveResult:
    """Integrated Gradients of each row of ``image`` to ``tolerance``.

    Parameters
    ----------
    image, baseline
        ``(N, 3, H, W)``.
    target
        ``(N,)`` class per row.
    num_samples
        Points of the starting uniform grid (>= 2).
    tolerance
        Stop when the summed interval residuals are at most ``tolerance * |F(x) - F(x_bar)|``
        (0 < tolerance < 1).
    max_steps
        The most path points an image may use (>= ``num_samples``).
    max_batch
        Largest number of samples in one forward/backward.
    max_points
        Most gradients held at once (default: ``max(max_steps, 16 * max_batch)``).
    criterion
        ``completeness`` (default): stop on the summed completeness residuals, as above.
        ``map``: stop when the estimated relative L2 error of the map,
        ``sqrt(sum jumps^2) / ||A||`` (:func:`interval_jumps`), is at most ``tolerance``,
        and bisect the intervals with the largest jumps. The stored residual is the
        completeness residual either way.
    gradient_fn
        ``(model, points, target) -> (F, grad)``; default :func:`values_and_gradients`.
    """
    if not 0 < tolerance < 1:
        raise ValueError(f"Expected 0 < tolerance < 1, got {tolerance}.")
    if num_samples < 2:
        raise ValueError(f"Expected num_samples >= 2, got {num_samples}.")
    if max_steps < num_samples:
        raise ValueError(f"Expected max_steps >= num_samples ({num_samples}), got {max_steps}.")
    if max_batch < 1:
        raise ValueError(f"Expected max_batch >= 1, got {max_batch}.")
    if criterion not in CRITERIA:
        raise ValueError(f"Expected a criterion in {', '.join(CRITERIA)}, got {criterion!r}.")
    fn = gradient_fn or values_and_gradients
    n = image.shape[0]
    capacity = max(max_steps, max_points or 16 * max_batch)
    diff = image - baseline
    diff64 = diff.to(torch.float64)
    start = np.linspace(0.0, 1.0, num_samples).tolist()
    states = [_Image(list(start)) for _ in range(n)]
    acc = torch.zeros(image.shape, dtype=torch.float64, device=image.device)
    evaluations = 0
    waiting = list(range(n))
    active: list[int] = []
    queue: list[tuple[int, float]] = []
    while waiting or queue:
        while waiting and (not active or (len(active) + 1) * max_steps <= capacity):
            r = waiting.pop(0)
            active.append(r)
            queue += [(r, a) for a in start]
        evaluations += len(queue)
        for lo in range(0, len(queue), max_batch):
            chunk = queue[lo:lo + max_batch]
            rows = torch.as_tensor([r for r, _ in chunk], device=image.device)
            a = torch.as_tensor([v for _, v in chunk], dtype=image.dtype,
                                device=image.device).view(-1, 1, 1, 1)
            points = baseline[rows] + a * diff[rows]
            points = torch.where(a == 1.0, image[rows], points)  # the end is the image, bitwise
            values, grads = fn(model, points, target[rows])
            slopes = (grads.to(torch.float64) * diff64[rows]).flatten(1).sum(1)
            for k, (r, v) in enumerate(chunk):
                st = states[r]
                st.values[v] = float(values[k])
                st.slopes[v] = float(slopes[k])
                st.grads[v] = grads[k]
        queue = []
        for r in list(active):
            st = states[r]
            gap = st.values[1.0] - st.values[0.0]
            res = interval_residuals(st.alphas, st.values, st.slopes)
            total = float(res.sum())
            if abs(gap) < ZERO_GAP:
                st.done, st.zero_gap, st.residual = True, True, float("nan")
            else:
                st.residual = total / abs(gap)
                if criterion == "map":
                    jumps = interval_jumps(st, diff64[r])
                    size = float((diff64[r] * _weighted_sum(st, diff64[r])).norm())
                    # squared: independent per-interval errors add in quadrature
                    score, excess = jumps ** 2, float((jumps ** 2).sum()) - (tolerance * size) ** 2
                else:
                    score, excess = res, total - tolerance * abs(gap)
                room = max_steps - len(st.alphas)
                if excess <= 0 or room <= 0:
                    st.done = True
                else:
                    new = [(st.alphas[i] + st.alphas[i + 1]) / 2
                           for i in _to_bisect(score, excess, room)]
                    st.alphas = sorted(st.alphas + new)
                    queue += [(r, v) for v in new]
            if st.done:
                acc[r] = _weighted_sum(st, diff64[r])
                st.grads.clear()
                st.jumps.clear()
                active.remove(r)
    attributions = (diff64 * acc).to(image.dtype)
    return AdaptiveResult(
        attributions,
        np.asarray([len(s.alphas) for s in states], dtype=np.int64),
        np.asarray([s.residual for s in states], dtype=np.float64),
        np.asarray([s.zero_gap for s in states], dtype=bool),
        evaluations)
