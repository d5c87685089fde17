"""The architectures a run can explain: a registry of model families.

A family turns an ``arch`` name into a network and says what the rest of the pipeline needs
to know about it: its preprocessing (resize, crop, mean, std, interpolation), its published
weights (the file torchvision downloads and the hash in its name), which state-dict entries
are its classifier (so a fine-tuned checkpoint's class count can be read off them), and its
class names.

``torchvision``
    Every classification model of ``torchvision.models`` by name (``resnet18``,
    ``convnext_tiny``, ``vit_b_16``, ...). What is known about them without importing torch
    (preprocessing, weights files, classifier entries) is kept in
    ``resources/torchvision_models.json``, made by ``python -m pipeline.models.architectures`` from
    the
    installed torchvision and checked against it by the tests, so that ``xai status`` and
    config checks stay torch-free.
``timm``
    ``timm:<name>``, when timm is installed (``make setup EXTRAS=timm``): preprocessing from
    timm's ``resolve_data_config``.

An exported program (``weights = "model.pt2"``) carries its own architecture; see
:mod:`pipeline.models.loading`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from pipeline.errors import ConfigError, WeightsError

if TYPE_CHECKING:
    import torch
    from torch import nn

#: The reference architecture, and the default of ``[model] arch``.
DEFAULT_ARCH = "resnet18"
TIMM_PREFIX = "timm:"
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class Preprocessing:
    """How a model wants its images: resize the short side to ``resize`` (with
    ``interpolation``), centre-crop ``crop``, scale to [0, 1], then ``(x - mean) / std``."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @property
    def normalization(self) -> Any:
        """The :class:`pipeline.data.images.Normalization` of ``mean`` and ``std``."""
        from pipeline.data.images import Normalization

        return Normalization(self.mean, self.std)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Preprocessing:
        mean = tuple(float(v) for v in d["mean"])
        std = tuple(float(v) for v in d["std"])
        return cls(int(d["resize"]), int(d["crop"]), (mean[0], mean[1], mean[2]),
                   (std[0], std[1], std[2]), str(d.get("interpolation", "bilinear")))


IMAGENET = Preprocessing()


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


# ------------------------------------------------------------------ the torchvision table


@cache
def _table() -> dict[str, dict[str, Any]]:
    text = resources.files("pipeline.resources").joinpath("torchvision_models.json").read_text()
    return dict(json.loads(text)["models"])


def torchvision_archs() -> tuple[str, ...]:
    """Every classification model of ``torchvision.models``, by name."""
    return tuple(sorted(_table()))


def is_timm(arch: str) -> bool:
    return arch.startswith(TIMM_PREFIX)


