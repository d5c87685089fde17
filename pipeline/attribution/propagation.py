"""Modified-gradient methods: Guided Backpropagation (method ``guided_backprop``) and DeepLift
(method ``deeplift``), by Captum, on any network.

Captum changes how the gradient passes the nonlinearities with hooks on their modules; the
network is first rewritten so that every use of a nonlinearity is a module of its own, and
DeepLift's rules add up (:mod:`pipeline.attribution.network_rewrite`).

Torch loads when a method runs, not when the registry is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.attribution.batching import chunk_slices
from pipeline.attribution.method_registry import BASELINE_PARAMS, METHODS, MethodSpec

if TYPE_CHECKING:
    import torch
    from torch import nn


def guided_backprop(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                    _params: Mapping[str, Any], max_batch: int,
                    _seeds: Sequence[int] | None = None) -> torch.Tensor:
    """Captum ``GuidedBackprop`` (only positive gradients pass each ReLU) on
    :func:`~pipeline.attribution.network_rewrite.unshared` ``model``: ``(N, 3, H, W)``."""
    import torch
    from captum.attr import GuidedBackprop

    from pipeline.attribution.network_rewrite import unshared

    explainer = GuidedBackprop(unshared(model)[0])
    return torch.cat([explainer.attribute(images[s], target=targets[s]).detach()
                      for s in chunk_slices(images.shape[0], max_batch)])


def deeplift(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
             params: Mapping[str, Any], max_batch: int, seeds: Sequence[int] | None = None,
             *, baselines: torch.Tensor | None = None) -> torch.Tensor:
    """Captum ``DeepLift`` (rescale rule) from the baseline, on
    :func:`~pipeline.attribution.network_rewrite.for_deeplift` ``model``: ``(N, 3, H, W)``.

    DeepLift runs images and baselines in one pass, so a chunk holds at most
    ``max_batch / 2`` images (and at least one: two samples).
    """
    import torch
    from captum.attr import DeepLift

    from pipeline.attribution.baselines import method_baselines
    from pipeline.attribution.network_rewrite import for_deeplift

    baselines = method_baselines(images, params, seeds, baselines)
    explainer = DeepLift(for_deeplift(model), multiply_by_inputs=True)
    return torch.cat([
        explainer.attribute(images[s], baselines=baselines[s], target=targets[s]).detach()
        for s in chunk_slices(images.shape[0], max(1, max_batch // 2))])


METHODS.add("guided_backprop", MethodSpec(
    "guided_backprop", guided_backprop,
    "Captum GuidedBackprop (positive gradients through each ReLU), one ReLU per use",
    "captum", hooks=True,
))

METHODS.add("deeplift", MethodSpec(
    "deeplift", deeplift,
    "Captum DeepLift (rescale rule) from the baseline, one nonlinearity per use",
    "captum", dict(BASELINE_PARAMS), has_delta=True, hooks=True, min_pass=2,
    incomplete_hint="DeepLift's rules add up on ReLU and max-pool networks only; "
                    "GELU, SiLU, Hardswish, LayerNorm and attention pass the plain "
                    "gradient (docs/methods.md)",
))
