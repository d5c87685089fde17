"""``get_custom_integrated_gradients`` against Captum as a user measures them: the
``user-setup`` section of ``xai bench``, and (run alone) the factors between the user's setup
and the bench's ``ig`` section, one at a time.

The user's setup: a fresh ``resnet18(weights=None)`` built with seed 0, followed by
``nn.Softmax(1)``, in eval mode with its parameters trainable (as a user's model is);
``x = torch.randn(N, 3, 224, 224)``; Captum's ``IntegratedGradients.attribute`` with its
defaults (the normalized black baseline, target the argmax, ``n_steps=50``, no
``internal_batch_size``: one pass of all ``N * 50`` points) against
``get_custom_integrated_gradients(model, x, 50)``; one warm-up call each, then the median of
timed pairs, for 1, 2 and 4 images.

Run alone, each further variant changes one thing towards what ``xai bench`` measures for its
``custom_explainers_vs_captum_defaults_batch`` row: the logits head, the bench's synthetic
images, frozen parameters as ``load_model`` returns them, and the bench's timing (the best of
3 calls of each, one after the other, instead of the median of interleaved pairs).

usage: .venv/bin/python -m benchmarks.bench_user [N ...] [--pairs P]
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

SIZES = (1, 2, 4)


def user_model(head: str = "softmax", frozen: bool = False,
               device: torch.device | str = "cpu") -> nn.Module:
    """The user's model: a fresh seeded ResNet18, a softmax head unless ``head="logits"``,
    parameters trainable unless ``frozen``."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    net = resnet18(weights=None)
    model = (nn.Sequential(net, nn.Softmax(1)) if head == "softmax" else net).eval()
    for param in model.parameters():
        param.requires_grad_(not frozen)
    return model.to(device)


def user_input(n: int, size: int = 224, device: torch.device | str = "cpu") -> torch.Tensor:
    """``torch.randn(n, 3, size, size)`` after ``torch.manual_seed(0)``."""
    torch.manual_seed(0)
    return torch.randn(n, 3, size, size).to(device)


def calls(model: nn.Module, x: torch.Tensor, n_steps: int = 50
          ) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """Captum's default call and ``get_custom_integrated_gradients``' default call, on the
    same batch."""
    from captum.attr import IntegratedGradients

    from pipeline.custom_explainers import get_custom_integrated_gradients
    from pipeline.data.images import black_baseline

    base = black_baseline(x)
    with torch.no_grad():
        target = model(x).argmax(1)
    ig = IntegratedGradients(model)
    return (lambda: ig.attribute(x, base, target=target, n_steps=n_steps),
            lambda: get_custom_integrated_gradients(model, x, n_steps))


def seconds(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def median_of_pairs(model: nn.Module, x: torch.Tensor, pairs: int = 3, n_steps: int = 50
                    ) -> tuple[float, float]:
    """Seconds of Captum's call and of ours: one warm-up call each, then the median of
    ``pairs`` timed pairs (Captum first in each, as the user's script does)."""
    captum, ours = calls(model, x, n_steps)
    captum(), ours()
    runs = [(seconds(captum, x.device), seconds(ours, x.device)) for _ in range(pairs)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def measure_user_setup(device: str = "cpu", sizes: tuple[int, ...] = SIZES, pairs: int = 3,
                       size: int = 224, n_steps: int = 50,
                       reporter: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """One entry per batch size: both medians and the ratio Captum / ours."""
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require")
    dev = torch.device(device)
    out = []
    for n in sizes:
        captum, ours = median_of_pairs(user_model(device=dev), user_input(n, size, dev),
                                       pairs, n_steps)
        out.append({"images": n, "captum_s": captum, "ours_s": ours, "ratio": captum / ours})
        reporter(f"  user-setup  {n} image(s): Captum's default call {captum:.2f} s, "
                 f"get_custom_integrated_gradients {ours:.2f} s: {captum / ours:.2f}x")
    return out


# ------------------------------------------------------------------ one factor at a time


def inputs(kind: str, n: int) -> torch.Tensor:
    """``n`` images: the user's ``randn`` (``kind="randn"``) or the bench's synthetic ones."""
    from pipeline.data.images import normalize
    from pipeline.data.layouts import synthetic_image

    if kind == "randn":
        return user_input(n)
    pix = np.stack([synthetic_image(i, 224, 0) for i in range(n)])
    return normalize(torch.from_numpy(pix).permute(0, 3, 1, 2).float() / 255.0)


def best_of_each(model: torch.nn.Module, x: torch.Tensor, repeats: int = 3
                 ) -> tuple[float, float]:
    """The bench's timing: the best of ``repeats`` calls of Captum's, then of ours."""
    captum, ours = calls(model, x)
    captum(), ours()
    cpu = torch.device("cpu")
    return (min(seconds(captum, cpu) for _ in range(repeats)),
            min(seconds(ours, cpu) for _ in range(repeats)))


VARIANTS: dict[str, tuple[str, str, bool, bool]] = {
    # name: (head, input, frozen, bench timing)
    "user's setup (softmax, randn, trainable, median of pairs)": ("softmax", "randn", False,
                                                                  False),
    "  logits head": ("logits", "randn", False, False),
    "  synthetic images": ("softmax", "synthetic", False, False),
    "  frozen parameters": ("softmax", "randn", True, False),
    "  bench timing (best of 3 each)": ("softmax", "randn", False, True),
    "bench's setup (logits, synthetic, frozen, best of 3)": ("logits", "synthetic", True,
                                                             True),
}


def main() -> None:  # pragma: no cover - a measurement script
    warnings.filterwarnings("ignore")
    args = sys.argv[1:]
    pairs = 3
    if "--pairs" in args:
        i = args.index("--pairs")
        pairs = int(args[i + 1])
        del args[i:i + 2]
    sizes = [int(a) for a in args] or [1, 2, 4]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, pairs {pairs}")
    for n in sizes:
        for name, (head, kind, frozen, bench) in VARIANTS.items():
            model, x = user_model(head, frozen), inputs(kind, n)
            captum, ours = (best_of_each(model, x) if bench
                            else median_of_pairs(model, x, pairs))
            print(f"n={n} {name:56s} captum {captum:6.2f}s ours {ours:6.2f}s "
                  f"ratio {captum / ours:.2f}x", flush=True)


if __name__ == "__main__":
    main()
