"""What this machine has for runs: ``xai datasets`` (the known datasets and whether their
images are there) and ``xai weights`` (the ImageNet checkpoint without network)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import XaiError
from workflows.cli.console import fail, out


def register(app: typer.Typer) -> None:
    """Add ``datasets`` and the ``weights`` group (``import``, ``status``) to ``app``."""
    app.command(short_help="the known datasets and whether their images are there")(datasets)
    weights_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                              help="The ImageNet checkpoint on machines without network.")
    weights_app.command("import", short_help="check a downloaded checkpoint and cache it")(
        weights_import)
    weights_app.command("status", short_help="where the checkpoint is looked for, and if it "
                                             "is there")(weights_status)
    app.add_typer(weights_app, name="weights",
                  short_help="the ImageNet checkpoint on machines without network")


def datasets() -> None:
    """The datasets that `--dataset NAME` (and `make run DATASET=NAME`) knows."""
    from workflows.commands.datasets import print_datasets

    print_datasets(out)


def weights_import(source: Annotated[Path, typer.Argument(
        metavar="FILE", show_default=False,
        help="the checkpoint torchvision publishes (resnet18-f37072fd.pth for resnet18), "
             "downloaded on a machine with network, or a safetensors file of the same "
             "weights (with --sha256)")],
                   arch: Annotated[str, typer.Option(
                       metavar="ARCH", help="the architecture it is for")] = "resnet18",
                   sha256: Annotated[str | None, typer.Option(
                       "--sha256", metavar="HEX", show_default=False,
                       help="the full SHA-256 the file's publisher lists (the Hugging Face "
                            "Hub shows it as SHA256 on the file's page); required for a "
                            "safetensors file, which torchvision does not publish")] = None,
                   ) -> None:
    """Check a downloaded ImageNet checkpoint and copy it into torch's cache, where
    `--weights imagenet` and `auto` find it. torchvision's .pth is checked against the hash
    torchvision publishes; a safetensors file against the --sha256 its publisher lists and
    against ARCH (every tensor's name and shape, 1000 classes), and is used while
    torchvision's own file is not in the cache."""
    from workflows.commands.weights import import_checkpoint

    try:
        import_checkpoint(out, source, arch, sha256)
    except XaiError as exc:
        raise fail(exc) from None


def weights_status(arch: Annotated[str, typer.Option(
        metavar="ARCH", help="the architecture whose checkpoint to look for")]
        = "resnet18") -> None:
    """Where the ImageNet checkpoint is looked for, whether it is there, the safetensors file
    imported in its place if any, which of them a run would use, and whether a failed
    download is remembered (auto does not retry the network until then)."""
    from workflows.commands.weights import print_checkpoint_status

    try:
        print_checkpoint_status(out, arch)
    except XaiError as exc:
        raise fail(exc) from None
