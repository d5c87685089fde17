"""Weights without loading torch: each torchvision architecture's published checkpoint (its
name, file, cache path and the hash in its name), a weights file's identity by SHA-256, the
remembered failed download and ``xai weights import``. ``xai status`` uses these, through the
model sources' weights identity, to tell whether a store is current without importing torch;
the sources use the same definitions when they load weights."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

from pipeline.errors import WeightsError
from pipeline.file_io import copy_atomic, file_sha256, write_atomic
from pipeline.models.safetensors_file import is_safetensors
from pipeline.models.torchvision_table import DEFAULT_ARCH, PublishedWeights, published_weights

#: ``str(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)`` and its checkpoint file name
#: (checked against torchvision in the tests): the reference model's.
IMAGENET_WEIGHTS_NAME = "ResNet18_Weights.IMAGENET1K_V1"
IMAGENET_FILE = "resnet18-f37072fd.pth"
IMAGENET_ID = f"torchvision:{IMAGENET_WEIGHTS_NAME}"

#: What the classifier ends in: a softmax (class probabilities) or nothing (raw logits).
HEADS: tuple[str, ...] = ("softmax", "logits")
#: Keywords of ``[model] weights`` / ``--weights``; anything else is a weights file: a state
#: dict (``.pth``, ``.pt``) or an exported program (``.pt2``). The sources answer the same
#: (:func:`pipeline.models.sources.is_weights_path`).
#: The file ending of a ``torch.export`` program.
EXPORTED = ".pt2"


def published(arch: str = DEFAULT_ARCH) -> PublishedWeights:
    """The checkpoint ``weights = "imagenet"`` means for ``arch`` (torchvision's DEFAULT)."""
    return published_weights(arch)


def file_identity(weights: str, qualifier: str) -> str:
    """``file:[<qualifier>:]<name>:sha256=<hex>`` of a weights file; ``file:[...]<weights>``
    when there is no such file."""
    where = f"{qualifier}:" if qualifier else ""
    path = Path(weights).expanduser()
    if path.is_file():
        return f"file:{where}{path.name}:sha256={file_sha256(path)}"
    return f"file:{where}{weights}"


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


def cache_path(arch: str = DEFAULT_ARCH) -> Path:
    """Where torchvision caches ``arch``'s checkpoint: ``$TORCH_HOME/hub/checkpoints``."""
    return hub_dir() / "checkpoints" / published(arch).file


def imagenet_cache_path() -> Path:
    """Where torchvision caches the ResNet18 checkpoint (:func:`cache_path` of resnet18)."""
    return cache_path(DEFAULT_ARCH)


# ------------------------------------------------------------------ offline machines

#: How long a failed download is remembered before ``auto`` tries the network again.
RETRY_AFTER_S = 3600.0
#: Where the ResNet18 checkpoint is downloaded from; a mirror may be set in the environment.
IMAGENET_URL = f"https://download.pytorch.org/models/{IMAGENET_FILE}"


def weights_url(arch: str = DEFAULT_ARCH) -> str:
    """The download address of ``arch``'s checkpoint: torchvision's own, or a mirror:
    ``$XAI_WEIGHTS_MIRROR/<file>`` for any architecture, ``$XAI_IMAGENET_URL`` for ResNet18."""
    file = published(arch).file
    if arch == DEFAULT_ARCH and os.environ.get("XAI_IMAGENET_URL"):
        return os.environ["XAI_IMAGENET_URL"]
    mirror = os.environ.get("XAI_WEIGHTS_MIRROR")
    return f"{mirror.rstrip('/')}/{file}" if mirror else published(arch).url


def imagenet_url() -> str:
    """The ResNet18 checkpoint's download address (:func:`weights_url`)."""
    return weights_url(DEFAULT_ARCH)


def hash_prefix(arch: str = DEFAULT_ARCH) -> str:
    """The SHA-256 prefix torchvision publishes in the checkpoint's file name (``f37072fd``);
    ``torch.hub`` checks downloads against the same prefix."""
    return published(arch).hash_prefix


def _failure_marker(arch: str = DEFAULT_ARCH) -> Path:
    path = cache_path(arch)
    return path.with_name(path.name + ".unreachable.json")


def recent_failure(now: float | None = None, arch: str = DEFAULT_ARCH) -> dict | None:
    """The remembered failed download, while it is younger than :data:`RETRY_AFTER_S`:
    ``{"time": epoch seconds, "reason": str, "retry_at": epoch seconds}``; else None."""
    marker = _failure_marker(arch)
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


def remember_failure(reason: str, arch: str = DEFAULT_ARCH) -> None:
    """Note that the download failed, so that ``auto`` does not wait on the network again soon.
    Best effort: a cache folder that cannot be written only means the next run tries again."""
    marker = _failure_marker(arch)
    with contextlib.suppress(OSError):
        write_atomic(marker, json.dumps({"time": time.time(), "reason": reason,
                                         "url": weights_url(arch)}).encode())


def forget_failure(arch: str = DEFAULT_ARCH) -> None:
    """Drop the remembered failure (the file is now in place, or the user asks to retry)."""
    with contextlib.suppress(OSError):
        _failure_marker(arch).unlink()


def offline_hint(arch: str = DEFAULT_ARCH) -> str:
    """One line: how to put the checkpoint in place on a machine without network."""
    where = "" if arch == DEFAULT_ARCH else f" --arch {arch}"
    return (f"Put the file in place with `xai weights import{where} FILE` "
            f"({published(arch).file} from {published(arch).url}; in Python: "
            "pipeline.models.checkpoints.import_weights(FILE)), or pass"
            " a state-dict file as the weights "
            "(--weights FILE; load_model(weights=FILE)).")


def import_weights(source: Path, arch: str = DEFAULT_ARCH) -> Path:
    """Check a downloaded checkpoint of ``arch`` and copy it into torch's cache.

    The file's SHA-256 must start with the prefix torchvision publishes in the checkpoint's
    name (what ``torch.hub`` itself checks). The copy is atomic: a crash leaves either no file
    or the whole file in the cache.

    Returns
    -------
    Path
        The cached file (``$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth`` for ResNet18).

    Raises
    ------
    WeightsError
        When the file is missing or its hash does not match.
    """
    source = Path(source).expanduser()
    pub = published(arch)
    if not source.is_file():
        raise WeightsError(f"Expected a checkpoint file at {source}, but there is none. "
                           f"Download {pub.url} on a machine with network and pass "
                           "that file.")
    if is_safetensors(source):
        raise WeightsError(
            f"Expected torchvision's published {pub.file} for {arch}, got the safetensors "
            f"file {source}. torchvision publishes .pth files, and the cache takes only a "
            "file whose SHA-256 matches the one it publishes, so a safetensors copy cannot "
            "stand in for --weights imagenet. Use it as it is: --weights "
            f"{source} --arch {arch} (its class count is read off its classifier).")
    digest = file_sha256(source)
    prefix = hash_prefix(arch)
    if not digest.startswith(prefix):
        raise WeightsError(
            f"Expected {source} to be torchvision's {pub.file} for {arch} (SHA-256 starting "
            f"{prefix}), got SHA-256 {digest}. The file is another checkpoint or an "
            f"incomplete download: fetch {pub.url} again, pass the architecture it is for "
            "with --arch, or use a state-dict file of your own with --weights FILE.")
    dest = cache_path(arch)
    copy_atomic(source, dest)
    forget_failure(arch)
    return dest
