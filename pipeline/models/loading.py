"""Classifier loading: any architecture of :mod:`pipeline.models.architectures`, with ImageNet
weights, a
local state dict (a fine-tuned checkpoint with its own classes), an exported program, or
seeded random weights.

The returned model is in eval mode with frozen parameters, so gradients are only ever taken
with respect to the input. Weight files are data: state dicts load with
``torch.load(weights_only=True)``, and an exported program is opened only after every
pickled part of it has been checked the same way.
"""

from __future__ import annotations

import io
import socket
import time
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pipeline.errors import WeightsError
from pipeline.models.architectures import (
    DEFAULT_ARCH,
    IMAGENET,
    Preprocessing,
    build,
    classifier_entries,
    default_preprocessing,
    fitting_archs,
    imagenet_classes,
    imagenet_synsets,
    is_timm,
    num_classes_of,
    read_classes_file,
    synset_to_index,
)
from pipeline.models.checkpoints import (
    EXPORTED,
    HEADS,
    cache_path,
    forget_failure,
    hash_prefix,
    offline_hint,
    published,
    recent_failure,
    remember_failure,
    weights_identity,
    weights_url,
)

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
        The class names, in output order.
    report
        How the weights were made, when this project trained them (``evidence``: held-out
        accuracy, seconds, settings); empty otherwise.
    arch
        The architecture (``resnet18``, ``timm:deit_tiny_patch16_224``; ``exported`` for a
        ``.pt2``).
    preprocessing
        What the images go through before the model
        (:class:`pipeline.models.architectures.Preprocessing`).
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


# ------------------------------------------------------------------ ImageNet weights


def _offline_message(reason: str, arch: str) -> str:
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
        f"{', arch=' + repr(arch) if where else ''}) (checks it and copies it to {path})\n"
        f"  2. point to a local state-dict file: --weights /path/to/{arch}.pth, or "
        f"load_model(weights='/path/to/{arch}.pth')\n"
        "  3. run with seeded random weights (results are meaningless): --weights random, or "
        "load_model(weights='random')"
    )


class _Unavailable(WeightsError):
    """The checkpoint is not in the cache and was not downloaded; ``reason`` is one line for
    the ``auto`` fallback's notice."""

    def __init__(self, reason: str, arch: str) -> None:
        super().__init__(_offline_message(reason, arch))
        self.reason = reason


def _download(arch: str, path: Path, remember: bool, timeout_s: float) -> None:
    """Fetch the checkpoint into the cache, checked against torchvision's hash prefix.

    With ``remember`` (the ``auto`` weights), a failure is noted in the cache folder and the
    network is not tried again until it is :data:`~pipeline.models.checkpoints.RETRY_AFTER_S` old,
    so
    offline runs do not wait on it every time.
    """
    failed = recent_failure(arch=arch) if remember else None
    if failed is not None:
        retry = time.strftime("%H:%M", time.localtime(failed["retry_at"]))
        raise _Unavailable(f"{failed['reason']}; not retried until {retry}", arch)
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
        raise _Unavailable(reason, arch) from exc
    finally:
        socket.setdefaulttimeout(old_timeout)
    forget_failure(arch)


def _load_imagenet(arch: str, crop: int, remember: bool = False, timeout_s: float = 20.0
                   ) -> nn.Module:
    if is_timm(arch):
        raise WeightsError(
            f"Expected a state-dict file for {arch}: timm's pretrained weights download from "
            "the Hugging Face hub on first use, which this pipeline does not do. Save "
            "timm.create_model(name, pretrained=True).state_dict() on a machine with network "
            "and pass it with --weights FILE (load_model(weights=FILE) in Python).")
    path = cache_path(arch)
    if not path.exists():
        _download(arch, path, remember, timeout_s)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = _network(arch, None, crop, pretrained=True)
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
    return _after_pretrained(arch, net)


def _network(arch: str, num_classes: int | None, crop: int, pretrained: bool = False
             ) -> nn.Module:
    """``arch`` built as torchvision builds it for its published weights (the same extra
    parameters), random, for ``num_classes`` classes, sized for ``crop`` px where the
    architecture fixes its input size (ViT, MaxViT)."""
    from torchvision.models import get_model

    if is_timm(arch):
        return build(arch, num_classes, crop=crop)
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    if arch in ("googlenet", "inception_v3"):
        # Their published weights hold the auxiliary heads and expect transform_input.
        kwargs.update(transform_input=True, aux_logits=True, init_weights=not pretrained)
    elif arch.startswith("vit_"):
        kwargs["image_size"] = crop
    elif arch.startswith("maxvit"):
        kwargs["input_size"] = (crop, crop)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*weight initialization.*")
        return get_model(arch, weights=None, **kwargs)


