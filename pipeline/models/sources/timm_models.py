"""timm's models, as ``timm:<name>`` (``timm:deit_tiny_patch16_224``), when timm is installed
(``make setup EXTRAS=timm``): preprocessing from timm's ``resolve_data_config``, seeded random
weights, or a state-dict file (:mod:`pipeline.models.sources.state_dict_file`). Their
published weights download from the Hugging Face hub, which this pipeline does not do."""

from __future__ import annotations

import difflib
from functools import cache
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError, WeightsError
from pipeline.models.preprocessing import INTERPOLATIONS, Preprocessing
from pipeline.models.sources.base import ArchitectureFamily, register_source

if TYPE_CHECKING:
    from torch import nn

PREFIX = "timm:"


class TimmModels(ArchitectureFamily):
    """timm's models by name, behind the ``timm:`` prefix."""

    name = "timm"
    arch_help = f"{PREFIX}NAME"

    def arch_form(self) -> str:
        return f"{PREFIX}<name>"

    def names_arch(self, arch: str) -> bool:
        return arch.startswith(PREFIX)

    def arch_problem(self, arch: str) -> str | None:
        """Only an empty name is known to be wrong before timm loads."""
        return None if arch[len(PREFIX):] else "expected timm:<model name>"

    def arch_preprocessing(self, arch: str) -> Preprocessing:
        return _preprocessing(arch[len(PREFIX):])

    def published_id(self, arch: str) -> str:
        raise WeightsError(_NO_PUBLISHED.format(arch=arch))

    def load_published(self, arch: str, crop: int, remember: bool = False) -> nn.Module:
        raise WeightsError(_NO_PUBLISHED.format(arch=arch))

    def build(self, arch: str, num_classes: int | None = None, crop: int | None = None, *,
              initialise: bool = True) -> nn.Module:
        """A timm model; one whose input size is fixed (ViT, DeiT) is built for ``crop`` px
        when that differs from its own."""
        timm = _timm()
        kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
        name = arch[len(PREFIX):]
        if crop is not None and crop != _preprocessing(name).crop:
            try:
                return timm.create_model(name, pretrained=False, img_size=crop, **kwargs)
            except TypeError:  # a model that takes any size (CNNs) has no img_size
                pass
        return timm.create_model(name, pretrained=False, **kwargs)

    def classifier_entries(self, arch: str) -> tuple[str, ...]:
        return _classifier_entries(arch[len(PREFIX):])


_NO_PUBLISHED = (
    "Expected a state-dict file for {arch}: timm's pretrained weights download from "
    "the Hugging Face hub on first use, which this pipeline does not do. Save "
    "timm.create_model(name, pretrained=True).state_dict() on a machine with network "
    "and pass it with --weights FILE (load_model(weights=FILE) in Python).")


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ConfigError("Expected timm for a timm:<name> architecture, but it is not "
                          "installed. Install it with `make setup EXTRAS=timm` (uv sync "
                          "--extra timm).") from None
    return timm


def _check(name: str) -> None:
    names = list(_timm().list_models())
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(PREFIX + c for c in close)}?" if close else ""
        raise ConfigError(f"[model] arch: expected a timm model name after timm:, got "
                          f"{name!r}{hint}")


@cache
def _preprocessing(name: str) -> Preprocessing:
    timm = _timm()
    _check(name)
    from timm.data import resolve_data_config

    model = timm.create_model(name, pretrained=False)
    cfg = resolve_data_config({}, model=model)
    crop = int(cfg["input_size"][-1])
    resize = round(crop / float(cfg.get("crop_pct", 0.875)))
    interp = str(cfg.get("interpolation", "bicubic"))
    mean = tuple(float(v) for v in cfg["mean"])
    std = tuple(float(v) for v in cfg["std"])
    return Preprocessing(resize, crop, (mean[0], mean[1], mean[2]), (std[0], std[1], std[2]),
                         interp if interp in INTERPOLATIONS else "bicubic")


@cache
def _classifier_entries(name: str) -> tuple[str, ...]:
    timm = _timm()
    _check(name)
    a = timm.create_model(name, pretrained=False, num_classes=1000).state_dict()
    b = timm.create_model(name, pretrained=False, num_classes=7).state_dict()
    return tuple(k for k in a if a[k].shape != b[k].shape)


register_source(TimmModels())
