"""Architectures by name, whichever model source builds them: the check of an ``arch``, its
preprocessing, its classifier entries, the one network builder, and seeded random weights
(:func:`~pipeline.models.sources.base.random_network`).

The names are the sources' (:mod:`pipeline.models.sources`): ``resnet18`` and every other
classification model of ``torchvision.models``, ``timm:<name>`` when timm is installed.
Checking a name and reading its preprocessing are torch-free for torchvision's names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pipeline.models.preprocessing import (
    Preprocessing,
)
from pipeline.models.sources import check_arch, family_of
from pipeline.models.sources.base import random_network
from pipeline.models.torchvision_table import (
    DEFAULT_ARCH,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["DEFAULT_ARCH", "build", "check_arch", "classifier_entries", "default_preprocessing",
           "num_classes_of", "random_network"]


def default_preprocessing(arch: str) -> Preprocessing:
    """The preprocessing of ``arch``'s published weights (torchvision's ``transforms()``;
    timm's ``resolve_data_config``).

    Raises
    ------
    ConfigError
        When ``arch`` names no architecture.
    """
    return family_of(arch).arch_preprocessing(arch)


def classifier_entries(arch: str) -> tuple[str, ...]:
    """The state-dict entries of ``arch``'s classifier: the ones whose shape follows the
    class count (``fc.weight``, ``classifier.1.bias``, ``heads.head.weight``, ...)."""
    return family_of(arch).classifier_entries(arch)


def num_classes_of(arch: str, state: Mapping[str, torch.Tensor]) -> int | None:
    """The class count of a checkpoint of ``arch``, read off its classifier entries; None
    when it has none of them."""
    keys = [k for k in classifier_entries(arch) if k in state]
    return int(state[keys[0]].shape[0]) if keys else None


def build(arch: str, num_classes: int | None = None, crop: int | None = None, *,
          initialise: bool = True) -> nn.Module:
    """The network of ``arch`` with random weights, built by its source as for its published
    weights.

    Parameters
    ----------
    arch
        A name :func:`check_arch` accepts.
    num_classes
        The classifier's width; None: the published weights' (1000 for ImageNet).
    crop
        The input size in px, for architectures that fix it (ViT, MaxViT, timm's DeiT);
        None: the architecture's own.
    initialise
        False when weights are loaded into it next (skips a slow initialisation).

    Returns
    -------
    nn.Module
        Maps ``(N, 3, crop, crop)`` images to ``(N, num_classes)`` logits.
    """
    return family_of(arch).build(arch, num_classes, crop, initialise=initialise)