def _after_pretrained(arch: str, net: nn.Module) -> nn.Module:
    """Drop the auxiliary heads (training only) once their weights are loaded."""
    if arch == "googlenet":
        net.aux_logits = False  # type: ignore[assignment]
        net.aux1 = net.aux2 = None  # type: ignore[assignment]
    elif arch == "inception_v3":
        net.aux_logits = False  # type: ignore[assignment]
        net.AuxLogits = None  # type: ignore[assignment]
    return net


# ------------------------------------------------------------------ weight files


def describe_file(path: Path) -> str:
    """What a file that ``torch.load`` refused looks like, in words (from its first bytes)."""
    with path.open("rb") as fh:
        head = fh.read(64)
    if not head:
        return "it is empty"
    if head.startswith(b"PK\x03\x04"):
        objects = pickled_objects(path)
        if any(".modules." in name for name in objects):
            # The model's own classes first (ResNet before torch.nn's Conv2d).
            shown = ", ".join(sorted(objects, key=lambda n: (n.startswith("torch."), n))[:3])
            return ("it holds a whole pickled model (torch.save(model): it names the classes "
                    f"{shown}), which is refused because loading it would run their code. "
                    "Save model.state_dict() instead (torch.save(model.state_dict(), path)) "
                    "and set the architecture, or export the model with torch.export "
                    "(README, Explaining your own model) and pass the .pt2")
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


#: What a tensor-only ``torch.save()`` pickle names; anything else is an object of code.
_TENSOR_GLOBALS = ("torch._utils.", "torch.", "collections.OrderedDict", "builtins.",
                   "__builtin__.")


def pickled_objects(path: Path) -> set[str]:
    """The classes a ``torch.save()`` zip's pickle would import (other than tensors'), read
    from its opcodes without running them (empty when it cannot be read)."""
    import pickletools
    import zipfile

    names: set[str] = set()
    try:
        with zipfile.ZipFile(path) as archive:
            member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            if member is None:
                return names
            data = archive.read(member)
        strings: list[str] = []
        for op, arg, _pos in pickletools.genops(data):
            if op.name == "GLOBAL" and isinstance(arg, str):
                names.add(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.add(f"{strings[-2]}.{strings[-1]}")
            elif isinstance(arg, str):
                strings.append(arg)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return names
    return {n for n in names if not n.startswith(_TENSOR_GLOBALS) or ".modules." in n
            or n.startswith("torch.nn.")}


def read_state_dict(path: Path, arch: str = DEFAULT_ARCH) -> dict[str, torch.Tensor]:
    """The state dict in a ``torch.save()`` file (``module.`` prefixes dropped; a dict that
    wraps it under ``state_dict``, ``model`` or ``model_state_dict`` unwrapped)."""
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
            f"Expected a torch.save() file of a {arch} state dict at {path}, but it could "
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
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_file(path: Path, arch: str, crop: int) -> nn.Module:
    """A state dict loaded into ``arch``, with the class count its classifier has."""
    state = read_state_dict(path, arch)
    n = num_classes_of(arch, state)
    if n is None:
        raise WeightsError(_misfit(path, arch, state, "it has no classifier entries "
                                   f"({', '.join(classifier_entries(arch))})"))
    net = _network(arch, n, crop, pretrained=True)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = " ".join(line.strip() for line in str(exc).splitlines()[:3])[:300]
        raise WeightsError(_misfit(path, arch, state, first)) from exc
    return _after_pretrained(arch, net)


def _misfit(path: Path, arch: str, state: dict[str, torch.Tensor], why: str) -> str:
    fits = [a for a in fitting_archs({k: list(v.shape) for k, v in state.items()})
            if a != arch]
    hint = (f" It fits torchvision's {' and '.join(fits[:3])}: set [model] arch = "
            f"\"{fits[0]}\" (or --arch {fits[0]})." if fits else
            " Save the model you mean with torch.save(model.state_dict(), path), and set "
            "[model] arch to its architecture.")
    return f"Expected {arch} weights in {path}, but the state dict does not fit: {why}.{hint}"


# ------------------------------------------------------------------ exported programs


#: Parts of a ``.pt2`` archive that are loaded with pickle (``torch.export.load`` falls back
#: to ``weights_only=False`` on them): each must load with ``weights_only=True`` first.
_PICKLED = (".pt", ".pkl", ".pickle")


def check_exported(path: Path) -> None:
    """Refuse a ``.pt2`` that ``torch.export.load`` would unpickle code from.

    ``torch.export.load`` reads the graph from JSON and the weights as raw tensors, but it
    unpickles three kinds of parts without ``weights_only``: weights or constants saved with
    ``use_pickle``, custom and opaque objects among the constants, and any ``.pt`` part
    (sample inputs, legacy weights) that fails to load with ``weights_only=True`` (it then
    retries without). This opens the archive first and refuses each of those.
    """
    import json

    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile):
        raise WeightsError(f"Expected a torch.export.save() archive at {path}, but it is not "
                           f"one: {describe_file(path)}.") from None
    with archive:
        for name in archive.namelist():
            data = archive.read(name)
            if name.endswith("_config.json") and "/data/" in name:
                config = json.loads(data).get("config", {})
                for entry, meta in config.items():
                    kind = str(meta.get("path_name", ""))
                    if meta.get("use_pickle") or kind.startswith(("custom_obj", "opaque")):
                        raise WeightsError(
                            f"Expected {path} to hold tensors only, but its entry {entry!r} "
                            "would be unpickled, and unpickling can run code; it is refused. "
                            "Export a model whose weights and constants are plain tensors.")
            elif name.endswith(_PICKLED):
                try:
                    torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
                except Exception:
                    raise WeightsError(
                        f"Expected {path} to hold tensors only, but its part {name} holds "
                        "other objects, and unpickling them can run code; it is refused. "
                        "Export the model again with torch.export.save().") from None


