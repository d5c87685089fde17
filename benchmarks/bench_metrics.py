"""Pixel-flipping benchmark: our batched deletion curve against ``quantus.PixelFlipping``.

Both run in this process on the same seeded images, maps and seeded random-weight torchvision
ResNet18 (10 classes, softmax head, eval mode, CPU), each timed best of ``repeats``. Settings
are matched: the same steps of the same pixels (all three channels) in the same order, the
same black baseline, the same softmax outputs. Run alone with
``python -m benchmarks.bench_metrics``.

Quantus flips channel values, ranked by the map broadcast over the channels, and asserts that
``features_in_step`` divides ``H * W``; one of our steps of ``H * W / steps`` pixels is
``3 * H * W / steps`` of its features, so ``steps`` must divide ``H * W`` and be a multiple
of 3 (112 px cannot be used: 112 * 112 has no factor 3). Quantus's ``"black"`` baseline is
the image's minimum value, not a colour, so it gets the images in pixel space, the model behind
the ImageNet normalization, and the baseline value 0.0: our black image.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def bench_inputs(images: int, size: int, seed: int = 0) -> tuple[Any, Any, np.ndarray, Any]:
    """Seeded ``(model, normalized images, float64 maps, targets)``; the model is a
    random-weight resnet18 with 10 classes and a softmax head, in eval mode, on the CPU. The
    maps are float64 noise, so no two pixels tie (a tie at a step boundary could be broken
    differently by Quantus's unstable sort)."""
    import torch
    from torch import nn
    from torchvision.models import resnet18

    from pipeline.data.images import normalize

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(resnet18(num_classes=10), nn.Softmax(dim=-1)).eval()
    gen = torch.Generator().manual_seed(seed)
    x = normalize(torch.rand(images, 3, size, size, generator=gen))
    maps = np.random.default_rng(seed).random((images, size, size))
    with torch.no_grad():
        targets = model(x).argmax(1)
    return model, x, maps, targets


def measure(images: int = 16, size: int = 96, steps: int = 24, repeats: int = 2,
            threads: int | None = None) -> dict[str, Any]:
    """Seconds for one deletion run (``images`` images, ``steps`` steps) by each, their ratio,
    and how far apart the two computed curves and AUCs are.

    ``threads`` sets torch's intra-op threads for the run (None: as they are). Quantus runs
    ``images`` samples per forward pass, we run up to 64 (images x steps); on a CPU shared
    with another process, small multi-threaded passes wait on each other, so the ratio
    depends on the thread count: compare ``threads=1`` too.
    """
    import quantus
    import torch
    from torch import nn

    if threads is not None:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return measure(images, size, steps, repeats)
        finally:
            torch.set_num_threads(before)

    from pipeline.data.images import denormalize, normalize
    from pipeline.evaluation.metrics import auc, pixel_flipping

    pixels = size * size
    if pixels % steps or steps % 3:
        raise ValueError(f"Quantus needs steps dividing {size}*{size} and a multiple of 3, "
                         f"got {steps}.")
    model, x, maps, targets = bench_inputs(images, size)

    class Normalize(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return normalize(z)

    pixel_model = nn.Sequential(Normalize(), *model).eval()  # Softmax stays the last module

    class Timed(nn.Module):
        """Seconds spent in the wrapped model's forward passes (what no batching removes)."""

        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner, self.seconds = inner, 0.0

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            t0 = time.perf_counter()
            out = self.inner(z)
            self.seconds += time.perf_counter() - t0
            return out

    timed_model = Timed(pixel_model).eval()
    x_pixels = denormalize(x).numpy()
    y = targets.numpy()
    # perturb_baseline is annotated str, but a number is documented and used as the value.
    metric = quantus.PixelFlipping(features_in_step=3 * pixels // steps,
                                   perturb_baseline=0.0,  # type: ignore[arg-type]
                                   normalise=False, abs=False, disable_warnings=True)

    def ours() -> tuple[np.ndarray, np.ndarray]:
        curves = pixel_flipping(model, x, maps, targets, steps=steps, baseline="black")
        return curves, auc(curves)

    def theirs() -> np.ndarray:
        return np.asarray(metric(model=pixel_model, x_batch=x_pixels, y_batch=y,
                                 a_batch=maps[:, None], device="cpu", softmax=True,
                                 batch_size=images))

    from pipeline.attribution.accel import optimize

    # What the evaluate stage runs: the engine's model (channels_last, the run default).
    engine_model = optimize(model, "cpu", channels_last=True)

    def ours_engine() -> np.ndarray:
        return auc(pixel_flipping(engine_model, x, maps, targets, steps=steps,
                                  baseline="black"))

    t_ours, (curves, _) = _best(ours, repeats)
    t_engine, _ = _best(ours_engine, repeats)
    t_quantus, q_curves = _best(theirs, repeats)
    # One more Quantus run with its forward passes timed: the share of its time that any
    # implementation running the same forward passes must also spend.
    t_timed = time.perf_counter()
    metric(model=timed_model, x_batch=x_pixels, y_batch=y, a_batch=maps[:, None],
           device="cpu", softmax=True, batch_size=images)
    t_timed = time.perf_counter() - t_timed
    return {
        "images": images, "size": size, "steps": steps, "threads": torch.get_num_threads(),
        "ours_s": t_ours, "quantus_s": t_quantus, "speedup": t_quantus / t_ours,
        "ours_engine_s": t_engine, "engine_speedup": t_quantus / t_engine,
        "quantus_forward_share": timed_model.seconds / t_timed,
        "max_speedup_same_forwards": t_timed / timed_model.seconds,
        # Quantus's curve has no unperturbed point: compare steps 1..steps.
        "max_abs_curve_diff": float(np.abs(curves[:, 1:] - q_curves).max()),
        "max_abs_auc_diff": float(np.abs(auc(curves[:, 1:]) - auc(q_curves)).max()),
    }


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    # python -m benchmarks.bench_metrics [threads]
    print(json.dumps(measure(threads=int(sys.argv[1]) if len(sys.argv) > 1 else None),
                     indent=2))
