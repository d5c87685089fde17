"""Weights without loading torch: each torchvision architecture's published checkpoint (its
name, file, cache path and the hash in its name), a weights file's identity by SHA-256, the
remembered failed download, ``xai weights import`` and the safetensors checkpoints it imports
(checked against the full SHA-256 their publisher lists). ``xai status`` uses these, through
the model sources' weights identity, to tell whether a store is current without importing
torch; the sources use the same definitions when they load weights."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.data.class_names import imagenet_classes
from pipeline.errors import WeightsError
from pipeline.file_io import copy_atomic, file_sha256, write_atomic
from pipeline.models.safetensors_file import is_safetensors, safetensors_shapes
from pipeline.models.torchvision_table import (
    DEFAULT_ARCH,
    PublishedWeights,
    fitting_archs,
    published_weights,
    table_classifier_entries,
)

#: ``str(torchvision.models.ResNet18_Weights.IMAGENET1K_V1)`` and its checkpoint file name
#: (checked against torchvision in the tests): the reference model's.
IMAGENET_WEIGHTS_NAME = "ResNet18_Weights.IMAGENET1K_V1"
IMAGENET_FILE = "resnet18-f37072fd.pth"
IMAGENET_ID = f"torchvision:{IMAGENET_WEIGHTS_NAME}"

#: What the classifier ends in: a softmax (class probabilities) or nothing (raw logits).
HEADS: tuple[str, ...] = ("softmax", "logits")
#: Keywords of ``[model] weights`` / ``--weights``; anything else is a weights file: a state
#: dict (``.pth``, ``.pt``) or an exported program (``.pt2``). The sources answer the same
#: (:func:`pipeline.models.sources.is_weights_path`).
#: The file ending of a ``torch.export`` program.
EXPORTED = ".pt2"


def published(arch: str = DEFAULT_ARCH) -> PublishedWeights:
    """The checkpoint ``weights = "imagenet"`` means for ``arch`` (torchvision's DEFAULT)."""
    return published_weights(arch)


def file_identity(weights: str, qualifier: str) -> str:
    """``file:[<qualifier>:]<name>:sha256=<hex>`` of a weights file; ``file:[...]<weights>``
    when there is no such file."""
    where = f"{qualifier}:" if qualifier else ""
    path = Path(weights).expanduser()
    if path.is_file():
        return f"file:{where}{path.name}:sha256={file_sha256(path)}"
    return f"file:{where}{weights}"


def hub_dir() -> Path:
    """``torch.hub.get_dir()``: ``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``, else
    ``~/.cache/torch/hub``. Once torch is imported, torch's own answer (which also follows
    ``torch.hub.set_dir``)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return Path(torch.hub.get_dir())
    return default_hub_dir()


def default_hub_dir() -> Path:
    """torch's default hub folder, from the environment alone."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")),
        "torch")
    return Path(os.path.expanduser(home)) / "hub"


def cache_path(arch: str = DEFAULT_ARCH) -> Path:
    """Where torchvision caches ``arch``'s checkpoint: ``$TORCH_HOME/hub/checkpoints``."""
    return hub_dir() / "checkpoints" / published(arch).file


def imagenet_cache_path() -> Path:
    """Where torchvision caches the ResNet18 checkpoint (:func:`cache_path` of resnet18)."""
    return cache_path(DEFAULT_ARCH)


# ------------------------------------------------------------------ offline machines

#: How long a failed download is remembered before ``auto`` tries the network again.
RETRY_AFTER_S = 3600.0
#: Where the ResNet18 checkpoint is downloaded from; a mirror may be set in the environment.
IMAGENET_URL = f"https://download.pytorch.org/models/{IMAGENET_FILE}"


def weights_url(arch: str = DEFAULT_ARCH) -> str:
    """The download address of ``arch``'s checkpoint: torchvision's own, or a mirror:
    ``$XAI_WEIGHTS_MIRROR/<file>`` for any architecture, ``$XAI_IMAGENET_URL`` for ResNet18."""
    file = published(arch).file
    if arch == DEFAULT_ARCH and os.environ.get("XAI_IMAGENET_URL"):
        return os.environ["XAI_IMAGENET_URL"]
    mirror = os.environ.get("XAI_WEIGHTS_MIRROR")
    return f"{mirror.rstrip('/')}/{file}" if mirror else published(arch).url


