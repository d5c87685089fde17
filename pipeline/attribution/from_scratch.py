"""The from-scratch methods, on our own engines rather than Captum's: ``custom_gradient`` (the
input gradient of :mod:`pipeline.attribution.gradient`) and ``custom_integrated_gradients``
(the chunked path engine of :mod:`pipeline.attribution.path_engine`, or adaptive refinement
to a tolerance, :mod:`pipeline.attribution.adaptive`).

Torch loads when a method runs, not when the registry is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.attribution.batching import chunk_slices
from pipeline.attribution.method_registry import BASELINE_PARAMS, METHODS, STEPS, MethodSpec, Param
from pipeline.attribution.quadrature import QUADRATURE_RULES
from pipeline.validation import rule

if TYPE_CHECKING:
    import torch
    from torch import nn

#: The rules of ``custom_integrated_gradients``: the quadrature rules, and ``adaptive``.
PATH_RULES: tuple[str, ...] = (*QUADRATURE_RULES, "adaptive")


def custom_gradient(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                    params: Mapping[str, Any], max_batch: int,
                    _seeds: Sequence[int] | None = None) -> torch.Tensor:
    """``d f_c / d x`` (or its absolute value), ``max_batch`` images per pass:
    ``(N, 3, H, W)``."""
    import torch

    from pipeline.attribution.gradient import input_gradient

    grads = torch.cat([
        input_gradient(model, images[s], targets[s])
        for s in chunk_slices(images.shape[0], max_batch)
    ])
    return grads.abs() if params["absolute"] else grads


def custom_integrated_gradients(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                                params: Mapping[str, Any], max_batch: int,
                                seeds: Sequence[int] | None = None, *,
                                baselines: torch.Tensor | None = None) -> Any:
    """Integrated Gradients by a quadrature rule: ``(N, 3, H, W)``; by ``rule = "adaptive"``:
    the maps and, per image, the points used, the final residual and whether the output gap
    was zero (see :func:`pipeline.attribution.method_registry.attribute`'s ``info``)."""
    from pipeline.attribution.baselines import method_baselines
    from pipeline.attribution.path_engine import integrated_gradients

    base = method_baselines(images, params, seeds, baselines)
    if params["rule"] == "adaptive":
        from pipeline.attribution.adaptive import adaptive_integrated_gradients

        res = adaptive_integrated_gradients(
            model, images, targets, base, params["n_steps"], tolerance=params["tolerance"],
            max_steps=params["max_steps"], max_batch=max_batch, criterion=params["criterion"])
        return res.attributions, {"steps": res.steps, "residual": res.residual,
                                  "zero_gap": res.zero_gap}
    return integrated_gradients(model, images, targets, base, params["n_steps"],
                                rule=params["rule"], max_batch=max_batch)


def check_adaptive(params: Mapping[str, Any]) -> str | None:
    """``rule = "adaptive"`` refines from ``n_steps`` points, so ``max_steps`` cannot be
    fewer."""
    if params["rule"] == "adaptive" and params["max_steps"] < params["n_steps"]:
        return (f"expected max_steps >= n_steps ({params['n_steps']}, the starting grid of "
                f"rule adaptive), got {params['max_steps']}")
    return None


METHODS.add("custom_gradient", MethodSpec(
    "custom_gradient", custom_gradient, "our torch.autograd input gradient", "custom",
    {"absolute": Param(bool, False, "take the absolute value")},
))

METHODS.add("custom_integrated_gradients", MethodSpec(
    "custom_integrated_gradients", custom_integrated_gradients,
    "our chunked Integrated Gradients (the linspace_mean rule by default)", "custom",
    {"n_steps": STEPS,
     "rule": Param(str, "linspace_mean", "quadrature rule; adaptive: refine to a tolerance "
                   "(n_steps is then the starting grid)", rule(choices=PATH_RULES),
                   stored_values={"linspace_mean": "seed"}),
     "tolerance": Param(float, 0.01, "rule adaptive: stop when the summed interval "
                        "residuals are at most this fraction of |F(x) - F(baseline)|",
                        rule(gt=0.0, lt=1.0)),
     "max_steps": Param(int, 512, "rule adaptive: the most path points an image may use",
                        rule(ge=2)),
     "criterion": Param(str, "completeness", "rule adaptive: stop on the completeness "
                        "residual, or on the map's estimated L2 error",
                        rule(choices=("completeness", "map"))),
     **BASELINE_PARAMS},
    has_delta=True, check=check_adaptive,
))
