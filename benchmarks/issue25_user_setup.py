"""Issue 25, first look: the README's seed-function claim under the user's setup (a fresh
``resnet18(weights=None)`` + ``nn.Softmax(1)``, seed 0, eval; Captum's default call with the
normalized black baseline, target the argmax, ``n_steps=50``; one warm-up call each, the
median of 2 timed pairs), with its parameters trainable (as a user's) or frozen (as
``load_model`` returns them), on ``randn`` or the bench's synthetic images.

usage: .venv/bin/python benchmarks/issue25_user_setup.py N_IMAGES
"""

import statistics
import sys
import time
import warnings

import numpy as np
import torch
from torch import nn
from torchvision.models import resnet18

warnings.filterwarnings("ignore")
from captum.attr import IntegratedGradients

from pipeline.custom_explainers import get_custom_integrated_gradients
from pipeline.data import black_baseline, normalize
from pipeline.datasets import synthetic_image


def user_model(frozen):
    torch.manual_seed(0)
    m = nn.Sequential(resnet18(weights=None), nn.Softmax(1)).eval()
    if frozen:
        for p in m.parameters(): p.requires_grad_(False)
    return m

def inputs(kind, n):
    if kind == "randn":
        torch.manual_seed(0); return torch.randn(n, 3, 224, 224)
    pix = np.stack([synthetic_image(i, 224, 0) for i in range(n)])
    return normalize(torch.from_numpy(pix).permute(0, 3, 1, 2).float() / 255.0)

def pair(model, x):
    base = black_baseline(x)
    with torch.no_grad(): t = model(x).argmax(1)
    ig = IntegratedGradients(model)
    t0 = time.perf_counter(); ig.attribute(x, base, target=t, n_steps=50); c = time.perf_counter() - t0
    t0 = time.perf_counter(); get_custom_integrated_gradients(model, x, 50); o = time.perf_counter() - t0
    return c, o

n = int(sys.argv[1])
for frozen in (False, True):
    for kind in ("randn", "synthetic"):
        m = user_model(frozen); x = inputs(kind, n)
        pair(m, x[:1])  # warm-up (one call each)
        rs = [pair(m, x) for _ in range(2)]
        c = statistics.median(r[0] for r in rs); o = statistics.median(r[1] for r in rs)
        print(f"n={n} frozen={frozen} input={kind}: captum {c:.2f}s ours {o:.2f}s ratio {c/o:.2f}x", flush=True)
