"""The registry of Integrated Gradients baselines: the reference image a path starts from.

The names are read without torch (configs, the CLI); each function imports torch when it runs.
Every baseline is built in normalized input space, shaped like the images ``(N, 3, H, W)``:

``black``
    The black image, ``-mean / std`` per channel (the default).
``blur``
    The image under a Gaussian blur of ``baseline_sigma`` pixels (reflected at the border):
    keeps the colours and drops the detail, so the map shows where detail matters.
``uniform``
    Uniform noise in ``[0, 1]`` pixel space, drawn per image from a CPU generator seeded with
    the image's seed (the same on every device, in every batch, on every resume).
``mean``
    The ImageNet training mean colour ``(0.485, 0.456, 0.406)``, the colour the model's input
    normalization maps to zero: "no information" in the model's own terms.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.registry import Registry

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Baseline:
    """A registered baseline: ``make(images, params, seeds, norm) -> (N, 3, H, W)`` (``norm``:
    the model's :class:`pipeline.data.images.Normalization`, None for ImageNet's)."""

    name: str
    make: Callable[..., torch.Tensor]
    description: str


def _black(images: torch.Tensor, _params: Mapping[str, Any],
           _seeds: Sequence[int] | None, norm: Any = None) -> torch.Tensor:
    from pipeline.data.images import black_baseline

    return black_baseline(images, norm)


def blur_kernel_size(sigma: float, height: int, width: int) -> int:
    """An odd Gaussian kernel covering +-3 sigma, capped so that the reflected border padding
    stays inside the image (``(k - 1) / 2 < min(H, W)``)."""
    k = 2 * math.ceil(3 * sigma) + 1
    cap = 2 * min(height, width) - 1
    return max(1, min(k, cap if cap % 2 else cap - 1))


def _blur(images: torch.Tensor, params: Mapping[str, Any],
          _seeds: Sequence[int] | None, _norm: Any = None) -> torch.Tensor:
    from torchvision.transforms.functional import gaussian_blur

    sigma = float(params["baseline_sigma"])
    k = blur_kernel_size(sigma, images.shape[-2], images.shape[-1])
    # The normalization is a per-channel affine map and the kernel sums to one, so blurring
    # the normalized image is the same as normalizing the blurred picture.
    return gaussian_blur(images, [k, k], [sigma, sigma])


def _uniform(images: torch.Tensor, _params: Mapping[str, Any],
             seeds: Sequence[int] | None, norm: Any = None) -> torch.Tensor:
    import torch

    from pipeline.data.images import normalize

    rows = []
    for i in range(images.shape[0]):
        gen = torch.Generator()
        if seeds is None:
            gen.seed()
        else:
            gen.manual_seed(int(seeds[i]))
        rows.append(torch.rand(images.shape[1:], generator=gen, dtype=torch.float32))
    noise = torch.stack(rows).to(device=images.device, dtype=images.dtype)
    return normalize(noise, norm)


def _mean(images: torch.Tensor, _params: Mapping[str, Any],
          _seeds: Sequence[int] | None, _norm: Any = None) -> torch.Tensor:
    import torch

    return torch.zeros_like(images)


#: Every baseline, by the name configs use (``[methods.<name>] baseline``).
BASELINES: Registry[Baseline] = Registry("baseline")
for _baseline in (
    Baseline("black", _black, "the black image (the default)"),
    Baseline("blur", _blur, "the image under a Gaussian blur of baseline_sigma pixels"),
    Baseline("uniform", _uniform, "seeded uniform noise in [0, 1] pixel space"),
    Baseline("mean", _mean, "the model's mean colour (zero after normalization; "
                            "ImageNet's for ResNet18)"),
):
    BASELINES.add(_baseline.name, _baseline)


def make_baseline(name: str, images: torch.Tensor, params: Mapping[str, Any],
                  seeds: Sequence[int] | None = None, norm: Any = None) -> torch.Tensor:
    """The baseline ``name`` for a batch of normalized images ``(N, 3, H, W)``, same shape,
    dtype and device (``norm``: their :class:`pipeline.data.images.Normalization`;
    ImageNet's by default)."""
    try:
        spec = BASELINES[name]
    except KeyError:
        raise KeyError(f"Expected a baseline in {', '.join(BASELINES)}, got {name!r}.") from None
    return spec.make(images, params, seeds, norm)


def method_baselines(images: torch.Tensor, params: Mapping[str, Any],
                     seeds: Sequence[int] | None, given: torch.Tensor | None = None,
                     norm: Any = None) -> torch.Tensor:
    """``given``, or else the baseline a path method's parameters choose (``baseline``,
    default black) for ``images`` ``(N, 3, H, W)``; same shape."""
    if given is not None:
        return given
    return make_baseline(params.get("baseline", "black"), images, params, seeds, norm)


def describe(params: Mapping[str, Any]) -> str:
    """The baseline a method's resolved parameters choose, in words (stored in the attrs)."""
    name = params.get("baseline", "black")
    if name == "blur":
        return f"blur (Gaussian, sigma={params['baseline_sigma']:g} px)"
    return str(name)
