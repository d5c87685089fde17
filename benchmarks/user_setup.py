"""Issue 25: the README's seed-function claim, from the user's setup to the bench's, one
factor at a time.

The user's setup: a fresh ``resnet18(weights=None)`` (seed 0) followed by ``nn.Softmax(1)``,
in eval mode, trainable parameters; ``x = torch.randn(N, 3, 224, 224)``; Captum's
``IntegratedGradients.attribute`` with its defaults (the normalized black baseline, target the
argmax, ``n_steps=50``, no ``internal_batch_size``) against
``get_custom_integrated_gradients(model, x, 50)``; one warm-up call each, then the median of
timed pairs. Each further variant changes one thing towards what ``xai bench`` measured for
its ``seed_function_vs_captum_defaults_batch`` row (the logits head, the bench's synthetic
images, frozen parameters as ``load_model`` returns them, and the bench's timing: the best of
3 calls of each, one after the other, instead of the median of interleaved pairs).

usage: .venv/bin/python benchmarks/issue25_user_setup.py [N ...] [--pairs P]
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import torch

from benchmarks.bench_user import calls, median_of_pairs, seconds, user_input, user_model
from pipeline.data.images import normalize
from pipeline.data.layouts import synthetic_image


def inputs(kind: str, n: int) -> torch.Tensor:
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