def _load_exported(path: Path, crop: int) -> nn.Module:
    if not path.is_file():
        raise WeightsError(f"Expected an exported program at {path}, but there is none.")
    check_exported(path)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise WeightsError(f"Expected a torch.export.save() program at {path}, but it could "
                           f"not be loaded ({type(exc).__name__}: {str(exc)[:200]}).") from None
    _check_program_input(program, path, crop)
    return _ExportedModule(program.module())


_HOW_TO_EXPORT = (
    "Export with a dynamic batch dimension: batch = torch.export.Dim('batch', min=1); "
    "program = torch.export.export(model.eval(), (torch.randn(2, 3, {crop}, {crop}),), "
    "dynamic_shapes=({{0: batch}},)); torch.export.save(program, 'model.pt2')")


def _check_program_input(program: Any, path: Path, crop: int) -> None:
    """One image input ``(batch, 3, crop, crop)`` whose batch size is free."""
    inputs = [n for n in program.graph.nodes if n.op == "placeholder"
              and n.name in set(program.graph_signature.user_inputs)]
    how = _HOW_TO_EXPORT.format(crop=crop)
    if len(inputs) != 1:
        raise WeightsError(f"Expected {path} to take one image batch, got {len(inputs)} "
                           f"inputs. {how}")
    shape = tuple(inputs[0].meta["val"].shape)
    if len(shape) != 4:
        raise WeightsError(f"Expected {path} to take (batch, 3, H, W) images, got shape "
                           f"{shape}. {how}")
    if isinstance(shape[0], int):
        raise WeightsError(f"Expected {path} to take any batch size, but it was exported for "
                           f"batches of {shape[0]} only. {how}")
    h, w = shape[2], shape[3]
    if isinstance(h, int) and isinstance(w, int) and (h, w) != (crop, crop):
        raise WeightsError(f"Expected {path} to take {crop}x{crop} images (the crop), but it "
                           f"was exported for {h}x{w}: set [dataset] crop = {h} (and resize "
                           "to match), or export it for the crop.")


class _ExportedModule(nn.Module):
    """An exported program as a module: eval mode is baked into it (``.eval()`` and
    ``.train()`` are refused by the program, so they are no-ops here)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)

    def train(self, mode: bool = True) -> _ExportedModule:
        return self


# ------------------------------------------------------------------ the rest


def _random(seed: int, arch: str = DEFAULT_ARCH, crop: int = 224) -> nn.Module:
    """A fresh network with the seeded random weights (a copy: callers own it)."""
    state = _random_state(seed, arch, crop)
    with torch.device("meta"):
        try:
            net = _network(arch, None, crop)
        except (NotImplementedError, RuntimeError):  # builders that compute on tensors
            net = None
    net = _network(arch, None, crop) if net is None else net.to_empty(device="cpu")
    net.load_state_dict(state)
    return net


@cache
def _random_state(seed: int, arch: str, crop: int) -> dict[str, torch.Tensor]:
    """The seeded random weights, drawn once per (seed, architecture): drawing ResNet18's
    11 M weights took 0.15 s, and every run, worker and test made the model again."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = _network(arch, None, crop).state_dict()
        # A head initialised to zeros (torchvision's ViT) gives every class the same output
        # and every map zero: random weights would test nothing. Such a head gets small
        # seeded normal weights instead.
        for key in classifier_entries(arch):
            if key.endswith("weight") and key in state and not state[key].any():
                state[key] = torch.randn_like(state[key]) * 0.02
        return state


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


def _output_width(net: nn.Module, crop: int) -> int:
    with torch.no_grad():
        return int(net(torch.zeros(2, 3, crop, crop)).shape[1])


