"""torchvision's classification models by name (``resnet18``, ``convnext_tiny``,
``vit_b_16``, ...), with their published ImageNet weights through torch's hub cache, or
seeded random weights.

What is known about them without torch (names, preprocessing, weights files, classifier
entries) comes from :mod:`pipeline.models.torchvision_table`; the published checkpoints'
cache, download memory and import from :mod:`pipeline.models.checkpoints`. Run as a module,
it remakes that table from the installed torchvision::

    python -m pipeline.models.sources.torchvision_models \
        > pipeline/resources/torchvision_models.json
"""

from __future__ import annotations

import difflib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.data.class_names import imagenet_classes
from pipeline.errors import WeightsError
from pipeline.file_io import file_sha256
from pipeline.models.checkpoints import (
    ImportedWeights,
    cache_path,
    forget_failure,
    hash_prefix,
    imported,
    offline_hint,
    published,
    recent_failure,
    remember_failure,
    uses_imported,
    weights_url,
)
from pipeline.models.preprocessing import Preprocessing
from pipeline.models.safetensors_file import read_safetensors
from pipeline.models.sources.base import (
    ArchitectureFamily,
    LoadRequest,
    WeightsUnavailable,
    register_source,
)
from pipeline.models.torchvision_table import (
    DEFAULT_ARCH,
    fitting_archs,
    is_torchvision_arch,
    state_signature,
    table_classifier_entries,
    table_preprocessing,
    torchvision_archs,
)

if TYPE_CHECKING:
    from torch import nn

#: Built with their auxiliary heads and ``transform_input``, as their published weights are.
_AUXILIARY_HEADS = ("googlenet", "inception_v3")


