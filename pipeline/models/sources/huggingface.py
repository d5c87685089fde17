"""Hugging Face image classifiers: any ``AutoModelForImageClassification`` (ViT, DeiT, BEiT,
ConvNeXt, Swin, ResNet, EfficientNet, ...) from a ``save_pretrained`` folder
(``--weights DIR``, a folder with a ``config.json``) or from the local Hugging Face cache
(``--weights hf:ORG/NAME[@REVISION]``), when transformers is installed
(``make setup EXTRAS=hf``).

What the model's own files say is used: the preprocessing from ``preprocessor_config.json``
(mean, std, size, crop percentage, resampling), the class names from ``config.json``'s
``id2label``. Nothing is downloaded during a run; no code from the model's repository runs
(``trust_remote_code`` is never set; a model that needs it is refused); the weights are read
from safetensors, or from a ``pytorch_model.bin`` only when ``torch.load(weights_only=True)``
reads it.

Torch-free until a model loads: configs and ``xai status`` read the folder's JSON files and
hash its weights without importing torch or transformers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError, WeightsError
from pipeline.file_io import file_sha256
from pipeline.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from pipeline.models.sources.base import (
    LoadedNetwork,
    LoadRequest,
    ModelSource,
    register_source,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

#: ``--weights hf:ORG/NAME[@REVISION]``: a model in the local Hugging Face cache.
PREFIX = "hf:"
#: The files of a ``save_pretrained`` folder this source reads.
CONFIG = "config.json"
PROCESSOR = "preprocessor_config.json"
SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLED = "pytorch_model.bin"

#: PIL's resampling numbers (what ``resample`` holds) as the pipeline's interpolations.
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}

_INSTALL = ("Install it with `make setup EXTRAS=hf` (uv sync --extra hf).")


class HuggingFaceModels(ModelSource):
    """A ``save_pretrained`` folder or a cached Hub model, whatever ``[model] arch`` says."""

    name = "huggingface"
    weights_help = "a Hugging Face folder | hf:ORG/NAME[@REV]"

    # ------------------------------------------------------------------ torch-free

    def takes(self, arch: str, weights: str) -> bool:
        return weights.startswith(PREFIX) or _is_model_folder(weights)

    def names_weights(self, weights: str) -> bool:
        """``hf:ORG/NAME`` is a name in the cache, not a path to make absolute."""
        return weights.startswith(PREFIX)

    def weights_missing(self, weights: str) -> bool:
        if weights.startswith(PREFIX):
            return _cached_folder(weights) is None
        return not _is_model_folder(weights)

    def preprocessing(self, arch: str, weights: str) -> Preprocessing:
        return processor_preprocessing(model_folder(weights))

    def weights_id(self, arch: str, weights: str, seed: int, evidence_key: str = "") -> str:
        """``hf:<model type>:<ORG/NAME>@<commit>`` for a cached model (its snapshot's commit
        is its revision); ``hf:<model type>:<folder name>:sha256=<weights>:config=<hash>``
        for a folder. Either changes when the weights or the config (classes, architecture)
        change, so a changed model recomputes ``predict`` and what follows it."""
        try:
            folder = model_folder(weights)
        except WeightsError:
            return f"hf:{weights.removeprefix(PREFIX)}"
        kind = str(_read_json(folder / CONFIG).get("model_type", "unknown"))
        if weights.startswith(PREFIX):
            repo, _revision = _parse_repo(weights)
            return f"hf:{kind}:{repo}@{folder.name}"
        return f"hf:{kind}:{folder.name}:sha256={_weights_hash(folder)}:config=" \
            f"{_json_hash(folder / CONFIG)}"

    def recorded_arch_of(self, arch: str, weights: str) -> str:
        """``hf:<architecture class>`` (``hf:ViTForImageClassification``)."""
        try:
            config = _read_json(model_folder(weights) / CONFIG)
        except WeightsError:
            return "hf"
        names = config.get("architectures") or [config.get("model_type", "unknown")]
        return f"{PREFIX}{names[0]}"

    def known_classes(self, weights: str) -> tuple[str, ...] | None:
        """The ``id2label`` names, read without loading; None when they are the generic
        ``LABEL_<i>`` that transformers fills in for a model saved without names."""
        try:
            config = _read_json(model_folder(weights) / CONFIG)
        except WeightsError:
            return None
        return _named_labels(config)

    # ------------------------------------------------------------------ loading (torch)

    def load(self, request: LoadRequest) -> LoadedNetwork:
        folder = model_folder(request.weights)
        config = _read_json(folder / CONFIG)
        check_config(config, folder)
        use_safetensors = check_weights(folder)
        transformers = _transformers()
        try:
            # Eager attention: the fused kernels (SDPA's flash and memory-efficient
            # backends, flash-attention) have no derivative of their backward pass, so
            # methods that differentiate a gradient fail on them, and they run attention as
            # one operator that forward and backward hooks cannot see into. Eager attention
            # is the plain matmul-softmax-matmul every method and Captum can take.
            model, info = transformers.AutoModelForImageClassification.from_pretrained(
                str(folder), attn_implementation="eager", local_files_only=True,
                trust_remote_code=False, use_safetensors=use_safetensors,
                output_loading_info=True)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise WeightsError(f"Expected a Hugging Face image classifier in {folder}, but "
                               f"transformers could not load it ({type(exc).__name__}: "
                               f"{str(exc)[:300]}).") from None
        # transformers fills weights the file lacks with random ones and only logs it: a
        # classifier head left random would explain nothing, so it is refused.
        if missing := [*info.get("missing_keys", ()), *info.get("mismatched_keys", ())]:
            shown = ", ".join(str(k) for k in list(missing)[:3])
            raise WeightsError(
                f"Expected every weight of {config.get('architectures', ['the model'])[0]} "
                f"in {folder}, but {len(missing)} are missing or of another shape ({shown}); "
                "transformers would draw them at random. Save the fine-tuned model with "
                "model.save_pretrained(DIR).")
        net = _wrapper_class()(model)
        return LoadedNetwork(net, self.weights_id(request.arch, request.weights, request.seed),
                             False)

    def class_names(self, net: nn.Module, request: LoadRequest
                    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``id2label`` in output order; given names or the dataset's class folders when the
        model was saved without names (``LABEL_0 ...``)."""
        config: Any = getattr(net.get_submodule("model"), "config")  # noqa: B009
        names = _named_labels({"id2label": dict(config.id2label)})
        count = int(config.num_labels)
        if names is not None and len(names) == count and request.classes is None:
            return names, ()
        return self.names_of_outputs(count, request)


