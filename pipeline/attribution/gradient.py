"""The input gradient ``d f_c / d x``: Captum's ``Saliency`` (method ``gradient``), and the
gradient engine the from-scratch methods share (:func:`input_gradient`,
:func:`predicted_class`).

Torch loads when a function runs, not when the registry is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.attribution.batching import chunk_slices
from pipeline.attribution.method_registry import METHODS, MethodSpec, Param

if TYPE_CHECKING:
    import torch
    from torch import nn


def predicted_class(model: nn.Module, image: torch.Tensor, max_batch: int | None = None
                    ) -> torch.Tensor:
    """The model's predicted class per row: ``(N, 3, H, W)`` -> ``(N,)`` int64.

    With ``max_batch``, no forward pass sees more than that many rows.
    """
    import torch

    step = max_batch or max(1, image.shape[0])
    with torch.no_grad():
        return torch.cat([model(image[i:i + step]).argmax(dim=1)
                          for i in range(0, image.shape[0], step)])


def as_target(target: torch.Tensor | int | None, model: nn.Module, image: torch.Tensor,
              max_batch: int | None = None) -> torch.Tensor:
    """The class per row ``(N,)`` int64: ``target`` (one class for all rows, or one per row),
    or the model's prediction when it is None."""
    import torch

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
    from pipeline.attribution.adaptive import values_and_gradients

    return values_and_gradients(model, inputs, target)[1]


def saliency(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
             params: Mapping[str, Any], max_batch: int,
             _seeds: Sequence[int] | None = None) -> torch.Tensor:
    """Captum ``Saliency``, ``max_batch`` images per pass: ``(N, 3, H, W)``."""
    import torch
    from captum.attr import Saliency

    sal = Saliency(model)
    return torch.cat([
        sal.attribute(images[s], target=targets[s], abs=params["absolute"]).detach()
        for s in chunk_slices(images.shape[0], max_batch)
    ])


METHODS.add("gradient", MethodSpec(
    "gradient", saliency, "Captum Saliency: |d f_c / d x|", "captum",
    {"absolute": Param(bool, True, "absolute value of the gradient (Captum's default)",
                       stored_as="abs")},
))
