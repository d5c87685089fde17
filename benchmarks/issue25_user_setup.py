"""Issue 25, first look: the README's seed-function claim under the user's setup (a fresh
``resnet18(weights=None)`` + ``nn.Softmax(1)``, seed 0, eval; Captum's default call with the
normalized black baseline, target the argmax, ``n_steps=50``; one warm-up call each, the
median of 2 timed pairs), with its parameters trainable (as a user's) or frozen (as
``load_model`` returns them), on ``randn`` or the bench's synthetic images.

usage: .venv/bin/python benchmarks/issue25_user_setup.py N_IMAGES
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings

import numpy as np
import torch
from captum.attr import IntegratedGradients
from torch import nn
from torchvision.models import resnet18

from pipeline.custom_explainers import get_custom_integrated_gradients
from pipeline.data import black_baseline, normalize
from pipeline.datasets import synthetic_image


def user_model(frozen: bool) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(resnet18(weights=None), nn.Softmax(1)).eval()
    for param in model.parameters():
        param.requires_grad_(not frozen)
    return model


def inputs(kind: str, n: int) -> torch.Tensor:
    if kind == "randn":
        torch.manual_seed(0)
        return torch.randn(n, 3, 224, 224)
    pix = np.stack([synthetic_image(i, 224, 0) for i in range(n)])
    return normalize(torch.from_numpy(pix).permute(0, 3, 1, 2).float() / 255.0)


def pair(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Seconds of Captum's default call and of the seed function, on the same batch."""
    base = black_baseline(x)
    with torch.no_grad():
        target = model(x).argmax(1)
    ig = IntegratedGradients(model)
    t0 = time.perf_counter()
    ig.attribute(x, base, target=target, n_steps=50)
    captum = time.perf_counter() - t0
    t0 = time.perf_counter()
    get_custom_integrated_gradients(model, x, 50)
    return captum, time.perf_counter() - t0


def main() -> None:  # pragma: no cover - a measurement script
    warnings.filterwarnings("ignore")
    n = int(sys.argv[1])
    for frozen in (False, True):
        for kind in ("randn", "synthetic"):
            model, x = user_model(frozen), inputs(kind, n)
            pair(model, x[:1])  # warm-up: one call each
            runs = [pair(model, x) for _ in range(2)]
            captum = statistics.median(r[0] for r in runs)
            ours = statistics.median(r[1] for r in runs)
            print(f"n={n} frozen={frozen} input={kind}: captum {captum:.2f}s ours "
                  f"{ours:.2f}s ratio {captum / ours:.2f}x", flush=True)


if __name__ == "__main__":
    main()