# ------------------------------------------------------------------ the folder


def hub_cache() -> Path:
    """Where the Hugging Face cache is looked for, as ``huggingface_hub`` does:
    ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else
    ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")),
        "huggingface")
    return Path(home).expanduser() / "hub"


def _parse_repo(weights: str) -> tuple[str, str]:
    """``hf:ORG/NAME[@REVISION]`` as ``(ORG/NAME, REVISION)`` (``main`` by default)."""
    spec = weights.removeprefix(PREFIX)
    repo, _, revision = spec.partition("@")
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", repo):
        raise WeightsError(f"Expected --weights hf:ORG/NAME[@REVISION], got {weights!r}.")
    return repo, revision or "main"


def _cached_folder(weights: str) -> Path | None:
    """The cache's snapshot folder of ``hf:ORG/NAME[@REVISION]``, or None when it is not
    cached. A revision is a branch or tag (``refs/<revision>`` names its commit) or a
    commit hash."""
    repo, revision = _parse_repo(weights)
    root = hub_cache() / f"models--{repo.replace('/', '--')}"
    ref = root / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    folder = root / "snapshots" / commit
    return folder if (folder / CONFIG).is_file() else None


def model_folder(weights: str) -> Path:
    """The folder of ``weights``: a ``save_pretrained`` folder, or a cached model's
    snapshot.

    Raises
    ------
    WeightsError
        When the folder has no ``config.json``, or the model is not in the cache (the
        message gives the command that caches it on a machine with network).
    """
    if weights.startswith(PREFIX):
        folder = _cached_folder(weights)
        if folder is None:
            repo, revision = _parse_repo(weights)
            rev = "" if revision == "main" else f" --revision {revision}"
            raise WeightsError(
                f"Expected {repo}{'' if revision == 'main' else '@' + revision} in the "
                f"Hugging Face cache ({hub_cache()}, from $HF_HUB_CACHE or $HF_HOME), but it is "
                "not there; runs never download. On a machine with network run "
                f"`huggingface-cli download {repo}{rev}` (or `hf download {repo}{rev}`), then "
                "copy its cache folder here and set HF_HOME to it, or pass a "
                "save_pretrained folder with --weights DIR.")
        return folder
    folder = Path(weights).expanduser()
    if not (folder / CONFIG).is_file():
        raise WeightsError(f"Expected a Hugging Face model folder with a {CONFIG} at {folder}, "
                           "but there is none. Save one with model.save_pretrained(DIR) and "
                           "processor.save_pretrained(DIR).")
    return folder


def _is_model_folder(weights: str) -> bool:
    try:
        return (Path(weights).expanduser() / CONFIG).is_file()
    except (OSError, ValueError):
        return False


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"Expected a JSON object in {path}, but it could not be read "
                           f"({type(exc).__name__}: {exc}).") from None
    if not isinstance(data, dict):
        raise WeightsError(f"Expected a JSON object in {path}, got {type(data).__name__}.")
    return data


def _json_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


@cache
def _cached_sha256(path: Path, size: int, mtime_ns: int) -> str:
    """A weights file's SHA-256, once per file version (``xai status`` and every stage ask)."""
    return file_sha256(path)


