"""The original function API of the Captum-based explainers, with aggregation, normalization
and the plot of a row of maps.

Images are batches ``(N, 3, H, W)`` normalized with the ImageNet mean/std; each row is
explained with respect to the model's own predicted class. Normalization is the pipeline's
one normaliser (:func:`pipeline.attribution.postprocess.normalize_per_image`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from matplotlib.figure import Figure, SubFigure
from torch import nn

from pipeline.attribution.gradient import predicted_class
from pipeline.attribution.postprocess import normalize_per_image
from pipeline.data.images import black_baseline

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)


def _target(kwargs: dict[str, Any], model: nn.Module, image: torch.Tensor) -> Any:
    """``kwargs["target"]`` (removed from kwargs) or else the model's prediction per row."""
    target = kwargs.pop("target", None)
    return predicted_class(model, image) if target is None else target


def get_gradient(model: nn.Module, image: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """Captum ``Saliency`` (absolute gradient by default) for the predicted class.

    Returns ``(N, 3, H, W)``; ``kwargs`` go to ``Saliency.attribute`` (e.g. ``abs=False``).
    """
    target = _target(kwargs, model, image)
    return Saliency(model).attribute(image, target=target, **kwargs).detach()


def get_integrated_gradients(model: nn.Module, image: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """Captum Integrated Gradients from the normalized black image, for the predicted class.

    Captum's defaults otherwise (``n_steps=50``, ``method="gausslegendre"``); ``kwargs`` pass
    through (``n_steps``, ``method``, ``internal_batch_size``, ``target``, ``baselines``).

    Returns
    -------
    torch.Tensor
        ``(N, 3, H, W)``.
    """
    target = _target(kwargs, model, image)
    baselines = kwargs.pop("baselines", None)
    baselines = black_baseline(image) if baselines is None else baselines
    out = IntegratedGradients(model).attribute(
        image, baselines=baselines, target=target, **kwargs
    )
    attr = out[0] if isinstance(out, tuple) else out
    return attr.detach()


def get_smoothgrad(
    model: nn.Module,
    image: torch.Tensor,
    num_samples: int = 10,
    stdevs: float = 0.3,
    **kwargs: Any,
) -> torch.Tensor:
    """SmoothGrad: Captum ``NoiseTunnel`` around ``Saliency`` for the predicted class.

    Noise is Gaussian with standard deviation ``stdevs`` in normalized input space, drawn
    from torch's global RNG: call ``torch.manual_seed`` first for repeatable results.
    ``kwargs`` go to ``NoiseTunnel.attribute`` (e.g. ``nt_samples_batch_size``).

    Returns
    -------
    torch.Tensor
        ``(N, 3, H, W)``.
    """
    target = _target(kwargs, model, image)
    tunnel = NoiseTunnel(Saliency(model))
    return tunnel.attribute(
        image, nt_type="smoothgrad", nt_samples=num_samples, stdevs=stdevs, target=target,
        **kwargs,
    ).detach()


def aggregate_attribution(attribution: ArrayT) -> ArrayT:
    """Sum over the colour channels.

    ``(1, 3, H, W)`` -> ``(H, W)`` (a batch of one is dropped), ``(N, 3, H, W)`` ->
    ``(N, H, W)``, ``(3, H, W)`` -> ``(H, W)``. Works on torch tensors and numpy arrays.
    """
    if attribution.ndim == 4:
        summed = attribution.sum(1)
        return summed[0] if summed.shape[0] == 1 else summed
    if attribution.ndim == 3:
        return attribution.sum(0)
    raise ValueError(
        "Expected an attribution of shape (N, 3, H, W) or (3, H, W), "
        f"got {tuple(attribution.shape)}."
    )


def normalize_attribution(attribution: ArrayT) -> ArrayT:
    """``|A|``, minus its minimum, divided by the new maximum: values in ``[0, 1]``.

    A 2-D array is one map; for 3-D and 4-D arrays each entry of the first axis (each image)
    is normalized on its own. A constant or all-zero map gives zeros; a NaN map (an image
    that was not explained) stays NaN, as in the store's ``normalized`` maps: this is
    :func:`pipeline.attribution.postprocess.normalize_per_image`. Torch tensors and numpy
    arrays alike; the same type, shape and (floating) dtype come back.
    """
    return normalize_per_image(attribution)


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def draw_attribution_row(
    fig: Figure | SubFigure,
    image: torch.Tensor | np.ndarray,
    attributions: Sequence[torch.Tensor | np.ndarray],
    method_names: Sequence[str],
    *,
    cmap: str = "inferno",
    image_title: str = "Image",
) -> None:
    """Draw one row (the image, then one titled heat map per method) into ``fig``."""
    if len(attributions) != len(method_names):
        raise ValueError(
            f"Expected one method name per attribution, got {len(attributions)} attributions "
            f"and {len(method_names)} names."
        )
    img = _to_numpy(image)
    if img.ndim == 4 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 3 or img.shape[0] != 3:
        raise ValueError(f"Expected an image of shape (3, H, W), got {img.shape}.")
    axes = fig.subplots(1, len(attributions) + 1, squeeze=False)[0]
    axes[0].imshow(np.clip(np.transpose(img, (1, 2, 0)), 0.0, 1.0))
    axes[0].set_title(image_title, fontsize=9)
    for ax, attr, name in zip(axes[1:], attributions, method_names, strict=True):
        amap = _to_numpy(attr)
        amap = amap.squeeze(0) if amap.ndim == 3 and amap.shape[0] == 1 else amap
        in_unit = amap.size > 0 and float(amap.min()) >= 0.0 and float(amap.max()) <= 1.0
        ax.imshow(amap, cmap=cmap, vmin=0.0 if in_unit else None, vmax=1.0 if in_unit else None)
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.axis("off")


def plot_attributions(
    image: torch.Tensor | np.ndarray,
    attributions: Sequence[torch.Tensor | np.ndarray],
    method_names: Sequence[str],
    *,
    cmap: str = "inferno",
    panel_size: float = 3.0,
) -> Figure:
    """One row: the image, then one heat map per attribution titled with its method name.

    Parameters
    ----------
    image
        ``(3, H, W)`` (or ``(1, 3, H, W)``) in ``[0, 1]``; drawn channels-last.
    attributions
        One ``(H, W)`` map per method (e.g. from :func:`normalize_attribution`).
    method_names
        Panel titles, one per attribution.

    Returns
    -------
    matplotlib.figure.Figure
        A figure made with the object API (no pyplot state); save it with ``savefig``.
    """
    fig = Figure(figsize=(panel_size * (len(attributions) + 1), panel_size), layout="constrained")
    draw_attribution_row(fig, image, attributions, method_names, cmap=cmap)
    return fig
