"""A state-dict file (``torch.save(model.state_dict(), path)``, or a ``.safetensors`` file):
the weights of a checkpoint of ``[model] arch``, with the class count its classifier has.
Weight files are data: they load with ``torch.load(weights_only=True)`` (safetensors holds
tensors only), and a file that holds more than tensors is refused with what it holds, in
words."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.errors import WeightsError
from pipeline.models.checkpoints import file_identity
from pipeline.models.preprocessing import Preprocessing
from pipeline.models.safetensors_file import is_safetensors, read_safetensors
from pipeline.models.sources.base import (
    MODEL_SOURCES,
    LoadedNetwork,
    LoadRequest,
    ModelSource,
    family_of,
    is_weights_path,
    register_source,
)
from pipeline.models.torchvision_table import DEFAULT_ARCH

if TYPE_CHECKING:
    import torch


class StateDictFile(ModelSource):
    """Any weights path no other source takes, loaded into ``[model] arch``."""

    name = "state-dict"
    catch_all = True
    weights_help = "a state-dict file"

    def weights_missing(self, weights: str) -> bool:
        return not Path(weights).expanduser().is_file()

    def takes(self, arch: str, weights: str) -> bool:
        return is_weights_path(weights)

    def preprocessing(self, arch: str, weights: str) -> Preprocessing:
        return family_of(arch).arch_preprocessing(arch)

    def weights_id(self, arch: str, weights: str, seed: int, evidence_key: str = "") -> str:
        """``file:<name>:sha256=<hex>``, the architecture named after ``file:`` when it is
        not the reference one."""
        return file_identity(weights, arch if arch != DEFAULT_ARCH else "")

    def load(self, request: LoadRequest) -> LoadedNetwork:
        """A state dict loaded into ``arch``, with the class count its classifier has."""
        path, arch = request.path, request.arch
        family = family_of(arch)
        state = read_state_dict(path, arch)
        entries = family.classifier_entries(arch)
        keys = [k for k in entries if k in state]
        if not keys:
            raise WeightsError(_misfit(path, arch, state, "it has no classifier entries "
                                       f"({', '.join(entries)})"))
        net = family.build(arch, int(state[keys[0]].shape[0]), request.crop, initialise=False)
        expected = net.state_dict()
        if differences := state_differences(expected, state, arch):
            raise WeightsError(_misfit(path, arch, state, differences,
                                       state_differences(expected, state, arch, shown=0)))
        net.load_state_dict(state, strict=True)
        return LoadedNetwork(family.after_load(arch, net),
                             self.weights_id(arch, request.weights, request.seed), False)


#: How many entry names a mismatch message quotes of each kind; the counts say the rest.
_SHOWN_KEYS = 2


def state_differences(expected: Mapping[str, torch.Tensor],
                      found: Mapping[str, torch.Tensor], arch: str,
                      shown: int = _SHOWN_KEYS) -> str:
    """How a state dict differs from the one a network expects, in words: the entries it
    lacks, the ones it has in excess and the ones of another shape, a few names of each
    (empty when it fits).

    Parameters
    ----------
    expected
        The network's own ``state_dict()``.
    found
        The state dict read from the file.
    arch
        The network's architecture, to name it.
    shown
        How many entry names to quote of each kind (0: counts only).
    """
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    reshaped = [k for k in expected if k in found
                and tuple(expected[k].shape) != tuple(found[k].shape)]

    def some(keys: list[str]) -> str:
        if not shown:
            return ""
        more = len(keys) - shown
        return f" ({', '.join(keys[:shown])}{f' and {more} more' if more > 0 else ''})"

    parts = []
    if missing:
        parts.append(f"{_entries(len(missing))} of the {len(expected)} {arch} needs "
                     f"{'is' if len(missing) == 1 else 'are'} missing{some(missing)}")
    if extra:
        parts.append(f"{_entries(len(extra))} {'is' if len(extra) == 1 else 'are'} not "
                     f"{arch}'s{some(extra)}")
    if reshaped:
        quoted = "; ".join(f"{k} is {list(found[k].shape)}, expected "
                           f"{list(expected[k].shape)}" for k in reshaped[:shown])
        more = len(reshaped) - shown
        detail = f" ({quoted}{f'; and {more} more' if more > 0 else ''})" if shown else ""
        parts.append(f"{_entries(len(reshaped))} {'has' if len(reshaped) == 1 else 'have'} "
                     f"another shape{detail}")
    return ", and ".join(parts) if len(parts) < 3 else f"{', '.join(parts[:-1])}, and {parts[-1]}"


def _entries(count: int) -> str:
    return f"{count} {'entry' if count == 1 else 'entries'}"


def _misfit(path: Path, arch: str, state: dict[str, torch.Tensor], why: str,
            counts: str = "") -> str:
    """The mismatch message: ``why`` quotes entry names; ``counts``, when given, replaces it
    where the file fits another architecture, which then says enough."""
    shapes = {k: list(v.shape) for k, v in state.items()}
    hint = (" Save the model you mean with torch.save(model.state_dict(), path), and set "
            "[model] arch to its architecture.")
    for source in MODEL_SOURCES.values():
        fits = [a for a in source.fitting_archs(shapes) if a != arch]
        if fits:
            hint = (f" It fits {source.name}'s {' and '.join(fits[:3])}: set [model] arch = "
                    f"\"{fits[0]}\" (or --arch {fits[0]}).")
            why = counts or why
            break
    return f"Expected {arch} weights in {path}, but the state dict does not fit: {why}.{hint}"


def read_state_dict(path: Path, arch: str = DEFAULT_ARCH) -> dict[str, torch.Tensor]:
    """The state dict in a ``torch.save()`` or safetensors file (``module.`` prefixes dropped;
    a dict that wraps it under ``state_dict``, ``model`` or ``model_state_dict``
    unwrapped).

    Raises
    ------
    WeightsError
        When there is no such file, it is no tensor-only ``torch.save()`` file, or it holds
        something other than a state dict.
    """
    import torch

    if not path.is_file():
        raise WeightsError(
            f"Expected a weights file at {path}, but there is none. Pass an existing state-dict "
            "file, 'imagenet' or 'random' as the weights."
        )
    if is_safetensors(path):
        obj: object = read_safetensors(path)
    else:
        obj = _torch_load(path, arch)
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


def _torch_load(path: Path, arch: str) -> object:
    """What a ``torch.save()`` file holds, read as tensors only."""
    import torch

    try:
        # weights_only: a checkpoint is data; never let it run code.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise WeightsError(
            f"Expected a torch.save() file of a {arch} state dict at {path}, but it could "
            f"not be loaded: {describe_file(path)}. Save weights with "
            "torch.save(model.state_dict(), path) (or safetensors.torch.save_file), or pass "
            "'imagenet' or 'random'."
        ) from None


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
                    "(README, Your own model) and pass the .pt2")
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


register_source(StateDictFile())
