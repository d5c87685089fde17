"""The commands that run stages: ``xai run`` (all of them), ``xai evaluate`` and
``xai report`` (one each), with progress and a gentle Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from pipeline.errors import XaiError
from pipeline.models.sources import arch_help, model_label, weights_help
from pipeline.models.torchvision_table import DEFAULT_ARCH
from workflows.cli.console import console, fail, out
from workflows.cli.options import (
    ClassesOpt,
    ConfigOpt,
    DataDirOpt,
    DatasetOpt,
    DeviceOpt,
    EvaluateOpt,
    MethodOpt,
    NameOpt,
    OutOpt,
    RunDirArg,
    SchedulerOpt,
    SetOpt,
    config_for_command,
    with_command_line_choices,
)
from workflows.commands.summary_tables import (
    print_evaluation,
    print_report_location,
    print_run_summary,
)
from workflows.runner.progress import make_reporter
from workflows.stages import REGISTRY


def register(app: typer.Typer) -> None:
    """Add ``run``, ``evaluate`` and ``report`` to ``app``."""
    app.command(short_help="run or resume the pipeline (any folder: --data-dir DIR)")(run)
    app.command(short_help="only the evaluate stage, on an existing run")(evaluate)
    app.command(short_help="build or update the run's HTML report")(report)


def run(
    run_dir: RunDirArg = None,
    dataset: DatasetOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    out_dir: OutOpt = None,
    weights: Annotated[str | None, typer.Option(metavar="WEIGHTS",
        help=weights_help())] = None,
    arch: Annotated[str | None, typer.Option(metavar="ARCH",
        help=f"{arch_help()}; default {DEFAULT_ARCH}")] = None,
    classes: ClassesOpt = None,
    method: MethodOpt = None,
    evaluate_: EvaluateOpt = False,
    device: DeviceOpt = None,
    scheduler: Annotated[str, typer.Option(metavar="SCHEDULER",
        help="threads | processes | synchronous | local:N | local-cuda | tcp://host:port "
             "(see README, Several GPUs and machines)")] = "threads",
    sets: SetOpt = None,
    name: NameOpt = None,
    force: Annotated[str | None, typer.Option(metavar="STAGE",
        help=f"recompute this stage and the ones after it: {', '.join(REGISTRY.names())}")] = None,
    replace: Annotated[bool, typer.Option(
        "--replace", help="discard an existing store made with other dataset settings or "
                          "shard_size (without it, such a run stops and changes nothing)")]
        = False,
) -> None:
    """Run (or resume) the pipeline: ingest, predict, attribute, aggregate, normalize, render,
    evaluate (when [evaluate] metrics names some, or with --evaluate) and report.

    Your own images: `xai run --data-dir DIR` finds their layout by itself (class folders, a
    CSV beside them, or plain files) and names the run after the folder. A checkpoint of
    your own: `--weights model.pth --arch resnet18 --classes classes.txt`. One more method:
    `--method grad_cam`. Scores for the maps: `--evaluate`.

    Later commands take the run folder: `xai status runs/NAME`.
    """
    try:
        cfg = config_for_command(dataset, config, sets, run_dir, data_dir=data_dir, out=out_dir,
                         weights=weights, device=device, arch=arch, name=name)
        cfg = with_command_line_choices(cfg, classes=classes, methods=method,
                                        evaluate=evaluate_)
        console.print(f"[bold]{cfg.dataset.name}[/]: "
                      f"{model_label(cfg.model.arch, str(cfg.model.weights))}, methods "
                      f"{', '.join(cfg.method_names)}; output {cfg.run_dir}")
    except XaiError as exc:
        raise fail(exc) from None
    print_run_summary(out, run_stages(cfg, scheduler, force=force, replace=replace))


def evaluate(
    run_dir: RunDirArg = None,
    dataset: DatasetOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    out_dir: OutOpt = None,
    device: DeviceOpt = None,
    scheduler: SchedulerOpt = "threads",
    sets: SetOpt = None,
) -> None:
    """Run only the evaluate stage ([evaluate] metrics) on an existing run's maps.

    Every stage it reads (attribute, aggregate, ...) must be complete and current: otherwise
    it stops and names the stage to run. `xai run` runs evaluate too, after the maps.
    """
    try:
        cfg = config_for_command(dataset, config, sets, run_dir, data_dir=data_dir, out=out_dir,
                         device=device)
    except XaiError as exc:
        raise fail(exc) from None
    summary = run_stages(cfg, scheduler, only="evaluate")
    print_evaluation(out, summary.outputs.get("evaluate"), summary.run_dir)


def report(
    run_dir: RunDirArg = None,
    dataset: DatasetOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    out_dir: OutOpt = None,
    scheduler: SchedulerOpt = "threads",
    open_: Annotated[bool, typer.Option("--open", help="open it in the default browser")]
    = False,
    sets: SetOpt = None,
) -> None:
    """Build (or bring up to date) the run's static HTML report in runs/NAME/report/.

    Only shards whose inputs changed are rebuilt. A run with stages missing gets a report
    of what is there, which says what is missing. The folder opens from the disk
    (index.html), needs no server, and can be moved or zipped.
    """
    from workflows.commands.open_report import check_report_enabled, open_in_browser, report_page

    try:
        cfg = config_for_command(dataset, config, sets, run_dir, data_dir=data_dir, out=out_dir)
        check_report_enabled(cfg)
    except XaiError as exc:
        raise fail(exc) from None
    summary = run_stages(cfg, scheduler, only="report")
    print_report_location(out, summary.run_dir, summary.outputs.get("report"))
    if open_:
        page = report_page(summary.run_dir)
        if not open_in_browser(page):
            out.print(f"[yellow]no browser could be started here[/]: open {page} yourself")


def run_stages(cfg: Any, scheduler: str, **kw: Any) -> Any:
    """:func:`~workflows.runner.run.run_pipeline` with progress; Ctrl-C and user errors end
    the command cleanly (status 130 and 2).

    The first Ctrl-C is acknowledged at once and lets the running tasks finish and be
    recorded; the second stops at once (what is recorded stays; the rest is recomputed).
    """
    from workflows.runner.coordinator import RunStopped, Stop
    from workflows.runner.executors import validate
    from workflows.runner.run import run_pipeline

    stop = Stop()
    try:
        validate(scheduler)
        with make_reporter(console) as reporter, gentle_ctrl_c(stop):
            return run_pipeline(cfg, registry=REGISTRY, scheduler=scheduler, reporter=reporter,
                                stop=stop, **kw)
    except RunStopped as stopped:
        console.print(f"[bold yellow]Stopped.[/] {stopped.recorded} tasks finished and were "
                      "recorded; run the same command again to resume where it stopped.")
        raise typer.Exit(130) from None
    except KeyboardInterrupt:
        console.print("[bold yellow]Interrupted.[/] Finished shards are kept; run the same "
                      "command again to resume where it stopped.")
        raise typer.Exit(130) from None
    except XaiError as exc:
        raise fail(exc) from None


@contextlib.contextmanager
def gentle_ctrl_c(stop: Any) -> Iterator[None]:
    """SIGINT requests a gentle stop of ``stop`` the first time and interrupts the second
    time (on the main thread only: elsewhere no handler can be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        if stop.requested:
            raise KeyboardInterrupt
        stop.request()
        n = stop.in_flight()
        tasks = f"the {n} running task{'s' if n != 1 else ''}" if n else "the running tasks"
        console.print(f"[bold yellow]stopping after {tasks}[/] (they finish and are "
                      "recorded); Ctrl-C again to stop now")

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
