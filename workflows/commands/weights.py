"""``xai weights``: the ImageNet checkpoint in torch's cache, for machines without network:
import a downloaded one (torchvision's ``.pth``, checked against its published hash, or a
safetensors copy, checked against the hash its publisher lists and against the architecture)
and say where it is looked for and which file a run would use."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from pipeline.errors import ConfigError


def check_arch_option(arch: str) -> None:
    """A :class:`ConfigError` naming ``--arch`` when ``arch`` is no known architecture."""
    from pipeline.models.sources import check_arch

    if problem := check_arch(arch):
        raise ConfigError(f"--arch: {problem}")


def import_checkpoint(out: Console, source: Path, arch: str, sha256: str | None = None) -> None:
    """Check ``source`` (torchvision's ``.pth`` against the hash torchvision publishes, a
    safetensors file against ``sha256`` and ``arch``), copy it into torch's cache and say so,
    and which file runs of ``arch`` now use."""
    from pipeline.models.checkpoints import import_weights, imported, uses_imported

    check_arch_option(arch)
    dest = import_weights(source, arch, sha256)
    out.print(f"imported {escape(str(source))} -> {escape(str(dest))}")
    if dest.suffix != ".safetensors":
        out.print(f"runs of {arch} with --weights imagenet or auto now use the ImageNet weights")
        if (record := imported(arch)) is not None:
            out.print(f"(not the safetensors imported earlier, {escape(str(record.path))}: "
                      "torchvision's own checkpoint wins)")
    elif uses_imported(arch) is not None:
        out.print(f"runs of {arch} with --weights imagenet or auto now use this file in place "
                  "of torchvision's checkpoint, and say so")
    else:
        out.print(f"torchvision's own checkpoint of {arch} is in the cache: runs use it, not "
                  "this file, while it is there")


def print_checkpoint_status(out: Console, arch: str) -> None:
    """Where ``arch``'s checkpoint is looked for and whether it is there, the safetensors file
    imported in its place when there is one, and which of them a run would use; when neither
    is there, where to download the checkpoint and when ``auto`` retries a download that
    failed."""
    from pipeline.models.checkpoints import cache_path, imported, imported_path, published

    check_arch_option(arch)
    path = cache_path(arch)
    out.print(f"cache: {escape(str(path))}")
    where = "" if arch == "resnet18" else f" --arch {arch}"
    if path.is_file():
        out.print(f"[green]present[/] ({_mib(path)})")
    else:
        out.print(f"[yellow]missing[/]: download {published(arch).url} and run "
                  f"`xai weights import{where} FILE`")
    record = imported(arch)
    if record is not None:
        out.print(f"imported safetensors: {escape(str(record.path))} ({_mib(record.path)}, "
                  f"SHA-256 {record.sha256}, from {escape(record.source)})")
    elif (half := imported_path(arch)).is_file():
        out.print(f"imported safetensors: [yellow]incomplete[/] ({escape(str(half))} has no "
                  f"record of its hash, so runs do not use it); run `xai weights import "
                  f"FILE{where} --sha256 HEX` again")
    if path.is_file():
        out.print(f"runs of {arch} with --weights imagenet or auto use torchvision's "
                  f"checkpoint ({published(arch).file})"
                  + (", not the imported safetensors" if record is not None else ""))
    elif record is not None:
        out.print(f"runs of {arch} with --weights imagenet or auto use the imported "
                  f"safetensors ({record.path.name}), not torchvision's {published(arch).file}")
    else:
        _print_failure(out, arch)


def _mib(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.1f} MiB"


def _print_failure(out: Console, arch: str) -> None:
    """When ``auto`` tries the network again after a failed download, if one is remembered."""
    from pipeline.models.checkpoints import recent_failure

    failed = recent_failure(arch=arch)
    if failed is not None:
        retry = time.strftime("%H:%M", time.localtime(failed["retry_at"]))
        out.print(f"last download failed ({escape(failed['reason'])}); `auto` retries after "
                  f"{retry}")
