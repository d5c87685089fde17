"""Classifier loading: the model source that takes the ``(arch, weights)`` pair
(:mod:`pipeline.models.sources`) loads the network; here it is frozen, given its output head,
its class names and its preprocessing.

The returned model is in eval mode with frozen parameters, so gradients are only ever taken
with respect to the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pipeline.data.class_names import (
    imagenet_classes,
    imagenet_synsets,
    synset_to_index,
)
from pipeline.errors import WeightsError
from pipeline.models.checkpoints import HEADS, cache_path
from pipeline.models.preprocessing import IMAGENET, Preprocessing
from pipeline.models.sources import LoadRequest, source_for
from pipeline.models.torchvision_table import DEFAULT_ARCH

if TYPE_CHECKING:
    from collections.abc import Callable

    from pipeline.data.evidence_dataset import TrainSettings

__all__ = ["LoadedModel", "class_names", "freeze", "imagenet_cache_path", "imagenet_synsets",
           "load_model", "synset_to_index", "with_head"]


@dataclass(frozen=True)
class LoadedModel:
    """A classifier ready for attribution.

    Attributes
    ----------
    model
        Maps ``(N, 3, H, W)`` normalized images to ``(N, classes)`` outputs of the chosen head.
    backbone
        The same network without the head: ``(N, 3, H, W)`` to ``(N, classes)`` logits.
    head
        ``"softmax"`` (class probabilities) or ``"logits"``.
    weights_id
        Identity of the weights, recorded in the store (``torchvision:...``, ``file:...``,
        ``random:seed=...``).
    is_random
        True when the weights are random (results mean nothing about a real model).
    note
        One line on why ``auto`` fell back to random weights and how to put the ImageNet
        file in place; empty otherwise.
    classes
        The class names, in output order.
    report
        How the weights were made, when this project trained them (``evidence``: held-out
        accuracy, seconds, settings); empty otherwise.
    arch
        The architecture (``resnet18``, ``timm:deit_tiny_patch16_224``; ``exported`` for a
        ``.pt2``).
    preprocessing
        What the images go through before the model
        (:class:`pipeline.models.preprocessing.Preprocessing`).
    warnings
        What the caller should tell the user (e.g. class names made up as ``class_0...``).
    """

    model: nn.Module
    backbone: nn.Module
    head: str
    weights_id: str
    is_random: bool
    note: str = ""
    classes: tuple[str, ...] = ()
    report: dict[str, Any] = field(default_factory=dict)
    arch: str = DEFAULT_ARCH
    preprocessing: Preprocessing = IMAGENET
    warnings: tuple[str, ...] = ()


def imagenet_cache_path(arch: str = DEFAULT_ARCH) -> Path:
    """Where torchvision caches ``arch``'s ImageNet checkpoint."""
    return cache_path(arch)


@cache
def class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names in class-index order."""
    return imagenet_classes()


def freeze(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode and stop its parameters from requiring grad."""
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def with_head(backbone: nn.Module, head: str) -> nn.Module:
    """Append the output head: ``softmax`` (class probabilities) or ``logits`` (identity)."""
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
    *,
    arch: str = DEFAULT_ARCH,
    classes: Sequence[str] | str | Path | None = None,
    dataset_classes: Sequence[str] | None = None,
    preprocessing: Preprocessing | None = None,
) -> LoadedModel:
    """Load a classifier ready for attribution.

    Parameters
    ----------
    weights
        ``"imagenet"`` (``arch``'s published weights, through torch's hub cache; an error when
        they cannot be had), ``"auto"`` (the same when available, else seeded random),
        ``"random"`` (seeded, reproducible), ``"evidence"`` (the evidence model, ResNet18),
        a state-dict file (a checkpoint of ``arch``; its class count is read off its
        classifier) or a ``.pt2`` exported program (any architecture; ``arch`` is ignored).
    head
        ``"softmax"`` or ``"logits"``.
    seed
        Seed for random weights.
    device
        Where the model lives.
    evidence
        With ``weights="evidence"``: the training settings of the evidence model (trained on
        first use and cached, see :mod:`pipeline.models.sources.evidence_training`); default
        ``TrainSettings(seed=seed)``.
    progress
        ``progress(what, done, total)`` while the evidence model trains.
    arch
        The architecture (:mod:`pipeline.models.architectures`): a torchvision name or
        ``timm:<name>``.
    classes
        A checkpoint's class names, or a file of them (see
        :func:`~pipeline.data.class_names.resolve_classes`).
    dataset_classes
        The dataset's class folders, sorted: a checkpoint's names when none are given.
    preprocessing
        Overrides of the source's own preprocessing (the config's).

    Raises
    ------
    WeightsError
        When the weights cannot be obtained or do not fit, with what to do instead.
    ConfigError
        When ``arch`` names no architecture.
    """
    key = str(weights)
    source = source_for(arch, key)
    prep = preprocessing or source.preprocessing(arch, key)
    request = LoadRequest(arch, key, seed, prep.crop, evidence, progress, classes,
                          dataset_classes)
    loaded = source.load(request)
    net = freeze(loaded.net)
    names, notes = source.class_names(net, request)
    backbone = net.to(device)
    model = freeze(with_head(backbone, head)).to(device)
    return LoadedModel(model=model, backbone=backbone, head=head,
                       weights_id=loaded.weights_id, is_random=loaded.is_random,
                       note=loaded.note, classes=names, report=loaded.report,
                       arch=source.recorded_arch_of(arch, key), preprocessing=prep, warnings=notes)