def imagenet_url() -> str:
    """The ResNet18 checkpoint's download address (:func:`weights_url`)."""
    return weights_url(DEFAULT_ARCH)


def hash_prefix(arch: str = DEFAULT_ARCH) -> str:
    """The SHA-256 prefix torchvision publishes in the checkpoint's file name (``f37072fd``);
    ``torch.hub`` checks downloads against the same prefix."""
    return published(arch).hash_prefix


def _failure_marker(arch: str = DEFAULT_ARCH) -> Path:
    path = cache_path(arch)
    return path.with_name(path.name + ".unreachable.json")


def recent_failure(now: float | None = None, arch: str = DEFAULT_ARCH) -> dict | None:
    """The remembered failed download, while it is younger than :data:`RETRY_AFTER_S`:
    ``{"time": epoch seconds, "reason": str, "retry_at": epoch seconds}``; else None."""
    marker = _failure_marker(arch)
    try:
        data = json.loads(marker.read_text())
        when = float(data["time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    now = time.time() if now is None else now
    if not 0 <= now - when < RETRY_AFTER_S:
        return None
    return {"time": when, "reason": str(data.get("reason", "")),
            "retry_at": when + RETRY_AFTER_S}


def remember_failure(reason: str, arch: str = DEFAULT_ARCH) -> None:
    """Note that the download failed, so that ``auto`` does not wait on the network again soon.
    Best effort: a cache folder that cannot be written only means the next run tries again."""
    marker = _failure_marker(arch)
    with contextlib.suppress(OSError):
        write_atomic(marker, json.dumps({"time": time.time(), "reason": reason,
                                         "url": weights_url(arch)}).encode())


def forget_failure(arch: str = DEFAULT_ARCH) -> None:
    """Drop the remembered failure (the file is now in place, or the user asks to retry)."""
    with contextlib.suppress(OSError):
        _failure_marker(arch).unlink()


def offline_hint(arch: str = DEFAULT_ARCH) -> str:
    """One line: how to put the checkpoint in place on a machine without network."""
    where = "" if arch == DEFAULT_ARCH else f" --arch {arch}"
    return (f"Put the file in place with `xai weights import{where} FILE` "
            f"({published(arch).file} from {published(arch).url}; in Python: "
            "pipeline.models.checkpoints.import_weights(FILE)), or pass"
            " a state-dict file as the weights "
            "(--weights FILE; load_model(weights=FILE)).")


def import_weights(source: Path, arch: str = DEFAULT_ARCH, sha256: str | None = None) -> Path:
    """Check a downloaded checkpoint of ``arch`` and copy it into torch's cache.

    torchvision's ``.pth``: its SHA-256 must start with the prefix torchvision publishes in
    the checkpoint's name (what ``torch.hub`` itself checks), and equal ``sha256`` when one
    is given. A safetensors file (torchvision publishes none): see :func:`import_safetensors`.
    The copy is atomic: a crash leaves either no file or the whole file in the cache.

    Parameters
    ----------
    source
        The downloaded file.
    arch
        The torchvision architecture it is for.
    sha256
        The full SHA-256 the file's publisher lists (64 hex digits, any case): required for a
        safetensors file, optional for a ``.pth``.

    Returns
    -------
    Path
        The cached file (``$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth`` for ResNet18,
        :func:`imported_path` for a safetensors file).

    Raises
    ------
    WeightsError
        When the file is missing, its hash does not match, or (safetensors) it does not fit
        ``arch``.
    """
    source = Path(source).expanduser()
    pub = published(arch)
    given = None if sha256 is None else normalise_sha256(sha256)
    if not source.is_file():
        raise WeightsError(f"Expected a checkpoint file at {source}, but there is none. "
                           f"Download {pub.url} on a machine with network and pass "
                           "that file.")
    if is_safetensors(source):
        return import_safetensors(source, arch, given)
    digest = file_sha256(source)
    if given is not None and digest != given:
        raise WeightsError(
            f"Expected {source} to have the SHA-256 given with --sha256 ({given}), got "
            f"{digest}. The file is another one or an incomplete download: download it "
            "again, or check the hash you copied.")
    prefix = hash_prefix(arch)
    if not digest.startswith(prefix):
        raise WeightsError(
            f"Expected {source} to be torchvision's {pub.file} for {arch} (SHA-256 starting "
            f"{prefix}), got SHA-256 {digest}. The file is another checkpoint or an "
            f"incomplete download: fetch {pub.url} again, pass the architecture it is for "
            "with --arch, or use a state-dict file of your own with --weights FILE.")
    dest = cache_path(arch)
    copy_atomic(source, dest)
    forget_failure(arch)
    return dest


def normalise_sha256(text: str) -> str:
    """A SHA-256 as 64 lower-case hex digits, from what a user pastes (any case, spaces
    around, a ``sha256:`` in front).

    Raises
    ------
    WeightsError
        When ``text`` is no SHA-256.
    """
    digest = text.strip().lower()
    for prefix in ("sha256:", "sha256="):
        digest = digest.removeprefix(prefix).strip()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise WeightsError(
            f"Expected --sha256 to be a full SHA-256 (64 hex digits), got {text!r}. Copy it "
            "from the file's page (the Hugging Face Hub lists it as \"SHA256\") or run "
            "`sha256sum FILE` on a trusted copy.")
    return digest


# ------------------------------------------------------------------ imported safetensors

#: The folder beside torchvision's checkpoints where imported safetensors files are kept, so
#: that none can be mistaken for a file torchvision published.
IMPORTED_FOLDER = "imported"


@dataclass(frozen=True)
class ImportedWeights:
    """A safetensors checkpoint ``xai weights import`` put in torch's cache.

    Attributes
    ----------
    arch
        The torchvision architecture it was checked against.
    path
        The cached file (:func:`imported_path`).
    sha256
        Its full SHA-256, as given on import and checked then.
    source
        Where it was imported from.
    size
        Its size in bytes on import.
    """

    arch: str
    path: Path
    sha256: str
    source: str
    size: int

    @property
    def identity(self) -> str:
        """The weights identity a run records: ``imported:<arch>.safetensors:sha256=<hex>``."""
        return f"imported:{self.path.name}:sha256={self.sha256}"

    def note(self, weights: str) -> str:
        """The console line of a run that loads these weights for ``weights``."""
        return (f"weights {weights}: the imported safetensors {self.path} (SHA-256 "
                f"{self.sha256[:12]}..., checked against the hash given on import), not "
                f"torchvision's published {published(self.arch).file}")


def imported_path(arch: str = DEFAULT_ARCH) -> Path:
    """Where an imported safetensors checkpoint of ``arch`` is kept:
    ``$TORCH_HOME/hub/checkpoints/imported/<arch>.safetensors``."""
    return hub_dir() / "checkpoints" / IMPORTED_FOLDER / f"{arch}.safetensors"


def _record_path(arch: str) -> Path:
    path = imported_path(arch)
    return path.with_name(path.name + ".json")


def imported(arch: str = DEFAULT_ARCH) -> ImportedWeights | None:
    """The safetensors checkpoint imported for ``arch``: its file and the record written
    after it (a crash between the two leaves a file without a record, which is not used);
    None when there is none."""
    path = imported_path(arch)
    try:
        data = json.loads(_record_path(arch).read_text())
        record = ImportedWeights(arch, path, normalise_sha256(str(data["sha256"])),
                                 str(data["source"]), int(data["size"]))
    except (OSError, ValueError, KeyError, TypeError, WeightsError):
        return None
    return record if path.is_file() else None


def uses_imported(arch: str = DEFAULT_ARCH) -> ImportedWeights | None:
    """The imported safetensors checkpoint ``weights = "imagenet"`` loads for ``arch``: when
    torchvision's own file is not in the cache (it always wins) and one was imported."""
    return None if cache_path(arch).exists() else imported(arch)


def import_safetensors(source: Path, arch: str, sha256: str | None) -> Path:
    """Check a safetensors checkpoint of ``arch`` and keep it in torch's cache, where
    ``weights = "imagenet"`` uses it while torchvision's own file is not there.

    torchvision publishes no safetensors, so the file is checked against the full SHA-256
    its publisher lists (``sha256``), and its tensors against ``arch``: every name and shape
    of torchvision's ``arch`` with its 1000 ImageNet classes, read off the file's header (no
    code runs, torch is not imported). The checks run on the copy itself, before it replaces
    an earlier import; the record (hash, source, size) is written after it.

    Returns
    -------
    Path
        The cached file (:func:`imported_path`).

    Raises
    ------
    WeightsError
        When ``sha256`` is missing or differs, or the tensors do not fit ``arch``.
    """
    source = Path(source).expanduser()
    if sha256 is None:
        raise WeightsError(
            f"Expected --sha256 HEX with the safetensors file {source}: torchvision "
            f"publishes no safetensors for {arch}, so the only check of this file is the "
            "SHA-256 its publisher lists (the Hugging Face Hub shows it as \"SHA256\" on "
            "the file's page; or run `sha256sum` on a trusted copy). Give it with --sha256 "
            "HEX (import_weights(FILE, arch, sha256=HEX) in Python), or use the file as it "
            f"is: --weights {source} --arch {arch}.")
    given = normalise_sha256(sha256)
    dest = imported_path(arch)
    staging = dest.with_name(f".{dest.name}.importing")
    try:
        copy_atomic(source, staging)
        digest = file_sha256(staging)
        if digest != given:
            raise WeightsError(
                f"Expected {source} to have the SHA-256 its publisher lists ({given}), got "
                f"{digest}. The file is another one or an incomplete download: download it "
                "again, or check the hash you copied.")
        try:
            shapes = safetensors_shapes(staging)
        except WeightsError as exc:  # said of the user's file, not of the copy being checked
            raise WeightsError(str(exc).replace(str(staging), str(source)) + " Download it "
                               "again, or check it is the safetensors file.") from None
        if problem := fit_problem(shapes, arch):
            fits = [arch] if arch in fitting_archs(shapes) else fitting_archs(shapes)
            raise WeightsError(
                f"Expected the tensors of torchvision's {arch} with its 1000 ImageNet "
                f"classes in {source} (it stands in for torchvision's published weights), "
                f"got {problem}. Use the file as it is: --weights {source} --arch "
                f"{fits[0] if fits else 'ARCH'} (its class count is read off its "
                "classifier).")
        _record_path(arch).unlink(missing_ok=True)
        os.replace(staging, dest)
    finally:
        staging.unlink(missing_ok=True)
    record = {"arch": arch, "sha256": given, "source": str(source.resolve()),
              "size": dest.stat().st_size}
    write_atomic(_record_path(arch), json.dumps(record, indent=1).encode())
    return dest


def fit_problem(shapes: dict[str, list[int]], arch: str) -> str | None:
    """What keeps a state dict (entry name -> shape) from being one of torchvision's ``arch``
    with its 1000 ImageNet classes, in words ("a 10-class classifier ..."); None when every
    name and shape is the architecture's."""
    classifier = table_classifier_entries(arch)
    if arch not in fitting_archs(shapes):
        others = [a for a in fitting_archs(shapes) if a != arch]
        fits = f"; it fits {', '.join(others)}" if others else ""
        return (f"{len(shapes)} tensors whose names and shapes are not {arch}'s{fits}")
    counts = {shapes[key][0] for key in classifier}
    classes = len(imagenet_classes())
    if counts != {classes}:
        first = next((k for k in classifier if k.endswith("weight")), classifier[0])
        return (f"a {'/'.join(str(c) for c in sorted(counts))}-class classifier ({first} "
                f"{list(shapes[first])})")
    return None