def resolve_classes(count: int, classes: Sequence[str] | str | Path | None,
                    dataset_classes: Sequence[str] | None, where: str
                    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A checkpoint's class names, and the warnings to show.

    ``classes`` (names, or a ``classes.txt`` file, one a line) wins; else the dataset's
    class folders (sorted, as torchvision's ``ImageFolder`` numbers them) when there are
    ``count`` of them; else ``class_0...``, with a warning.
    """
    if classes is not None and not isinstance(classes, Sequence | str | Path):
        classes = None
    if isinstance(classes, str | Path):
        names = read_classes_file(classes)
        source = str(classes)
    elif classes:
        names, source = tuple(classes), "[model] classes"
    else:
        names, source = (), ""
    if names:
        if len(names) != count:
            raise WeightsError(
                f"Expected {count} class names for {where} (its classifier has {count} "
                f"outputs), got {len(names)} in {source}. Fix [model] classes, one name a "
                "line in output order.")
        return names, ()
    if dataset_classes and len(dataset_classes) == count:
        return tuple(dataset_classes), ()
    made = tuple(f"class_{i}" for i in range(count))
    return made, (f"{where}: no class names given ([model] classes = \"classes.txt\", one a "
                  f"line), so its {count} outputs are called class_0 ... class_{count - 1}.",)


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
        first use and cached, see :mod:`pipeline.models.evidence_model`); default
        ``TrainSettings(seed=seed)``.
    progress
        ``progress(what, done, total)`` while the evidence model trains.
    arch
        The architecture (:mod:`pipeline.models.architectures`): a torchvision name or
        ``timm:<name>``.
    classes
        A checkpoint's class names, or a file of them (see :func:`resolve_classes`).
    dataset_classes
        The dataset's class folders, sorted: a checkpoint's names when none are given.
    preprocessing
        Overrides of the architecture's own preprocessing (the config's).

    Raises
    ------
    WeightsError
        When the weights cannot be obtained or do not fit, with what to do instead.
    """
    key, note = str(weights), ""
    report: dict[str, Any] = {}
    names: tuple[str, ...] | None = None
    notes: tuple[str, ...] = ()
    evidence_key = ""
    prep = preprocessing or (IMAGENET if key == "evidence" or key.endswith(EXPORTED)
                             else default_preprocessing(arch))
    if key == "evidence":
        if arch != DEFAULT_ARCH:
            raise WeightsError(f"Expected arch = resnet18 for the evidence model (a ResNet18 "
                               f"trained here), got {arch!r}.")
        from pipeline.data.evidence_dataset import SHAPES, TrainSettings
        from pipeline.models.evidence_model import load_evidence_model

        settings = evidence or TrainSettings(seed=seed)
        net, report = load_evidence_model(settings, progress)
        evidence_key, is_random, names = settings.key(), False, SHAPES
    elif key == "imagenet":
        net, is_random = _load_imagenet(arch, prep.crop), False
    elif key == "auto":
        try:
            net, is_random = _load_imagenet(arch, prep.crop, remember=True), False
            key = "imagenet"
        except _Unavailable as exc:
            net, is_random, key = _random(seed, arch, prep.crop), True, "random"
            note = f"ImageNet weights unavailable ({exc.reason}). {offline_hint(arch)}"
        except WeightsError as exc:
            net, is_random, key = _random(seed, arch, prep.crop), True, "random"
            note = str(exc)
    elif key == "random":
        net, is_random = _random(seed, arch, prep.crop), True
    elif key.endswith(EXPORTED):
        net, is_random, arch = _load_exported(Path(weights).expanduser(), prep.crop), False, \
            "exported"
    else:
        net, is_random = _load_file(Path(weights).expanduser(), arch, prep.crop), False
    net = freeze(net)
    if names is None:
        if key in ("imagenet", "random") and not is_timm(arch):
            names = class_names()  # torchvision's ImageNet models: its 1000 categories
        else:
            count = _output_width(net, prep.crop)
            if key in ("imagenet", "random") and count == len(class_names()):
                names = class_names()  # timm's ImageNet-1k heads use the same order
            else:
                names, notes = resolve_classes(count, classes, dataset_classes,
                                               f"the model in {Path(str(weights)).name}")
    wid = weights_identity(key if arch != "exported" else str(weights), seed, evidence_key,
                           arch if arch != "exported" else DEFAULT_ARCH)
    backbone = net.to(device)
    model = freeze(with_head(backbone, head)).to(device)
    return LoadedModel(model=model, backbone=backbone, head=head, weights_id=wid,
                       is_random=is_random, note=note, classes=names, report=report,
                       arch=arch, preprocessing=prep, warnings=notes)
