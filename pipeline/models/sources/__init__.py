"""Model sources: where a classifier comes from, one module each, each registered at its
bottom (:func:`~pipeline.models.sources.base.register_source`).

``torchvision``
    Every classification model of ``torchvision.models`` by name, with its published ImageNet
    weights or seeded random ones.
``timm``
    ``timm:<name>``, when timm is installed.
``evidence``
    ``weights = "evidence"``: the ResNet18 trained here on the evidence dataset.
``state-dict``
    Any other weights path: a checkpoint of ``[model] arch``.
``exported-program``
    A ``.pt2`` from ``torch.export.save``: it carries its own architecture.
``huggingface``
    A ``save_pretrained`` folder or ``hf:ORG/NAME[@REV]`` from the local Hugging Face cache,
    when transformers is installed.

Adding a source is one module beside these, whose :class:`~.base.ModelSource` says what it
takes and which registers it at its bottom, and its name in :data:`SOURCE_MODULES`.
Everything here is torch-free: configs and ``xai status`` read it.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from pipeline.models.preprocessing import Preprocessing
from pipeline.models.sources.base import (
    MODEL_SOURCES,
    LoadedNetwork,
    LoadRequest,
    ModelSource,
    check_arch,
    family_of,
    is_weights_path,
    source_for,
)
from pipeline.models.torchvision_table import DEFAULT_ARCH

#: The source modules. Each registers its source when imported, in this order: ``check_arch``
#: names their architectures in it.
SOURCE_MODULES = ("torchvision_models", "timm_models", "evidence", "state_dict_file",
                  "exported_program", "huggingface")
for _module in SOURCE_MODULES:
    importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "MODEL_SOURCES",
    "LoadRequest",
    "LoadedNetwork",
    "ModelSource",
    "arch_help",
    "check_arch",
    "fallback_hint",
    "family_of",
    "hashed_class_count",
    "is_weights_path",
    "model_label",
    "preprocessing_for",
    "recorded_arch",
    "source_for",
    "weight_names",
    "weights_help",
    "weights_identity",
    "weights_problem",
]


def weights_help(*, single_images: bool = False) -> str:
    """The ``--weights`` choices of every source, for help texts (``imagenet | auto | ...``).

    ``single_images``: only those ``xai explain`` takes."""
    parts = (s.weights_help for s in MODEL_SOURCES.values()
             if s.weights_help and not (single_images and s.single_images_refusal))
    return " | ".join(dict.fromkeys(parts))


def arch_help() -> str:
    """How every source names its architectures, for help texts."""
    return " or ".join(dict.fromkeys(s.arch_help for s in MODEL_SOURCES.values()
                                     if s.arch_help))


def weight_names(*, single_images: bool = False) -> tuple[str, ...]:
    """Every ``[model] weights`` name a source answers to (``single_images``: those
    ``xai explain`` takes)."""
    names = (n for s in MODEL_SOURCES.values()
             if not (single_images and s.single_images_refusal) for n in s.weight_names)
    return tuple(dict.fromkeys(names))


def preprocessing_for(arch: str, weights: str) -> Preprocessing:
    """The preprocessing ``weights`` of ``arch`` were trained with (an exported program's and
    the evidence model's: ImageNet's)."""
    return source_for(arch, weights).preprocessing(arch, weights)


def weights_identity(weights: str, seed: int, evidence_key: str = "",
                     arch: str = DEFAULT_ARCH) -> str:
    """The identity a run records for ``weights`` of ``arch``, without loading anything: the
    model source's that takes them.

    ``imagenet``: torchvision's checkpoint (``torchvision:ResNet18_Weights.IMAGENET1K_V1``),
    or, while that is not in the cache, a safetensors file ``xai weights import`` put in its
    place (``imported:resnet18.safetensors:sha256=<hex>``);
    ``auto``: the same when its file is in the cache, else seeded random weights;
    ``random``: ``random:seed=<seed>`` (``random:<arch>:seed=<seed>`` for another
    architecture than ResNet18); ``evidence``: the evidence model of the training settings
    whose key is ``evidence_key``; anything else a weights file, by name and SHA-256 (and the
    architecture it is loaded into, for a state dict of another one than ResNet18).
    :func:`pipeline.models.classifier.load_model` records this, and ``xai status`` compares it
    with a store's without importing torch.
    """
    return source_for(arch, weights).weights_id(arch, weights, seed, evidence_key)


def recorded_arch(arch: str, weights: str) -> str:
    """The architecture a store records: ``arch``, or ``exported`` for an exported
    program."""
    return source_for(arch, weights).recorded_arch_of(arch, str(weights))


def model_label(arch: str, weights: str) -> str:
    """The model in words for the console: ``arch``, or for an exported program (which
    carries its own architecture, whatever ``[model] arch`` says) ``exported program
    <file name>``."""
    recorded = recorded_arch(arch, weights)
    if recorded == arch:
        return arch
    if recorded.startswith("hf:"):
        return f"{recorded.removeprefix('hf:')} ({weights})"
    return f"{recorded} program {Path(weights).name}"


def weights_problem(arch: str, weights: str) -> str | None:
    """Why ``weights`` of ``arch`` cannot be had now, known without trying; else None."""
    return source_for(arch, weights).weights_problem(arch, weights)


def fallback_hint(arch: str, weights: str) -> str:
    """How to put published weights in place when ``auto`` fell back to random ones; empty
    when there is nothing to put in place."""
    return source_for(arch, weights).fallback_hint(arch, weights)


def hashed_class_count(arch: str, weights: str) -> int:
    """The class count the ingest stage's hash includes for the model."""
    return source_for(arch, weights).hashed_class_count()
