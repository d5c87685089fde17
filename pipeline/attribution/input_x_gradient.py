"""Input times gradient (method ``input_x_gradient``): Captum's ``InputXGradient``,
``x * d f_c / d x``.

Torch loads when the method runs, not when the registry is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.attribution.batching import chunk_slices
from pipeline.attribution.method_registry import METHODS, MethodSpec

if TYPE_CHECKING:
    import torch
    from torch import nn


def input_x_gradient(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                     _params: Mapping[str, Any], max_batch: int,
                     _seeds: Sequence[int] | None = None) -> torch.Tensor:
    """Captum ``InputXGradient``, ``max_batch`` images per pass: ``(N, 3, H, W)``."""
    import torch
    from captum.attr import InputXGradient

    ixg = InputXGradient(model)
    return torch.cat([
        ixg.attribute(images[s], target=targets[s]).detach()
        for s in chunk_slices(images.shape[0], max_batch)
    ])


METHODS.add("input_x_gradient", MethodSpec(
    "input_x_gradient", input_x_gradient, "Captum InputXGradient: x * d f_c / d x", "captum",
))
