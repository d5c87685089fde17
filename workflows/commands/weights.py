"""``xai weights``: the ImageNet checkpoint in torch's cache, for machines without network:
import a downloaded one (checked against its published hash) and say where it is looked for."""

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


def import_checkpoint(out: Console, source: Path, arch: str) -> None:
    """Check ``source`` against the hash torchvision publishes for ``arch``'s checkpoint,
    copy it into torch's cache and say so."""
    from pipeline.models.checkpoints import import_weights

    check_arch_option(arch)
    dest = import_weights(source, arch)
    out.print(f"imported {source} -> {dest}")
    out.print(f"runs of {arch} with --weights imagenet or auto now use the ImageNet weights")


def print_checkpoint_status(out: Console, arch: str) -> None:
    """Where ``arch``'s checkpoint is looked for and whether it is there; when it is not, where
    to download it and when ``auto`` retries a download that failed."""
    from pipeline.models.checkpoints import cache_path, published, recent_failure

    check_arch_option(arch)
    path = cache_path(arch)
    out.print(f"cache: {path}")
    if path.is_file():
        out.print(f"[green]present[/] ({path.stat().st_size / 2**20:.1f} MiB)")
        return
    where = "" if arch == "resnet18" else f" --arch {arch}"
    out.print(f"[yellow]missing[/]: download {published(arch).url} and run "
              f"`xai weights import{where} FILE`")
    failed = recent_failure(arch=arch)
    if failed is not None:
        retry = time.strftime("%H:%M", time.localtime(failed["retry_at"]))
        out.print(f"last download failed ({escape(failed['reason'])}); `auto` retries after "
                  f"{retry}")
