"""SmoothGrad (method ``smoothgrad``): Captum's ``Saliency`` averaged over noisy copies of each
image, with NoiseTunnel's smoothgrad semantics and noise that is the same in any batch.

Torch loads when the method runs, not when the registry is read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.attribution.method_registry import METHODS, MethodSpec, Param
from pipeline.validation import rule

if TYPE_CHECKING:
    import torch
    from torch import nn


def noisy_chunks(images: torch.Tensor, seeds: Sequence[int], samples: int, stdev: float,
                 max_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (noisy inputs, row index) chunks of at most ``max_batch`` samples.

    Each image's noise comes from its own generator on the images' device, seeded with
    ``seeds[row]``: the numbers do not depend on the chunking or the batch an image is in,
    and nothing is drawn on the CPU and copied over for a GPU batch. CPU and CUDA generators
    draw different numbers for the same seed (the store records the device of each shard).
    """
    import torch

    parts: list[torch.Tensor] = []
    rows: list[torch.Tensor] = []
    held = 0
    for i in range(images.shape[0]):
        gen = torch.Generator(device=images.device).manual_seed(int(seeds[i]))
        # float32 draws whatever the input dtype, so a float64 check sees the same noise.
        noise = torch.randn((samples, *images.shape[1:]), generator=gen,
                            device=images.device, dtype=torch.float32)
        noise = noise.to(images.dtype).mul_(stdev)
        j = 0
        while j < samples:
            take = min(samples - j, max_batch - held)
            parts.append(images[i] + noise[j:j + take])
            rows.append(torch.full((take,), i, device=images.device, dtype=torch.long))
            held, j = held + take, j + take
            if held == max_batch:
                yield torch.cat(parts), torch.cat(rows)
                parts, rows, held = [], [], 0
    if parts:
        yield torch.cat(parts), torch.cat(rows)


def smoothgrad(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
               params: Mapping[str, Any], max_batch: int,
               seeds: Sequence[int] | None = None) -> torch.Tensor:
    """Mean (absolute) gradient over ``nt_samples`` noisy copies per image: ``(N, 3, H, W)``."""
    import torch
    from captum.attr import Saliency

    samples, stdev = params["nt_samples"], params["stdevs"]
    if seeds is None:
        seeds = torch.randint(0, 2**62, (images.shape[0],)).tolist()
    sal = Saliency(model)
    acc = torch.zeros(images.shape, dtype=torch.float64, device=images.device)
    for noisy, rows in noisy_chunks(images, seeds, samples, stdev, max(1, max_batch)):
        grads = sal.attribute(noisy, target=targets[rows], abs=params["absolute"]).detach()
        acc.index_add_(0, rows, grads.to(torch.float64))
    return (acc / samples).to(images.dtype)


METHODS.add("smoothgrad", MethodSpec(
    "smoothgrad", smoothgrad,
    "Captum Saliency averaged over noisy copies (NoiseTunnel smoothgrad semantics)", "captum",
    {"nt_samples": Param(int, 10, "noisy copies per image", rule(ge=1)),
     "stdevs": Param(float, 0.3, "noise std in normalized input space", rule(ge=0.0)),
     "absolute": Param(bool, True, "absolute gradients, as Saliency's default",
                       stored_as="abs")},
    stochastic=True,
))
