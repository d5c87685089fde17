"""A ResNet18 trained on the ``evidence`` dataset: a model whose right answer is known.

torchvision's ``resnet18`` with a K-class head (K = the shapes of
:mod:`pipeline.data.evidence_dataset`), trained from scratch, deterministically from the
settings, on freshly generated images (no image is seen twice). The trained weights are
cached under ``$XAI_CACHE_DIR`` (default ``~/.cache/xai``) in a file named by the hash of
every setting that shapes them, next to a JSON sidecar with the file's SHA-256 and the
held-out accuracy. A file that is corrupt, or that was made with other settings, fails its
hash check and is retrained, with a message.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.data.evidence_dataset import SHAPES, TrainSettings, evidence_batch
from pipeline.errors import WeightsError
from pipeline.file_io import file_sha256, write_atomic
from pipeline.models.sources.base import family_of
from pipeline.models.torchvision_table import DEFAULT_ARCH

Progress = Callable[[str, int, int], None]


def cache_dir() -> Path:
    """``$XAI_CACHE_DIR``, else ``~/.cache/xai``."""
    return Path(os.environ.get("XAI_CACHE_DIR") or Path.home() / ".cache" / "xai").expanduser()


def evidence_network() -> nn.Module:
    """torchvision's ResNet18 with a ``len(SHAPES)``-class head, untrained."""
    return family_of(DEFAULT_ARCH).build(DEFAULT_ARCH, len(SHAPES))


def _inputs(pixels: np.ndarray) -> torch.Tensor:
    from pipeline.data.images import from_uint8_hwc, normalize

    return normalize(from_uint8_hwc(pixels)).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def accuracy(net: nn.Module, settings: TrainSettings, chunk: int = 100) -> float:
    """Top-1 accuracy on ``settings.val_images`` held-out images."""
    net.eval()
    right = 0
    for start in range(0, settings.val_images, chunk):
        idx = range(start, min(start + chunk, settings.val_images))
        pixels, _, labels = evidence_batch(idx, settings.seed, settings.size,
                                           settings.backgrounds, split="val",
                                           shortcut=settings.shortcut)
        pred = net(_inputs(pixels)).argmax(1).numpy()
        right += int((pred == labels).sum())
    return right / settings.val_images


def train(settings: TrainSettings, progress: Progress | None = None
          ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train the evidence model from scratch; return its state dict and a report
    (``accuracy``, ``seconds``, ``settings``)."""
    t0 = time.perf_counter()
    torch.manual_seed(settings.seed)
    net = evidence_network().to(memory_format=torch.channels_last)
    steps = max(1, settings.images // settings.batch)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr,
                            weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=steps,
                                                pct_start=0.25)
    net.train()
    if progress is not None:  # announced before the first batch, which times the estimate
        progress("training", 0, steps * settings.batch)
    for step in range(steps):
        idx = range(step * settings.batch, (step + 1) * settings.batch)
        pixels, _, labels = evidence_batch(idx, settings.seed, settings.size,
                                           settings.backgrounds, split="train",
                                           shortcut=settings.shortcut)
        loss = nn.functional.cross_entropy(net(_inputs(pixels)), torch.from_numpy(labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None:
            progress("training", (step + 1) * settings.batch, steps * settings.batch)
    acc = accuracy(net, settings)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    report = {"accuracy": acc, "seconds": round(time.perf_counter() - t0, 1),
              "settings": dataclasses.asdict(settings), "key": settings.key()}
    return state, report


def _paths(settings: TrainSettings) -> tuple[Path, Path]:
    base = cache_dir() / f"evidence-resnet18-{settings.key()}"
    return base.with_suffix(".pth"), base.with_suffix(".json")


def cached_report(settings: TrainSettings) -> dict[str, Any] | None:
    """The sidecar of a cached model whose file matches its recorded hash; else None."""
    weights, sidecar = _paths(settings)
    try:
        report = json.loads(sidecar.read_text())
        if report.get("key") != settings.key() or file_sha256(weights) != report["sha256"]:
            return None
        return dict(report)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def load_evidence_model(settings: TrainSettings, progress: Progress | None = None,
                        notify: Callable[[str], None] | None = None,
                        ) -> tuple[nn.Module, dict[str, Any]]:
    """The trained evidence model (eval mode, not frozen) and its report, training it first
    when the cache has no valid copy for these settings.

    Raises
    ------
    WeightsError
        When the background photos are missing (the message says where they are expected).
    """
    weights, sidecar = _paths(settings)
    report = cached_report(settings)
    if report is None:
        if weights.exists() or sidecar.exists():
            (notify or print)(f"cached evidence model {weights} is damaged or from other "
                              "settings (its hash does not match): training it again")
        if not Path(settings.backgrounds).is_dir():
            raise WeightsError(
                f"Expected background photos for the evidence model in {settings.backgrounds},"
                " but the folder is missing. Run from the project folder, or set [dataset] "
                "root to a folder of photos.")
        state, report = train(settings, progress)
        buf = io.BytesIO()
        torch.save(state, buf)
        write_atomic(weights, buf.getvalue())
        report["sha256"] = file_sha256(weights)
        write_atomic(sidecar, json.dumps(report, indent=2).encode())
    net = evidence_network()
    try:
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except Exception as exc:  # a file swapped between the check and the load
        raise WeightsError(f"Expected the evidence model at {weights} to load, got "
                           f"{type(exc).__name__}. Delete it and run again.") from exc
    return net.eval(), report
