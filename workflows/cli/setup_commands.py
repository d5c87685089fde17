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
             "downloaded on a machine with network")],
                   arch: Annotated[str, typer.Option(
                       metavar="ARCH", help="the architecture it is for")] = "resnet18") -> None:
    """Check a downloaded ImageNet checkpoint against the hash torchvision publishes for it,
    and copy it into torch's cache, where `--weights imagenet` and `auto` find it."""
    from workflows.commands.weights import import_checkpoint

    try:
        import_checkpoint(out, source, arch)
    except XaiError as exc:
        raise fail(exc) from None


def weights_status(arch: Annotated[str, typer.Option(
        metavar="ARCH", help="the architecture whose checkpoint to look for")]
        = "resnet18") -> None:
    """Where the ImageNet checkpoint is looked for, whether it is there, and whether a failed
    download is remembered (auto does not retry the network until then)."""
    from workflows.commands.weights import print_checkpoint_status

    try:
        print_checkpoint_status(out, arch)
    except XaiError as exc:
        raise fail(exc) from None
