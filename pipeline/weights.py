"""Weights identity without loading torch: the ImageNet checkpoint's name and cache path,
and a file's SHA-256. ``xai status`` uses these to tell whether a store is current without
importing torch; :mod:`pipeline.model` uses the same definitions when it loads weights."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

#: ``str(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)`` and its checkpoint file name
#: (checked against torchvision in the tests).
IMAGENET_WEIGHTS_NAME = "ResNet18_Weights.IMAGENET1K_V1"
IMAGENET_FILE = "resnet18-f37072fd.pth"
IMAGENET_ID = f"torchvision:{IMAGENET_WEIGHTS_NAME}"


def hub_dir() -> Path:
    """``torch.hub.get_dir()``: ``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``, else
    ``~/.cache/torch/hub``. Once torch is imported, torch's own answer (which also follows
    ``torch.hub.set_dir``)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return Path(torch.hub.get_dir())
    return default_hub_dir()


def default_hub_dir() -> Path:
    """torch's default hub folder, from the environment alone."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")),
        "torch")
    return Path(os.path.expanduser(home)) / "hub"


def imagenet_cache_path() -> Path:
    """Where torchvision caches the ResNet18 checkpoint: ``$TORCH_HOME/hub/checkpoints``."""
    return hub_dir() / "checkpoints" / IMAGENET_FILE


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (part of a local weight file's identity)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