def _weights_hash(folder: Path) -> str:
    """The SHA-256 of the folder's weights (of the shards' hashes for a sharded model)."""
    files = sorted(folder.glob("model*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    hashes = []
    for file in files:
        stat = file.stat()
        hashes.append(_cached_sha256(file, stat.st_size, stat.st_mtime_ns))
    if len(hashes) == 1:
        return hashes[0]
    return hashlib.sha256("".join(hashes).encode()).hexdigest()


def _named_labels(config: dict[str, Any]) -> tuple[str, ...] | None:
    """``id2label`` in index order; None when absent, gappy or the generic ``LABEL_<i>``."""
    raw = config.get("id2label") or {}
    try:
        labels = {int(k): str(v) for k, v in raw.items()}
    except (TypeError, ValueError):
        return None
    if not labels or sorted(labels) != list(range(len(labels))):
        return None
    names = tuple(labels[i] for i in range(len(labels)))
    if all(name == f"LABEL_{i}" for i, name in enumerate(names)):
        return None
    return names


# ------------------------------------------------------------------ checks before loading


def check_config(config: dict[str, Any], folder: Path) -> None:
    """Refuse a model whose config needs code from its repository, or that is no image
    classifier transformers knows.

    Raises
    ------
    WeightsError
        With the reason.
    """
    if config.get("auto_map"):
        raise WeightsError(
            f"Expected a model that transformers implements itself, but {folder / CONFIG} "
            f"has an auto_map ({', '.join(sorted(config['auto_map']))}): it needs "
            "trust_remote_code, which would run the Python code shipped with the model, so it "
            "is refused. Use a model whose architecture is in transformers, or export this "
            "one with torch.export and pass the .pt2.")
    kind = str(config.get("model_type", ""))
    known = image_classifier_types()
    if kind not in known:
        raise WeightsError(
            f"Expected an image classifier transformers implements "
            f"(AutoModelForImageClassification: {', '.join(sorted(known)[:12])}, ...), got "
            f"model_type {kind!r} in {folder / CONFIG}.")


def check_weights(folder: Path) -> bool:
    """Which weights ``from_pretrained`` may read: True for safetensors; False for a
    ``pytorch_model.bin`` that ``torch.load(weights_only=True)`` reads (tensors only).

    Raises
    ------
    WeightsError
        When there are no weights, or the ``.bin`` holds objects other than tensors.
    """
    if (folder / SAFETENSORS).is_file() or (folder / SAFETENSORS_INDEX).is_file():
        return True
    pickled = sorted(folder.glob("pytorch_model*.bin"))
    if not pickled:
        raise WeightsError(f"Expected {SAFETENSORS} (or {PICKLED}) in {folder}, found "
                           f"neither. Save the model with model.save_pretrained(DIR).")
    import torch

    from pipeline.models.sources.state_dict_file import describe_file

    for file in pickled:
        try:
            torch.load(file, map_location="cpu", weights_only=True)
        except Exception:
            raise WeightsError(
                f"Expected safetensors weights, or a {PICKLED} that holds tensors only, in "
                f"{folder}, but {file.name} could not be read as tensors: "
                f"{describe_file(file)}. Save the model with model.save_pretrained(DIR) "
                "(safetensors is its default).") from None
    return False


# ------------------------------------------------------------------ preprocessing


def processor_preprocessing(folder: Path) -> Preprocessing:
    """The pipeline's :class:`Preprocessing` for the model's ``preprocessor_config.json``
    (ImageNet's when the folder has none).

    ``size = {"shortest_edge": s}``: the short side is resized to ``s / crop_pct`` and ``s``
    px centre-cropped when ``crop_pct`` is set and ``s < 384`` (ConvNeXt's and ResNet's
    processors), else to ``s`` and cropped to ``crop_size`` (or ``s``).
    ``size = {"height": h, "width": w}`` (ViT, DeiT, BEiT, Swin, EfficientNet): the whole
    image squashed to ``h x h`` (``resize_mode = "squash"``, its aspect ratio not kept, as
    the processor does) and cropped to ``crop_size`` when ``do_center_crop``, else to ``h``.

    Raises
    ------
    ConfigError
        For a non-square size.
    """
    path = folder / PROCESSOR
    if not path.is_file():
        return Preprocessing(interpolation="bicubic")
    p = _read_json(path)
    size = p.get("size") or {}
    if isinstance(size, int):
        size = {"shortest_edge": size}
    crop_size = p.get("crop_size") or {}
    if isinstance(crop_size, int):
        crop_size = {"height": crop_size, "width": crop_size}
    mode = "short-side"
    if "shortest_edge" in size:
        edge = int(size["shortest_edge"])
        crop_pct = p.get("crop_pct")
        if crop_pct and edge < 384:
            resize, crop = int(edge / float(crop_pct)), edge
        else:
            resize = edge
            crop = int(crop_size.get("height", edge)) if p.get("do_center_crop") else edge
    else:
        height, width = int(size.get("height", 224)), int(size.get("width", 224))
        if height != width:
            raise ConfigError(f"Expected a square input size in {path}, got {height}x{width}; "
                              "set [dataset] resize and crop yourself.")
        resize, mode = height, "squash"
        crop = int(crop_size.get("height", height)) if p.get("do_center_crop") else height
        if p.get("do_center_crop") and crop_size and int(crop_size.get("width", crop)) != crop:
            raise ConfigError(f"Expected a square crop_size in {path}, got {crop_size}.")
    normalize = p.get("do_normalize", True)
    mean = tuple(float(v) for v in p.get("image_mean", IMAGENET_MEAN)) if normalize \
        else (0.0, 0.0, 0.0)
    std = tuple(float(v) for v in p.get("image_std", IMAGENET_STD)) if normalize \
        else (1.0, 1.0, 1.0)
    if p.get("rescale_offset"):  # EfficientNet's: pixels scaled to [-1, 1], not [0, 1]
        mean = tuple((1 + m) / 2 for m in mean)
        std = tuple(s / 2 for s in std)
    if p.get("include_top") and normalize:  # EfficientNet's: divided by std a second time
        std = tuple(s * s for s in std)
    interpolation = _RESAMPLE.get(int(p.get("resample", 2)), "bicubic")
    return Preprocessing(resize, crop, (mean[0], mean[1], mean[2]), (std[0], std[1], std[2]),
                         interpolation, mode)


# ------------------------------------------------------------------ transformers


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError("Expected transformers for a Hugging Face model, but it is not "
                          f"installed. {_INSTALL}") from None
    # Its loading bars would break the run's own console lines.
    transformers.utils.logging.disable_progress_bar()
    return transformers


@cache
def image_classifier_types() -> frozenset[str]:
    """The ``model_type`` values ``AutoModelForImageClassification`` builds."""
    _transformers()
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    return frozenset(MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES)


@cache
def _wrapper_class() -> type[nn.Module]:
    """The module class that wraps a transformers classifier; made on first use, as it
    subclasses torch's ``nn.Module`` and this module stays importable without torch."""
    from torch import nn

    class HuggingFaceClassifier(nn.Module):
        """``pixel_values`` in, ``logits`` out: ``(N, 3, H, W)`` to ``(N, classes)``, what
        every method and Captum take (a transformers model returns an output object)."""

        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(pixel_values=x).logits

    return HuggingFaceClassifier


register_source(HuggingFaceModels())
