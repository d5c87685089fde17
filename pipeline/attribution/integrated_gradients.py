"""Integrated Gradients by Captum (method ``integrated_gradients``): ``(x - x_bar)`` times the
path integral of the gradient from the baseline ``x_bar`` to the image, by one of Captum's
approximation rules.

Torch loads when the method runs, not when the registry is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.attribution.batching import chunk_slices
from pipeline.attribution.method_registry import BASELINE_PARAMS, METHODS, STEPS, MethodSpec, Param
from pipeline.validation import rule

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Captum's approximation rules of the path integral.
CAPTUM_IG_RULES: tuple[str, ...] = (
    "gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle",
)


def captum_integrated_gradients(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                                params: Mapping[str, Any], max_batch: int,
                                seeds: Sequence[int] | None = None, *,
                                baselines: torch.Tensor | None = None) -> torch.Tensor:
    """Captum ``IntegratedGradients`` from the chosen baseline: ``(N, 3, H, W)``.

    Captum splits along the path steps only (``internal_batch_size``), so each call gets at
    most ``max_batch`` images.
    """
    import torch
    from captum.attr import IntegratedGradients

    from pipeline.attribution.baselines import method_baselines

    base = method_baselines(images, params, seeds, baselines)
    ig = IntegratedGradients(model)
    per_call = max(1, min(images.shape[0], max_batch))
    out = []
    for s in chunk_slices(images.shape[0], per_call):
        x = images[s]
        attr = ig.attribute(
            x, baselines=base[s], target=targets[s], n_steps=params["n_steps"],
            method=params["rule"], internal_batch_size=max(max_batch, x.shape[0]),
        )
        out.append(attr.detach())
    return torch.cat(out)


METHODS.add("integrated_gradients", MethodSpec(
    "integrated_gradients", captum_integrated_gradients,
    "Captum IntegratedGradients (from the black image by default)", "captum",
    {"n_steps": STEPS,
     "rule": Param(str, "gausslegendre", "Captum's approximation rule of the path integral",
                   rule(choices=CAPTUM_IG_RULES), stored_as="method"),
     **BASELINE_PARAMS},
    has_delta=True,
))