def check_arch(arch: str) -> str | None:
    """Why ``arch`` names no architecture (with a did-you-mean), or None. Torch-free for
    torchvision names; ``timm:<name>`` is checked when the model loads."""
    if is_timm(arch):
        return None if arch[len(TIMM_PREFIX):] else "expected timm:<model name>"
    if arch in _table():
        return None
    close = difflib.get_close_matches(arch, torchvision_archs(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (f"expected a torchvision classification model (e.g. resnet18, resnet50, "
            f"convnext_tiny, vit_b_16; all {len(_table())}: "
            f"torchvision.models.list_models(module=torchvision.models)) or timm:<name>, got "
            f"{arch!r}{hint}")


def _entry(arch: str) -> dict[str, Any]:
    problem = check_arch(arch)
    if problem or is_timm(arch):
        raise ConfigError(f"[model] arch: {problem or 'not a torchvision model'}")
    return _table()[arch]


def published_weights(arch: str) -> PublishedWeights:
    """The ImageNet weights torchvision publishes for ``arch`` (its ``DEFAULT``)."""
    entry = _entry(arch)
    return PublishedWeights(arch, entry["weights"], entry["url"])


def default_preprocessing(arch: str) -> Preprocessing:
    """The preprocessing of ``arch``'s published weights (torchvision's ``transforms()``;
    timm's ``resolve_data_config``)."""
    if is_timm(arch):
        return _timm_preprocessing(arch[len(TIMM_PREFIX):])
    return Preprocessing.from_dict(_entry(arch)["preprocessing"])


def classifier_entries(arch: str) -> tuple[str, ...]:
    """The state-dict entries of ``arch``'s classifier: the ones whose shape follows the
    class count (``fc.weight``, ``classifier.1.bias``, ``heads.head.weight``, ...)."""
    if is_timm(arch):
        return _timm_classifier_entries(arch[len(TIMM_PREFIX):])
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


# ------------------------------------------------------------------ class names


@cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names in class-index order (torchvision's categories)."""
    text = resources.files("pipeline.resources").joinpath("torchvision_models.json").read_text()
    names = tuple(json.loads(text)["imagenet_categories"])
    if len(names) != 1000:
        raise WeightsError(f"Expected 1000 ImageNet categories, got {len(names)}.")
    return names


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


def read_classes_file(path: Any) -> tuple[str, ...]:
    """Class names, one a line (blank lines and surrounding spaces ignored)."""
    from pathlib import Path

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise WeightsError(f"Expected a class-names file at {p} (one name a line), but it "
                           f"cannot be read: {exc.strerror}. Fix [model] classes.") from None
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not names:
        raise WeightsError(f"Expected class names in {p}, one a line, got none.")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})[:5]
        raise WeightsError(f"Expected each class once in {p}, got {', '.join(twice)} twice.")
    return names


# ------------------------------------------------------------------ building (torch)


def build(arch: str, num_classes: int | None = None, *, pretrained: Any = None,
          crop: int | None = None) -> nn.Module:
    """The network of ``arch``: random weights, a ``num_classes``-way classifier (default:
    the published one's), or, with ``pretrained`` (a torchvision weights enum), those
    weights (their file must be in torch's hub cache, or it is downloaded). A timm model
    whose input size is fixed (ViT, DeiT) is built for ``crop`` px when that differs."""
    import warnings

    if is_timm(arch):
        timm = _timm()
        kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
        name = arch[len(TIMM_PREFIX):]
        if crop is not None and crop != _timm_preprocessing(name).crop:
            try:
                return timm.create_model(name, pretrained=False, img_size=crop, **kwargs)
            except TypeError:  # a model that takes any size (CNNs) has no img_size
                pass
        return timm.create_model(name, pretrained=False, **kwargs)
    from torchvision.models import get_model

    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if arch in ("googlenet", "inception_v3") and pretrained is None:
        kwargs["init_weights"] = True  # torchvision's default; said, to silence its warning
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*weight initialization.*")
        return get_model(arch, weights=pretrained, **kwargs)


def weights_enum(arch: str) -> Any:
    """torchvision's ``DEFAULT`` weights enum of ``arch``."""
    from torchvision.models import get_model_weights

    return get_model_weights(arch).DEFAULT


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ConfigError("Expected timm for a timm:<name> architecture, but it is not "
                          "installed. Install it with `make setup EXTRAS=timm` (uv sync "
                          "--extra timm).") from None
    return timm


def _timm_model_names() -> list[str]:
    return list(_timm().list_models())


def _timm_check(name: str) -> None:
    names = _timm_model_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join('timm:' + c for c in close)}?" if close else ""
        raise ConfigError(f"[model] arch: expected a timm model name after timm:, got "
                          f"{name!r}{hint}")


@cache
def _timm_preprocessing(name: str) -> Preprocessing:
    timm = _timm()
    _timm_check(name)
    from timm.data import resolve_data_config

    model = timm.create_model(name, pretrained=False)
    cfg = resolve_data_config({}, model=model)
    crop = int(cfg["input_size"][-1])
    resize = round(crop / float(cfg.get("crop_pct", 0.875)))
    interp = str(cfg.get("interpolation", "bicubic"))
    return Preprocessing(resize, crop, tuple(float(v) for v in cfg["mean"]),  # type: ignore[arg-type]
                         tuple(float(v) for v in cfg["std"]),  # type: ignore[arg-type]
                         interp if interp in INTERPOLATIONS else "bicubic")


@cache
def _timm_classifier_entries(name: str) -> tuple[str, ...]:
    timm = _timm()
    _timm_check(name)
    a = timm.create_model(name, pretrained=False, num_classes=1000).state_dict()
    b = timm.create_model(name, pretrained=False, num_classes=7).state_dict()
    return tuple(k for k in a if a[k].shape != b[k].shape)


def num_classes_of(arch: str, state: Mapping[str, torch.Tensor]) -> int | None:
    """The class count of a checkpoint of ``arch``, read off its classifier entries; None
    when it has none of them."""
    keys = [k for k in classifier_entries(arch) if k in state]
    return int(state[keys[0]].shape[0]) if keys else None


# ------------------------------------------------------------------ the table's making


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

    try:
        with torch.device("meta"):
            net = build(arch, num_classes)
    except (NotImplementedError, RuntimeError):  # builders that compute on tensors
        net = build(arch, num_classes)
    return {k: list(v.shape) for k, v in net.state_dict().items()}


# python -m pipeline.models.architectures > pipeline/resources/torchvision_models.json
if __name__ == "__main__":
    print(json.dumps(make_table(), indent=1, sort_keys=True))
