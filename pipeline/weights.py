"""Weights identity without loading torch: the ImageNet checkpoint's name and cache path,
a file's SHA-256, the remembered failed download and ``xai weights import``. ``xai status``
uses these to tell whether a store is current without importing torch; :mod:`pipeline.model`
uses the same definitions when it loads weights."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from pipeline.errors import WeightsError
from pipeline.files import copy_atomic, write_atomic

#: ``str(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)`` and its checkpoint file name
#: (checked against torchvision in the tests).
IMAGENET_WEIGHTS_NAME = "ResNet18_Weights.IMAGENET1K_V1"
IMAGENET_FILE = "resnet18-f37072fd.pth"
IMAGENET_ID = f"torchvision:{IMAGENET_WEIGHTS_NAME}"

#: What the classifier ends in: a softmax (class probabilities) or nothing (raw logits).
HEADS: tuple[str, ...] = ("softmax", "logits")
#: Keywords of ``[model] weights`` / ``--weights``; anything else is a state-dict path.
WEIGHT_KEYWORDS: tuple[str, ...] = ("imagenet", "auto", "random", "evidence")


def weights_identity(weights: str, seed: int, evidence_key: str = "") -> str:
    """The identity a run records for ``weights``, without loading anything.

    ``imagenet``: torchvision's checkpoint; ``auto``: the same when its file is in the
    cache, else seeded random weights; ``random``: ``random:seed=<seed>``; ``evidence``: the
    evidence model of the training settings whose key is ``evidence_key``; anything else a
    state-dict file, by name and SHA-256. :func:`pipeline.model.load_model` records this, and
    ``xai status`` compares it with a store's without importing torch.
    """
    if weights == "evidence":
        return f"evidence:resnet18-{evidence_key}"
    if weights == "imagenet" or (weights == "auto" and imagenet_cache_path().exists()):
        return IMAGENET_ID
    if weights in ("random", "auto"):
        return f"random:seed={seed}"
    path = Path(weights).expanduser()
    return f"file:{path.name}:sha256={file_sha256(path)}" if path.is_file() else f"file:{weights}"


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


# ------------------------------------------------------------------ offline machines

#: How long a failed download is remembered before ``auto`` tries the network again.
RETRY_AFTER_S = 3600.0
#: Where the ImageNet checkpoint is downloaded from; a mirror may be set in the environment.
IMAGENET_URL = f"https://download.pytorch.org/models/{IMAGENET_FILE}"


def imagenet_url() -> str:
    """The download address: ``$XAI_IMAGENET_URL`` (a mirror) or torchvision's own."""
    return os.environ.get("XAI_IMAGENET_URL") or IMAGENET_URL


def hash_prefix() -> str:
    """The SHA-256 prefix torchvision publishes in the checkpoint's file name (``f37072fd``);
    ``torch.hub`` checks downloads against the same prefix."""
    return IMAGENET_FILE.rsplit("-", 1)[1].split(".")[0]


def _failure_marker() -> Path:
    return imagenet_cache_path().with_name(IMAGENET_FILE + ".unreachable.json")


def recent_failure(now: float | None = None) -> dict | None:
    """The remembered failed download, while it is younger than :data:`RETRY_AFTER_S`:
    ``{"time": epoch seconds, "reason": str, "retry_at": epoch seconds}``; else None."""
    marker = _failure_marker()
    try:
        data = json.loads(marker.read_text())
        when = float(data["time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    now = time.time() if now is None else now
    if not 0 <= now - when < RETRY_AFTER_S:
        return None
    return {"time": when, "reason": str(data.get("reason", "")),
            "retry_at": when + RETRY_AFTER_S}


def remember_failure(reason: str) -> None:
    """Note that the download failed, so that ``auto`` does not wait on the network again soon.
    Best effort: a cache folder that cannot be written only means the next run tries again."""
    marker = _failure_marker()
    with contextlib.suppress(OSError):
        write_atomic(marker, json.dumps({"time": time.time(), "reason": reason,
                                         "url": imagenet_url()}).encode())


def forget_failure() -> None:
    """Drop the remembered failure (the file is now in place, or the user asks to retry)."""
    with contextlib.suppress(OSError):
        _failure_marker().unlink()


def offline_hint() -> str:
    """One line: how to put the checkpoint in place on a machine without network."""
    return (f"Put the file in place with `xai weights import FILE` ({IMAGENET_FILE} from "
            f"{IMAGENET_URL}), or pass --weights with a state-dict file.")


def import_weights(source: Path) -> Path:
    """Check a downloaded ImageNet ResNet18 checkpoint and copy it into torch's cache.

    The file's SHA-256 must start with the prefix torchvision publishes in the checkpoint's
    name (what ``torch.hub`` itself checks). The copy is atomic: a crash leaves either no file
    or the whole file in the cache.

    Returns
    -------
    Path
        The cached file (``$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth``).

    Raises
    ------
    WeightsError
        When the file is missing or its hash does not match.
    """
    source = Path(source).expanduser()
    if not source.is_file():
        raise WeightsError(f"Expected a checkpoint file at {source}, but there is none. "
                           f"Download {IMAGENET_URL} on a machine with network and pass "
                           "that file.")
    digest = file_sha256(source)
    if not digest.startswith(hash_prefix()):
        raise WeightsError(
            f"Expected {source} to be torchvision's {IMAGENET_FILE} (SHA-256 starting "
            f"{hash_prefix()}), got SHA-256 {digest}. The file is another checkpoint or an "
            f"incomplete download: fetch {IMAGENET_URL} again, or use a state-dict file of your "
            "own with --weights FILE.")
    dest = imagenet_cache_path()
    copy_atomic(source, dest)
    forget_failure()
    return dest
