"""ResNet18 loading: ImageNet weights, a local state-dict file, or seeded random weights.

The returned model is in eval mode with frozen parameters, so gradients are only ever taken
with respect to the input.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from pipeline.errors import WeightsError
from pipeline.weights import (
    HEADS,
    IMAGENET_URL,
    forget_failure,
    hash_prefix,
    imagenet_cache_path,
    imagenet_url,
    offline_hint,
    recent_failure,
    remember_failure,
    weights_identity,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from pipeline.evidence import TrainSettings

IMAGENET_WEIGHTS = ResNet18_Weights.IMAGENET1K_V1


@dataclass(frozen=True)
class LoadedModel:
    """A classifier ready for attribution.

    Attributes
    ----------
    model
        Maps ``(N, 3, H, W)`` normalized images to ``(N, 1000)`` outputs of the chosen head.
    backbone
        The same network without the head: ``(N, 3, H, W)`` to ``(N, 1000)`` logits.
    head
        ``"softmax"`` (the seed's) or ``"logits"``.
    weights_id
        Identity of the weights, recorded in the store (``torchvision:...``, ``file:...``,
        ``random:seed=...``).
    is_random
        True when the weights are random (results mean nothing about a real model).
    note
        One line on why ``auto`` fell back to random weights and how to put the ImageNet
        file in place; empty otherwise.
    classes
        The class names, in output order (ImageNet's 1000, or the evidence shapes).
    report
        How the weights were made, when this project trained them (``evidence``: held-out
        accuracy, seconds, settings); empty otherwise.
    """

    model: nn.Module
    backbone: nn.Module
    head: str
    weights_id: str
    is_random: bool
    note: str = ""
    classes: tuple[str, ...] = ()
    report: dict[str, Any] = field(default_factory=dict)


def _offline_message(reason: str) -> str:
    path = imagenet_cache_path()
    return (
        "Expected ImageNet ResNet18 weights, but they are not in the cache and could not be "
        f"downloaded ({reason}).\n"
        "Ways out:\n"
        f"  1. on a machine with network, download {IMAGENET_URL}, then: "
        f"xai weights import FILE (checks it and copies it to {path})\n"
        "  2. point to a local state-dict file: --weights /path/to/resnet18.pth\n"
        "  3. run with seeded random weights (results are meaningless): --weights random"
    )


class _Unavailable(WeightsError):
    """The ImageNet checkpoint is not in the cache and was not downloaded; ``reason`` is one
    line for the ``auto`` fallback's notice."""

    def __init__(self, reason: str) -> None:
        super().__init__(_offline_message(reason))
        self.reason = reason


def _download(path: Path, remember: bool, timeout_s: float) -> None:
    """Fetch the checkpoint into the cache, checked against torchvision's hash prefix.

    With ``remember`` (the ``auto`` weights), a failure is noted in the cache folder and the
    network is not tried again until it is :data:`~pipeline.weights.RETRY_AFTER_S` old, so
    offline runs do not wait on it every time.
    """
    failed = recent_failure() if remember else None
    if failed is not None:
        retry = time.strftime("%H:%M", time.localtime(failed["retry_at"]))
        raise _Unavailable(f"{failed['reason']}; not retried until {retry}")
    path.parent.mkdir(parents=True, exist_ok=True)
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        # download_url_to_file, not load_state_dict_from_url: the latter prints
        # "Downloading: ..." on every offline run before it fails.
        torch.hub.download_url_to_file(imagenet_url(), str(path), hash_prefix=hash_prefix(),
                                       progress=False)
    except Exception as exc:  # urllib, socket and hash-check errors all mean the same here
        reason = f"{type(exc).__name__}: {exc}"
        if remember:
            remember_failure(reason)
        raise _Unavailable(reason) from exc
    finally:
        socket.setdefaulttimeout(old_timeout)
    forget_failure()


def _load_imagenet(remember: bool = False, timeout_s: float = 20.0) -> nn.Module:
    path = imagenet_cache_path()
    if not path.exists():
        _download(path, remember, timeout_s)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = resnet18(weights=None)
        net.load_state_dict(state)
    except Exception as exc:  # unpickling and shape errors all mean the same here
        raise WeightsError(
            f"Expected a valid checkpoint at {path}, but it could not be read "
            f"({type(exc).__name__}). Delete the file and run again to download it, or "
            "`xai weights import FILE` a good copy, or pass --weights with a local file."
        ) from exc
    return net


def describe_file(path: Path) -> str:
    """What a file that ``torch.load`` refused looks like, in words (from its first bytes)."""
    with path.open("rb") as fh:
        head = fh.read(64)
    if not head:
        return "it is empty"
    if head.startswith(b"PK\x03\x04"):
        return ("it is a zip archive like a torch.save() file, but not a readable one "
                "(truncated, or it holds objects other than tensors, which are refused "
                "because loading them could run code)")
    if head[:1] == b"\x80":
        return ("it is a Python pickle, not a tensor-only torch.save() file (objects other "
                "than tensors are refused because loading them could run code)")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"it starts with the bytes {head[:8].hex(' ')}, not a torch.save() file"
    if text.isprintable() or all(c.isprintable() or c in "\r\n\t" for c in text):
        first = text.splitlines()[0][:40] if text.strip() else ""
        return f"not a torch.save() file: it starts with text ({first!r})"
    return f"it starts with the bytes {head[:8].hex(' ')}, not a torch.save() file"


def _load_file(path: Path) -> nn.Module:
    if not path.is_file():
        raise WeightsError(
            f"Expected a weights file at {path}, but there is none. Pass an existing state-dict "
            "file, 'imagenet' or 'random' as the weights."
        )
    try:
        # weights_only: a checkpoint is data; never let it run code.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise WeightsError(
            f"Expected a torch.save() file of a ResNet18 state dict at {path}, but it could "
            f"not be loaded: {describe_file(path)}. Save weights with "
            "torch.save(model.state_dict(), path), or pass 'imagenet' or 'random'."
        ) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(
            f"Expected a state dict (name -> tensor) in {path}, got {type(obj).__name__}. "
            "Save weights with torch.save(model.state_dict(), path)."
        )
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    net = resnet18(weights=None)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        raise WeightsError(
            f"Expected ResNet18 weights in {path}, but the state dict does not fit: "
            f"{' '.join(line.strip() for line in first[:3])[:400]}"
        ) from exc
    return net


@cache
def _random_state(seed: int) -> dict[str, torch.Tensor]:
    """The seeded random ResNet18's parameters and buffers, made once per seed (drawing
    11 M weights took 0.15 s, and every run, worker and test made the model again)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return resnet18(weights=None).state_dict()


def _random(seed: int) -> nn.Module:
    """A fresh ResNet18 with the seeded random weights (a copy: callers own it)."""
    with torch.device("meta"):
        net = resnet18(weights=None)
    net = net.to_empty(device="cpu")
    net.load_state_dict(_random_state(seed))
    return net


def freeze(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode and stop its parameters from requiring grad."""
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def with_head(backbone: nn.Module, head: str) -> nn.Module:
    """Append the output head: ``softmax`` (the seed's) or ``logits`` (identity)."""
    if head not in HEADS:
        raise WeightsError(f"Expected head to be one of {', '.join(HEADS)}, got {head!r}.")
    return nn.Sequential(backbone, nn.Softmax(dim=1)) if head == "softmax" else backbone


def load_model(
    weights: str | Path = "imagenet",
    head: str = "softmax",
    seed: int = 0,
    device: str | torch.device = "cpu",
    evidence: TrainSettings | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> LoadedModel:
    """Load ResNet18 ready for attribution.

    Parameters
    ----------
    weights
        ``"imagenet"`` (torchvision IMAGENET1K_V1 through its cache; an error when it cannot
        be had), ``"auto"`` (ImageNet when available, else seeded random), ``"random"``
        (seeded, reproducible) or a path to a local state-dict file.
    head
        ``"softmax"`` or ``"logits"``.
    seed
        Seed for random weights.
    device
        Where the model lives.
    evidence
        With ``weights="evidence"``: the training settings of the evidence model (trained on
        first use and cached, see :mod:`pipeline.evidence_model`); default
        ``TrainSettings(seed=seed)``.
    progress
        ``progress(what, done, total)`` while the evidence model trains.

    Raises
    ------
    WeightsError
        When the weights cannot be obtained or do not fit, with what to do instead.
    """
    key, note = str(weights), ""
    report: dict[str, Any] = {}
    classes: tuple[str, ...] | None = None
    evidence_key = ""
    if key == "evidence":
        from pipeline.evidence import SHAPES, TrainSettings
        from pipeline.evidence_model import load_evidence_model

        settings = evidence or TrainSettings(seed=seed)
        net, report = load_evidence_model(settings, progress)
        evidence_key, is_random, classes = settings.key(), False, SHAPES
    elif key == "imagenet":
        net, is_random = _load_imagenet(), False
    elif key == "auto":
        try:
            net, is_random = _load_imagenet(remember=True), False
        except _Unavailable as exc:
            net, is_random, key = _random(seed), True, "random"
            note = f"ImageNet weights unavailable ({exc.reason}). {offline_hint()}"
        except WeightsError as exc:
            net, is_random, key = _random(seed), True, "random"
            note = str(exc)
    elif key == "random":
        net, is_random = _random(seed), True
    else:
        net, is_random = _load_file(Path(weights).expanduser()), False  # first: its errors
    wid = weights_identity("imagenet" if key == "auto" else key, seed, evidence_key)
    backbone = freeze(net).to(device)
    model = freeze(with_head(backbone, head)).to(device)
    return LoadedModel(model=model, backbone=backbone, head=head, weights_id=wid,
                       is_random=is_random, note=note,
                       classes=class_names() if classes is None else classes, report=report)


@cache
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names in class-index order."""
    return tuple(IMAGENET_WEIGHTS.meta["categories"])


@cache
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in class-index order (``n01440764`` is class 0)."""
    text = resources.files("pipeline.resources").joinpath("imagenet_synsets.txt").read_text()
    ids = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(ids) != 1000:
        raise WeightsError(f"Expected 1000 WordNet ids in imagenet_synsets.txt, got {len(ids)}.")
    return ids


@cache
def synset_to_index() -> dict[str, int]:
    """Map a WordNet id to its ImageNet class index."""
    return {wnid: i for i, wnid in enumerate(imagenet_synsets())}
