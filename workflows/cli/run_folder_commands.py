"""The commands on an existing run: ``xai status`` (what is done), ``xai verify`` (re-read
against the checksums) and ``xai clean`` (remove a run or clear stages)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import XaiError
from workflows.cli.console import console, fail, out
from workflows.cli.options import (
    ConfigOpt,
    DataDirOpt,
    DatasetOpt,
    OutOpt,
    RunDirArg,
    SetOpt,
    config_for_command,
)
from workflows.runner.progress import make_reporter
from workflows.stages import REGISTRY


def register(app: typer.Typer) -> None:
    """Add ``status``, ``clean`` and ``verify`` to ``app``."""
    app.command(short_help="what is done, stale or running")(status)
    app.command(short_help="remove a run, or clear a stage and those after it")(clean)
    app.command(short_help="re-read finished shards against their checksums")(verify)


def status(run_dir: RunDirArg = None, dataset: DatasetOpt = None, config: ConfigOpt = None,
           out_dir: OutOpt = None, sets: SetOpt = None, data_dir: DataDirOpt = None) -> None:
    """Per stage and method: images done of the total, and whether the config made them
    stale; and whether a run is in progress."""
    from workflows.commands.status import print_status, run_status

    try:
        cfg = config_for_command(dataset, config, sets, run_dir, out=out_dir, data_dir=data_dir)
        st = run_status(cfg)
    except XaiError as exc:
        raise fail(exc) from None
    print_status(out, st)


def clean(first: Annotated[str | None, typer.Argument(
              metavar="RUN_DIR", show_default=False,
              help="a run folder (runs/NAME); or leave it out and name the run with "
                   "--dataset or --config")] = None,
          second: Annotated[str | None, typer.Argument(
              metavar="STAGE", show_default=False,
              help="clear this stage and every stage after it, the report included; none: "
                   "remove the whole run")] = None,
          dataset: DatasetOpt = None, config: ConfigOpt = None, out_dir: OutOpt = None,
          sets: SetOpt = None, data_dir: DataDirOpt = None,
          yes: Annotated[bool, typer.Option(
              "--yes", "-y", help="remove a whole run without asking (for scripts)")]
          = False) -> None:
    """Remove a run, or clear one stage and those after it for recomputation.

    Removing a whole run asks first; without a terminal to ask on, it needs --yes.
    """
    from workflows.commands.clean import clean as clean_run
    from workflows.commands.clean import confirm_whole_removal

    run_dir, stage = clean_arguments(first, second)
    try:
        cfg = config_for_command(dataset, config, sets, run_dir, out=out_dir, data_dir=data_dir)
        if stage is None and cfg.run_dir.exists() and not yes and not confirm_whole_removal(
                cfg.run_dir, ask=lambda question: typer.confirm(question, default=False),
                can_ask=sys.stdin.isatty()):
            out.print("kept the run")
            raise typer.Exit(1)
        out.print(clean_run(cfg, stage))
    except XaiError as exc:
        raise fail(exc) from None


def clean_arguments(first: str | None, second: str | None) -> tuple[Path | None, str | None]:
    """``[RUN_DIR] [STAGE]``: one argument is a stage when it names one and no folder of
    that name exists; else a run folder."""
    if second is not None:
        return (Path(first) if first is not None else None), second
    if first is None:
        return None, None
    if first in REGISTRY.names() and not Path(first).is_dir():
        return None, first
    if Path(first).exists() or "/" in first or first.startswith("."):
        return Path(first), None
    return None, first  # neither: the stage check names the argument and the stages


def verify(run_dir: RunDirArg = None, dataset: DatasetOpt = None, config: ConfigOpt = None,
           out_dir: OutOpt = None, sets: SetOpt = None, data_dir: DataDirOpt = None,
           check_only: Annotated[bool, typer.Option(
               "--check-only", help="report damage without dropping records")] = False,
           sample: Annotated[int | None, typer.Option(
               "--sample", min=1, metavar="N",
               help="check N finished shards drawn at random (a quick look)")] = None) -> None:
    """Re-read every finished shard and sheet against its record's checksum.

    Damaged or missing data is reported and its record dropped, so the next `xai run`
    recomputes exactly what it affects. Exit code 1 when damage was found.
    """
    from workflows.commands.verify import print_verify_report
    from workflows.commands.verify import verify as verify_run

    try:
        cfg = config_for_command(dataset, config, sets, run_dir, out=out_dir, data_dir=data_dir)
        with make_reporter(console, unit="shards") as reporter:
            report = verify_run(cfg, repair=not check_only, sample=sample, reporter=reporter)
    except XaiError as exc:
        raise fail(exc) from None
    print_verify_report(out, report, cfg.run_dir)
    if report.damaged:
        raise typer.Exit(1)