class TorchvisionModels(ArchitectureFamily):
    """Every classification model of ``torchvision.models``."""

    name = "torchvision"
    arch_help = "any torchvision classification model (resnet50, convnext_tiny, vit_b_16, ...)"

    def arch_form(self) -> str:
        return (f"a torchvision classification model (e.g. resnet18, resnet50, "
                f"convnext_tiny, vit_b_16; all {len(torchvision_archs())}: "
                f"torchvision.models.list_models(module=torchvision.models))")

    def names_arch(self, arch: str) -> bool:
        return is_torchvision_arch(arch)

    def arch_suggestions(self, arch: str) -> list[str]:
        return difflib.get_close_matches(arch, torchvision_archs(), n=3, cutoff=0.6)

    def arch_preprocessing(self, arch: str) -> Preprocessing:
        return table_preprocessing(arch)

    def has_published(self, arch: str) -> bool:
        """torchvision's checkpoint in the cache, or a safetensors one imported in its
        place."""
        return cache_path(arch).exists() or imported(arch) is not None

    def published_id(self, arch: str) -> str:
        """torchvision's weights (``torchvision:ResNet18_Weights.IMAGENET1K_V1``), or the
        imported safetensors file's identity when that is what loads."""
        if (record := uses_imported(arch)) is not None:
            return record.identity
        return f"torchvision:{published(arch).name}"

    def published_note(self, arch: str, weights: str) -> str:
        """Which file a run loads when it is an imported safetensors one."""
        record = uses_imported(arch)
        return "" if record is None else record.note(weights)

    def weights_problem(self, arch: str, weights: str) -> str | None:
        if weights == "imagenet" and not self.has_published(arch) \
                and recent_failure(arch=arch) is not None:
            return (f"the {arch} checkpoint is not in the cache ({cache_path(arch)}) and a "
                    f"download failed recently. {offline_hint(arch)}")
        return None

    def fallback_hint(self, arch: str, weights: str) -> str:
        return offline_hint(arch) if weights == "auto" else ""

    def build(self, arch: str, num_classes: int | None = None, crop: int | None = None, *,
              initialise: bool = True) -> nn.Module:
        """``arch`` built as torchvision builds it for its published weights (the same extra
        parameters): googlenet and inception_v3 with their auxiliary heads and
        ``transform_input``, a ViT for ``crop`` px, a MaxViT for ``(crop, crop)`` inputs."""
        import warnings

        from torchvision.models import get_model

        kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
        if arch in _AUXILIARY_HEADS:
            kwargs.update(transform_input=True, aux_logits=True, init_weights=initialise)
        elif arch.startswith("vit_") and crop is not None:
            kwargs["image_size"] = crop
        elif arch.startswith("maxvit") and crop is not None:
            kwargs["input_size"] = (crop, crop)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*weight initialization.*")
            return get_model(arch, weights=None, **kwargs)

    def classifier_entries(self, arch: str) -> tuple[str, ...]:
        return table_classifier_entries(arch)

    def after_load(self, arch: str, net: nn.Module) -> nn.Module:
        """Drop the auxiliary heads (training only) once their weights are loaded."""
        if arch == "googlenet":
            net.aux_logits = False  # type: ignore[assignment]
            net.aux1 = net.aux2 = None  # type: ignore[assignment]
        elif arch == "inception_v3":
            net.aux_logits = False  # type: ignore[assignment]
            net.AuxLogits = None  # type: ignore[assignment]
        return net

    def fitting_archs(self, shapes: Mapping[str, Sequence[int]]) -> list[str]:
        return fitting_archs(shapes)

    def load_published(self, arch: str, crop: int, remember: bool = False) -> nn.Module:
        return load_imagenet(self, arch, crop, remember)

    def class_names(self, net: nn.Module, request: LoadRequest
                    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Its 1000 ImageNet categories."""
        return imagenet_classes(), ()


def offline_message(reason: str, arch: str) -> str:
    """What to do when ``arch``'s ImageNet weights are not in the cache and could not be
    downloaded for ``reason``."""
    path = cache_path(arch)
    pub = published(arch)
    where = "" if arch == DEFAULT_ARCH else f" --arch {arch}"
    return (
        f"Expected the ImageNet weights of {arch} ({pub.name}), but they are not in the cache "
        f"and could not be downloaded ({reason}).\n"
        "Ways out:\n"
        f"  1. on a machine with network, download {pub.url}, then: "
        f"xai weights import{where} FILE, or in Python "
        "pipeline.models.checkpoints.import_weights(FILE"
        f"{', arch=' + repr(arch) if where else ''}) (checks it and copies it to {path}); "
        f"a safetensors copy: xai weights import FILE.safetensors{where} --sha256 HEX, the "
        "hash its publisher lists\n"
        f"  2. point to a local state-dict file: --weights /path/to/{arch}.pth, or "
        f"load_model(weights='/path/to/{arch}.pth')\n"
        "  3. run with seeded random weights (results are meaningless): --weights random, or "
        "load_model(weights='random')"
    )


def _unavailable(reason: str, arch: str) -> WeightsUnavailable:
    return WeightsUnavailable(offline_message(reason, arch), reason)


def download(arch: str, path: Path, remember: bool, timeout_s: float) -> None:
    """Fetch ``arch``'s checkpoint into the cache, checked against torchvision's hash prefix.

    With ``remember`` (the ``auto`` weights), a failure is noted in the cache folder and the
    network is not tried again until it is
    :data:`~pipeline.models.checkpoints.RETRY_AFTER_S` old, so offline runs do not wait on it
    every time.
    """
    import socket

    import torch

    failed = recent_failure(arch=arch) if remember else None
    if failed is not None:
        retry = time.strftime("%H:%M", time.localtime(failed["retry_at"]))
        raise _unavailable(f"{failed['reason']}; not retried until {retry}", arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        # download_url_to_file, not load_state_dict_from_url: the latter prints
        # "Downloading: ..." on every offline run before it fails.
        torch.hub.download_url_to_file(weights_url(arch), str(path),
                                       hash_prefix=hash_prefix(arch) or None, progress=False)
    except Exception as exc:  # urllib, socket and hash-check errors all mean the same here
        reason = f"{type(exc).__name__}: {exc}"
        if remember:
            remember_failure(reason, arch)
        raise _unavailable(reason, arch) from exc
    finally:
        socket.setdefaulttimeout(old_timeout)
    forget_failure(arch)


def load_imagenet(source: TorchvisionModels, arch: str, crop: int, remember: bool = False,
                  timeout_s: float = 20.0) -> nn.Module:
    """``arch`` with its published ImageNet weights, downloaded into the cache first when
    they are not there and no safetensors copy was imported in their place."""
    import torch

    path = cache_path(arch)
    if not path.exists():
        if (record := imported(arch)) is not None:
            return load_imported(source, record, crop)
        download(arch, path, remember, timeout_s)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = source.build(arch, None, crop, initialise=False)
        net.load_state_dict(state)
    except Exception as exc:  # unpickling and shape errors all mean the same here
        where = "" if arch == DEFAULT_ARCH else f" --arch {arch}"
        raise WeightsError(
            f"Expected a valid checkpoint at {path}, but it could not be read "
            f"({type(exc).__name__}). Delete the file and run again to download it, or "
            f"`xai weights import{where} FILE` (pipeline.models.checkpoints.import_weights) "
            "a good copy, "
            "or pass --weights (load_model(weights=...)) with a local "
            "file."
        ) from exc
    return source.after_load(arch, net)


def load_imported(source: TorchvisionModels, record: ImportedWeights, crop: int) -> nn.Module:
    """The architecture of an imported safetensors checkpoint with its tensors, once the file
    is found to be the one checked on import (same SHA-256).

    Raises
    ------
    WeightsError
        When the file changed since its import or does not load into the architecture.
    """
    arch, path = record.arch, record.path
    where = "" if arch == DEFAULT_ARCH else f" --arch {arch}"
    redo = (f"Import it again (`xai weights import FILE{where} --sha256 HEX`), or delete "
            f"{path} and its .json to use torchvision's checkpoint.")
    digest = file_sha256(path)
    if digest != record.sha256:
        raise WeightsError(
            f"Expected the imported safetensors {path} to have the SHA-256 checked on import "
            f"({record.sha256}), got {digest}: the file changed since. {redo}")
    state = read_safetensors(path)
    try:
        net = source.build(arch, None, crop, initialise=False)
        net.load_state_dict(state)
    except Exception as exc:  # missing, unexpected and mis-shaped tensors mean the same here
        raise WeightsError(
            f"Expected the tensors of {arch} in the imported safetensors {path}, but they do "
            f"not load into it ({type(exc).__name__}: {str(exc)[:300]}). {redo}") from exc
    return source.after_load(arch, net)


TORCHVISION = register_source(TorchvisionModels())


# ------------------------------------------------------------------ the table, remade
# python -m pipeline.models.sources.torchvision_models > pipeline/resources/torchvision_models.json

def make_table() -> dict[str, Any]:
    """What ``resources/torchvision_models.json`` holds, from the installed torchvision: per
    classification model its published weights, their preprocessing, its classifier entries
    and its state signature. Builds every model twice (slow: minutes)."""
    import torch
    import torchvision
    from torchvision.models import get_model_weights, list_models

    models: dict[str, Any] = {}
    for arch in list_models(module=torchvision.models):
        weights = get_model_weights(arch).DEFAULT
        t = weights.transforms()
        a, b = _shapes(arch, None), _shapes(arch, 7)
        classifier = sorted(k for k in a if a[k] != b.get(k))
        models[arch] = {
            "weights": str(weights), "url": weights.url,
            "num_classes": len(weights.meta["categories"]),
            "preprocessing": Preprocessing(
                int(t.resize_size[0]), int(t.crop_size[0]),
                tuple(float(v) for v in t.mean), tuple(float(v) for v in t.std),  # type: ignore[arg-type]
                str(t.interpolation.value)).to_dict(),
            "classifier": classifier,
            "signature": state_signature(a, classifier),
        }
        del a, b
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    categories = list(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    return {"torchvision": torchvision.__version__, "models": models,
            "imagenet_categories": categories}


def _shapes(arch: str, num_classes: int | None) -> dict[str, list[int]]:
    import torch

    source = TORCHVISION
    try:
        with torch.device("meta"):
            net = source.build(arch, num_classes)
    except (NotImplementedError, RuntimeError):  # builders that compute on tensors
        net = source.build(arch, num_classes)
    return {k: list(v.shape) for k, v in net.state_dict().items()}


if __name__ == "__main__":
    print(json.dumps(make_table(), indent=1, sort_keys=True))
