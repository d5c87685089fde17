"""What is known about torchvision's classification models without importing torch.

``resources/torchvision_models.json`` holds, per model of ``torchvision.models``, its
published weights (their name, the file torchvision downloads and the hash in its name), their
preprocessing, the state-dict entries of its classifier (the ones whose shape follows the
class count) and a signature of its state dict's shapes.
``python -m pipeline.models.sources.torchvision_models`` makes it from the installed
torchvision, and the tests check it against torchvision, so that ``xai status`` and config
checks stay torch-free.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from pipeline.errors import ConfigError
from pipeline.models.preprocessing import Preprocessing

#: The reference architecture, and the default of ``[model] arch``.
DEFAULT_ARCH = "resnet18"


@dataclass(frozen=True)
class PublishedWeights:
    """The weights ``weights = "imagenet"`` means for an architecture (its ``DEFAULT``)."""

    arch: str
    name: str  # e.g. "ResNet18_Weights.IMAGENET1K_V1"
    url: str

    @property
    def file(self) -> str:
        """The checkpoint's file name, as torch's hub cache keeps it."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def hash_prefix(self) -> str:
        """The SHA-256 prefix torchvision publishes in the file name (``f37072fd``); torch's
        hub checks downloads against it. Empty when the name carries none."""
        stem = self.file.rsplit(".", 1)[0]
        tail = stem.rsplit("-", 1)[-1] if "-" in stem else ""
        return tail if tail and all(c in "0123456789abcdef" for c in tail) else ""


@cache
def _table() -> dict[str, dict[str, Any]]:
    text = resources.files("pipeline.resources").joinpath("torchvision_models.json").read_text()
    return dict(json.loads(text)["models"])


def torchvision_archs() -> tuple[str, ...]:
    """Every classification model of ``torchvision.models``, by name."""
    return tuple(sorted(_table()))


def is_torchvision_arch(arch: str) -> bool:
    """Whether ``arch`` names a classification model of ``torchvision.models``."""
    return arch in _table()


def _entry(arch: str) -> dict[str, Any]:
    if arch not in _table():
        raise ConfigError("[model] arch: not a torchvision model")
    return _table()[arch]


def published_weights(arch: str) -> PublishedWeights:
    """The ImageNet weights torchvision publishes for ``arch`` (its ``DEFAULT``).

    Raises
    ------
    ConfigError
        When ``arch`` is no torchvision classification model.
    """
    entry = _entry(arch)
    return PublishedWeights(arch, entry["weights"], entry["url"])


def table_preprocessing(arch: str) -> Preprocessing:
    """The preprocessing of ``arch``'s published weights (their ``transforms()``)."""
    return Preprocessing.from_dict(_entry(arch)["preprocessing"])


def table_classifier_entries(arch: str) -> tuple[str, ...]:
    """The state-dict entries of ``arch``'s classifier (``fc.weight``, ``heads.head.bias``)."""
    return tuple(_entry(arch)["classifier"])


def state_signature(shapes: Mapping[str, Sequence[int]], classifier: Iterable[str]) -> str:
    """A short hash of a state dict's entry names and shapes, the class count left out (the
    classifier's first dimension): equal for two checkpoints of one architecture whatever
    their classes."""
    skip = set(classifier)
    rows = sorted(f"{k}:{','.join(str(d) for d in (s[1:] if k in skip else s))}"
                  for k, s in shapes.items() if not k.endswith("num_batches_tracked"))
    return hashlib.sha1("\n".join(rows).encode()).hexdigest()[:16]


def fitting_archs(shapes: Mapping[str, Sequence[int]]) -> list[str]:
    """The torchvision architectures a state dict (entry name -> shape) fits."""
    out = []
    for arch, entry in _table().items():
        if set(entry["classifier"]) <= set(shapes) and \
                state_signature(shapes, entry["classifier"]) == entry["signature"]:
            out.append(arch)
    return out
