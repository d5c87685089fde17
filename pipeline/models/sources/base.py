"""What a model source is, and the registry of them.

A model source is one way of getting a classifier: a family of architectures by name
(torchvision, timm), or a kind of weights that carries its architecture or fixes it (an
exported program, a state-dict file, the evidence model). Each source module defines a
:class:`ModelSource` and registers it at its bottom with :func:`register_source`;
:mod:`pipeline.models.sources` imports them all and says which source takes an
``(arch, weights)`` pair.

A source answers, without importing torch: whether it takes a pair, the preprocessing of its
weights, the identity a run records for them, and what is wrong with them before loading.
With torch: how to build and load the network, and its class names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.data.class_names import imagenet_classes, resolve_classes
from pipeline.errors import ConfigError, WeightsError
from pipeline.models.preprocessing import IMAGENET, Preprocessing
from pipeline.models.torchvision_table import DEFAULT_ARCH
from pipeline.registry import Registry

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Every model source, by name, in the order their modules register them.
MODEL_SOURCES: Registry[ModelSource] = Registry("model source")


@dataclass(frozen=True)
class LoadRequest:
    """What :func:`pipeline.models.classifier.load_model` was asked for.

    Attributes
    ----------
    arch
        The ``[model] arch`` (``resnet18``, ``timm:deit_tiny_patch16_224``).
    weights
        The ``[model] weights`` as given: a keyword or a path.
    seed
        Seed of random weights.
    crop
        The input size in px: ``(N, 3, crop, crop)`` images.
    evidence
        The evidence model's :class:`~pipeline.data.evidence_dataset.TrainSettings`, or None.
    progress
        ``progress(what, done, total)`` while a model trains.
    classes
        Class names given for a checkpoint, or a file of them.
    dataset_classes
        The dataset's class folders, sorted.
    """

    arch: str
    weights: str
    seed: int = 0
    crop: int = 224
    evidence: Any = None
    progress: Callable[[str, int, int], None] | None = None
    classes: Sequence[str] | str | Path | None = None
    dataset_classes: Sequence[str] | None = None

    @property
    def path(self) -> Path:
        """The weights as a path (``~`` expanded)."""
        return Path(self.weights).expanduser()


@dataclass(frozen=True)
class LoadedNetwork:
    """What a source loaded: ``net`` maps ``(N, 3, crop, crop)`` images to ``(N, classes)``
    logits; ``weights_id`` is the identity the store records; ``note`` says why ``auto``
    fell back to random weights, or which file stands in for the published weights (the run
    prints it); ``report`` says how weights trained here were made."""

    net: nn.Module
    weights_id: str
    is_random: bool
    note: str = ""
    report: dict[str, Any] = field(default_factory=dict)


class WeightsUnavailable(WeightsError):
    """Published weights that are not at hand and could not be fetched; ``reason`` is one
    line for the ``auto`` fallback's notice."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ModelSource:
    """One way of getting a classifier. Subclasses override what applies to them.

    ``catch_all`` marks the source that takes what no other takes (a weights path); every
    other source's :meth:`takes` must be exclusive of the others'.
    """

    #: The registry name.
    name: str = ""
    #: Takes any pair no other source takes.
    catch_all: bool = False
    #: The ``[model] weights`` names this source answers to (``imagenet``), not paths.
    weight_names: tuple[str, ...] = ()
    #: How ``--weights`` help texts name this source's weights ("" when they name none).
    weights_help: str = ""
    #: How ``--arch`` help texts name this source's architectures ("" when it has none).
    arch_help: str = ""
    #: Why ``xai explain`` (single image files, no dataset) cannot use this source, and what
    #: to run instead; empty when it can.
    single_images_refusal: str = ""
    #: The model is trained from the run's dataset settings (the config's training
    #: settings travel with the load request and into the weights identity).
    trained_on_dataset: bool = False
    #: Why the loaded network has no modules for hook methods to hook, as "got ..." (with
    #: ``{weights}``) and what to do instead; empty when it has them.
    modules_refusal: str = ""

    # ------------------------------------------------------------------ torch-free

    def takes(self, arch: str, weights: str) -> bool:
        """Whether this source loads ``weights`` for ``arch``."""
        raise NotImplementedError

    def names_weights(self, weights: str) -> bool:
        """Whether ``weights`` is a name this source answers to (``imagenet``), not a path."""
        return weights in self.weight_names

    def weights_missing(self, weights: str) -> bool:
        """Whether ``weights`` is a path this source reads that is not there."""
        return False

    def arch_form(self) -> str:
        """How ``[model] arch`` names this source's architectures, for "expected ..."
        messages; empty when the source names none."""
        return ""

    def names_arch(self, arch: str) -> bool:
        """Whether ``arch`` is spelled as one of this source's architectures."""
        return False

    def arch_problem(self, arch: str) -> str | None:
        """What is wrong with ``arch``, one of this source's spellings; None when nothing
        can be said before loading."""
        return None

    def arch_suggestions(self, arch: str) -> list[str]:
        """Names of this source close to a misspelt ``arch``, known without loading."""
        return []

    def preprocessing(self, arch: str, weights: str) -> Preprocessing:
        """The preprocessing the weights were trained with."""
        return IMAGENET

    def arch_preprocessing(self, arch: str) -> Preprocessing:
        """The preprocessing of ``arch``, one of this source's architectures, as its
        published weights were trained (a checkpoint of it is assumed to share it)."""
        return IMAGENET

    def weights_id(self, arch: str, weights: str, seed: int, evidence_key: str = "") -> str:
        """The identity a run records for ``weights`` of ``arch``, without loading them."""
        raise NotImplementedError

    def recorded_arch(self, arch: str) -> str:
        """The architecture the store records (``exported`` for an exported program)."""
        return arch

    def recorded_arch_of(self, arch: str, weights: str) -> str:
        """The architecture the store records for ``weights`` of ``arch``: by default
        :meth:`recorded_arch`; a source whose weights carry their architecture (a Hugging
        Face model's ``config.json``) reads it from them."""
        return self.recorded_arch(arch)

    def known_classes(self, weights: str) -> tuple[str, ...] | None:
        """The class names the weights carry, read without loading them (a Hugging Face
        config's ``id2label``); None when only the loaded model tells."""
        return None

    def weights_problem(self, arch: str, weights: str) -> str | None:
        """Why the weights cannot be had now, known without trying (a download that failed
        recently); None when there is no such reason."""
        return None

    def hashed_class_count(self) -> int:
        """The class count the ingest stage's hash includes for this source's models (the
        width the store's ``logits`` were first made with)."""
        return 1000

    def fallback_hint(self, arch: str, weights: str) -> str:
        """One line: how to put published weights in place when ``auto`` fell back to random
        weights; empty when there is nothing to put in place."""
        return ""

    # ------------------------------------------------------------------ architectures (torch)

    def build(self, arch: str, num_classes: int | None = None, crop: int | None = None, *,
              initialise: bool = True) -> nn.Module:
        """The network of ``arch``, random: a ``num_classes``-way classifier (default: the
        published weights' count), sized for ``crop`` px where the architecture fixes its
        input size; ``initialise=False`` when weights are loaded into it next."""
        raise WeightsError(f"Expected an architecture to build, got {arch!r}, which the "
                           f"{self.name} source does not build.")

    def classifier_entries(self, arch: str) -> tuple[str, ...]:
        """The state-dict entries of ``arch``'s classifier: the ones whose shape follows the
        class count (``fc.weight``, ``classifier.1.bias``, ``heads.head.weight``, ...)."""
        return ()

    def after_load(self, arch: str, net: nn.Module) -> nn.Module:
        """``net`` once loaded weights are in it (parts only training uses dropped)."""
        return net

    def fitting_archs(self, shapes: Mapping[str, Sequence[int]]) -> list[str]:
        """This source's architectures a state dict (entry name -> shape) fits."""
        return []

    # ------------------------------------------------------------------ loading (torch)

    def load(self, request: LoadRequest) -> LoadedNetwork:
        """The network with the requested weights, not yet frozen.

        Raises
        ------
        WeightsError
            When the weights cannot be obtained or do not fit, with what to do instead.
        """
        raise NotImplementedError

    def class_names(self, net: nn.Module, request: LoadRequest
                    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The names of ``net``'s outputs in order, and warnings for the user: by default
        those given, else the dataset's, else ``class_0 ...``
        (:func:`~pipeline.data.class_names.resolve_classes`)."""
        return self.names_of_outputs(output_width(net, request.crop), request)

    def names_of_outputs(self, count: int, request: LoadRequest
                         ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The names of ``count`` outputs, and warnings (see :meth:`class_names`)."""
        return resolve_classes(count, request.classes, request.dataset_classes,
                               f"the model in {Path(request.weights).name}")


def output_width(net: nn.Module, crop: int) -> int:
    """The number of classes ``net`` scores: its output width on a ``(2, 3, crop, crop)``
    batch of zeros."""
    import torch

    with torch.no_grad():
        return int(net(torch.zeros(2, 3, crop, crop)).shape[1])


#: ``[model] weights`` keywords of an architecture family.
FAMILY_KEYWORDS: tuple[str, ...] = ("imagenet", "auto", "random")


class ArchitectureFamily(ModelSource):
    """A source of architectures by name, each with published weights (``imagenet``), seeded
    random weights (``random``), or the published ones when they can be had, else random
    (``auto``). Subclasses say which names are theirs, build them, and load the published
    weights."""

    weight_names = FAMILY_KEYWORDS
    weights_help = " | ".join(FAMILY_KEYWORDS)

    def takes(self, arch: str, weights: str) -> bool:
        return weights in FAMILY_KEYWORDS and self.names_arch(arch)

    def preprocessing(self, arch: str, weights: str) -> Preprocessing:
        return self.arch_preprocessing(arch)

    def has_published(self, arch: str) -> bool:
        """Whether ``arch``'s published weights are at hand (``auto`` then means them)."""
        return False

    def published_id(self, arch: str) -> str:
        """The identity of ``arch``'s published weights."""
        raise NotImplementedError

    def published_note(self, arch: str, weights: str) -> str:
        """One line for the console when ``weights`` (``imagenet``, ``auto``) of ``arch`` load
        another file than the published one (an imported copy); empty when they do not."""
        return ""

    def load_published(self, arch: str, crop: int, remember: bool = False) -> nn.Module:
        """``arch`` with its published weights; ``remember``: note a failed download, so that
        ``auto`` does not wait on the network again soon.

        Raises
        ------
        WeightsUnavailable
            When they are not at hand and could not be fetched.
        """
        raise NotImplementedError

    def weights_id(self, arch: str, weights: str, seed: int, evidence_key: str = "") -> str:
        if weights == "imagenet" or (weights == "auto" and self.has_published(arch)):
            return self.published_id(arch)
        named = arch if arch != DEFAULT_ARCH else ""
        return f"random:{named + ':' if named else ''}seed={seed}"

    def load(self, request: LoadRequest) -> LoadedNetwork:
        arch, crop, seed = request.arch, request.crop, request.seed
        # The identity and the note are asked for after loading: they name what was loaded.
        if request.weights == "imagenet":
            return LoadedNetwork(self.load_published(arch, crop), self.published_id(arch),
                                 False, self.published_note(arch, "imagenet"))
        if request.weights == "auto":
            try:
                return LoadedNetwork(self.load_published(arch, crop, remember=True),
                                     self.published_id(arch), False,
                                     self.published_note(arch, "auto"))
            except WeightsUnavailable as exc:
                note = (f"ImageNet weights unavailable ({exc.reason}). "
                        f"{self.fallback_hint(arch, 'auto')}")
            except WeightsError as exc:
                note = str(exc)
        else:
            note = ""
        return LoadedNetwork(random_network(seed, arch, crop),
                             self.weights_id(arch, "random", seed), True, note)

    def names_of_outputs(self, count: int, request: LoadRequest
                         ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """ImageNet's names for a 1000-way classifier (ImageNet-1k heads share its order),
        else :meth:`ModelSource.names_of_outputs`."""
        if count == len(imagenet_classes()):
            return imagenet_classes(), ()
        return super().names_of_outputs(count, request)


def register_source(source: ModelSource) -> ModelSource:
    """Add ``source`` to :data:`MODEL_SOURCES` under its name; the last line of its module."""
    return MODEL_SOURCES.add(source.name, source)


# ------------------------------------------------------------------ lookups


def check_arch(arch: str) -> str | None:
    """Why ``arch`` names no architecture (with a did-you-mean), or None. Torch-free for
    the names a source knows without loading (torchvision's); the others are checked when
    the model loads."""
    naming = [s for s in MODEL_SOURCES.values() if s.arch_form()]
    for source in naming:
        if source.names_arch(arch):
            return source.arch_problem(arch)
    close = [name for source in naming for name in source.arch_suggestions(arch)]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    forms = " or ".join(source.arch_form() for source in naming)
    return f"expected {forms}, got {arch!r}{hint}"


def family_of(arch: str) -> ModelSource:
    """The source whose architectures ``arch`` names: the one that builds it.

    Raises
    ------
    ConfigError
        When no source names ``arch`` (the message says what would).
    """
    for source in MODEL_SOURCES.values():
        if source.names_arch(arch):
            return source
    raise ConfigError(f"[model] arch: {check_arch(arch)}")


def is_weights_path(weights: str) -> bool:
    """Whether ``weights`` names a file or folder (made absolute against the config's folder)
    rather than weights a source answers to by name (``imagenet``, ``evidence``)."""
    return not any(source.names_weights(weights) for source in MODEL_SOURCES.values())


def source_for(arch: str, weights: str) -> ModelSource:
    """The source that loads ``weights`` for ``arch``: the one that takes them, else the one
    that takes whatever no other does.

    Raises
    ------
    ConfigError
        When ``arch`` names no architecture and no source takes the pair.
    WeightsError
        When no source takes ``weights`` for ``arch``.
    """
    weights = str(weights)
    ordered = sorted(MODEL_SOURCES.values(), key=lambda source: source.catch_all)
    for source in ordered:
        if source.takes(arch, weights):
            return source
    if problem := check_arch(arch):
        raise ConfigError(f"[model] arch: {problem}")
    raise WeightsError(f"Expected [model] weights that one of the model sources "
                       f"({', '.join(MODEL_SOURCES)}) loads for {arch}, got {weights!r}.")


# ------------------------------------------------------------------ seeded random weights


def random_network(seed: int, arch: str = DEFAULT_ARCH, crop: int = 224) -> nn.Module:
    """A fresh ``arch`` (built by its source) with the seeded random weights (a copy:
    callers own it)."""
    import torch

    family = family_of(arch)
    state = _random_state(seed, arch, crop)
    with torch.device("meta"):
        try:
            net = family.build(arch, None, crop)
        except (NotImplementedError, RuntimeError):  # builders that compute on tensors
            net = None
    net = family.build(arch, None, crop) if net is None else net.to_empty(device="cpu")
    net.load_state_dict(state)
    return net


@cache
def _random_state(seed: int, arch: str, crop: int) -> dict[str, torch.Tensor]:
    """The seeded random weights, drawn once per (seed, architecture, crop): drawing
    ResNet18's 11 M weights takes 0.15 s, and every run, worker and test makes the model."""
    import torch

    family = family_of(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = family.build(arch, None, crop).state_dict()
        # A head initialised to zeros (torchvision's ViT) gives every class the same output
        # and every map zero: random weights would test nothing. Such a head gets small
        # seeded normal weights instead.
        for key in family.classifier_entries(arch):
            if key.endswith("weight") and key in state and not state[key].any():
                state[key] = torch.randn_like(state[key]) * 0.02
        return state
