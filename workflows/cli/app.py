"""The ``xai`` command line: parses options and calls library and workflow functions."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.attribution.registry import DEFAULT_METHODS, METHODS
from pipeline.errors import ConfigError, XaiError
from workflows.runner.progress import make_reporter
from workflows.stages import REGISTRY


def _argument_type(self: Any, ctx: Any) -> str | None:
    """An argument's help shows its metavar alone ("RUN_DIR", "IMAGE..."), not typer's
    ``<path>`` or ``<list[Path]>`` after it."""
    return None if self.metavar else _typer_argument_type(self, ctx)


_typer_argument_type = typer.core.TyperArgument.display_type_rich
typer.core.TyperArgument.display_type_rich = _argument_type  # type: ignore[method-assign]

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Batch gradient-based explanations of an image classifier (ImageNet "
                       "ResNet18 by default) over whole datasets.")
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

DataDirOpt = Annotated[Path | None, typer.Option(
    "--data-dir", metavar="DIR", help="image folder (else $XAI_DATA_DIR, else the config's root)")]
DatasetOpt = Annotated[str | None, typer.Option("--dataset", "-d", metavar="NAME",
                                                help="configs/<NAME>.toml (default: sample)")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", metavar="FILE",
                                                help="a config file")]
OutOpt = Annotated[Path | None, typer.Option("--out", metavar="DIR",
                                             help="output root (run folder: DIR/NAME)")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", metavar="SECTION.KEY=VALUE",
    help="override a config value (the value is read as TOML)")]
DeviceOpt = Annotated[str | None, typer.Option(metavar="DEVICE",
                                               help="auto | cpu | cuda | cuda:N")]
SchedulerOpt = Annotated[str, typer.Option(metavar="SCHEDULER", help="as for `xai run`")]
RunDirArg = Annotated[Path | None, typer.Argument(
    metavar="RUN_DIR", help="a run folder (runs/NAME): its saved config.toml says the rest",
    show_default=False)]
NameOpt = Annotated[str | None, typer.Option(
    "--name", metavar="NAME", help="the run's name, its folder under --out (default: the "
    "dataset's name; with --data-dir alone, the folder's)")]


def _fail(exc: BaseException | str, code: int = 2) -> typer.Exit:
    # escape: messages quote config sections such as "[run]", which rich would eat as markup
    console.print(f"[bold red]error:[/] {escape(str(exc))}")
    return typer.Exit(code)


@contextlib.contextmanager
def _gentle_ctrl_c(stop: Any) -> Iterator[None]:
    """SIGINT requests a gentle stop the first time and interrupts the second time."""
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


def _config(dataset: str | None, config: Path | None, sets: list[str] | None,
            run_dir: Path | None = None, **kw: Any) -> Any:
    """The config of a run folder, ``--config``, ``--dataset``, or (``--data-dir`` alone)
    your own images, named after their folder unless ``name`` says otherwise."""
    from workflows.config.loading import load_config, own_images_config, resolve_config_path

    if run_dir is not None:
        if dataset is not None or config is not None:
            raise ConfigError(f"Expected either a run folder ({run_dir}) or --dataset/--config, "
                              "got both. The run folder's config.toml already says which "
                              "dataset; drop one of them.")
        path = resolve_config_path(None, None, run_dir)
        # The folder is the run, wherever it was moved to.
        if kw.get("out") is None:
            kw["out"] = run_dir.resolve().parent
        kw["name"] = kw.get("name") or run_dir.resolve().name
        return load_config(path, sets or [], **kw)
    data_dir = kw.get("data_dir")
    if dataset is None and config is None and data_dir is not None:
        path = own_images_config()
        kw["name"] = kw.get("name") or data_dir.expanduser().resolve().name
        return load_config(path, sets or [], **kw)
    return load_config(resolve_config_path(dataset, config), sets or [], **kw)


@app.command(short_help="run or resume the pipeline (any folder: --data-dir DIR)")
def run(
    run_dir: RunDirArg = None,
    dataset: DatasetOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    out_dir: OutOpt = None,
    weights: Annotated[str | None, typer.Option(metavar="WEIGHTS",
        help="imagenet | auto | random | evidence | a state-dict file | a .pt2 exported "
             "program")] = None,
    arch: Annotated[str | None, typer.Option(metavar="ARCH",
        help="any torchvision classification model (resnet50, convnext_tiny, vit_b_16, ...) "
             "or timm:NAME; default resnet18")] = None,
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
    evaluate (when [evaluate] metrics names some) and report.

    Your own images: `xai run --data-dir DIR` finds their layout by itself (class folders, a
    CSV beside them, or plain files) and names the run after the folder. Later commands take
    the run folder: `xai status runs/NAME`.
    """
    try:
        cfg = _config(dataset, config, sets, run_dir, data_dir=data_dir, out=out_dir,
                      weights=weights, device=device, arch=arch, name=name)
        console.print(f"[bold]{cfg.dataset.name}[/]: {cfg.model.arch}, methods "
                      f"{', '.join(cfg.method_names)}; output {cfg.run_dir}")
    except XaiError as exc:
        raise _fail(exc) from None
    _print_summary(_pipeline(cfg, scheduler, force=force, replace=replace))


def _pipeline(cfg: Any, scheduler: str, **kw: Any) -> Any:
    """``run_pipeline`` with progress; Ctrl-C and user errors end it cleanly.

    The first Ctrl-C is acknowledged at once and lets the running tasks finish and be
    recorded; the second stops at once (what is recorded stays; the rest is recomputed).
    """
    from workflows.runner.coordinator import RunStopped, Stop
    from workflows.runner.run import run_pipeline
    from workflows.runner.scheduler import validate

    stop = Stop()
    try:
        validate(scheduler)
        with make_reporter(console) as reporter, _gentle_ctrl_c(stop):
            return run_pipeline(cfg, scheduler=scheduler, reporter=reporter, stop=stop, **kw)
    except RunStopped as stopped:
        console.print(f"[bold yellow]Stopped.[/] {stopped.recorded} tasks finished and were "
                      "recorded; run the same command again to resume where it stopped.")
        raise typer.Exit(130) from None
    except KeyboardInterrupt:
        console.print("[bold yellow]Interrupted.[/] Finished shards are kept; run the same "
                      "command again to resume where it stopped.")
        raise typer.Exit(130) from None
    except XaiError as exc:
        raise _fail(exc) from None


@app.command(short_help="only the evaluate stage, on an existing run")
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
        cfg = _config(dataset, config, sets, run_dir, data_dir=data_dir, out=out_dir,
                      device=device)
    except XaiError as exc:
        raise _fail(exc) from None
    summary = _pipeline(cfg, scheduler, only="evaluate")
    _print_evaluation(summary.outputs.get("evaluate"), summary.run_dir)


@app.command(short_help="build or update the run's HTML report")
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
    try:
        cfg = _config(dataset, config, sets, run_dir, data_dir=data_dir, out=out_dir)
        if not cfg.report.enabled:
            raise ConfigError(f"{cfg.source}: [report] enabled = false turns the report off; "
                              "set it to true (or pass --set report.enabled=true).")
    except XaiError as exc:
        raise _fail(exc) from None
    summary = _pipeline(cfg, scheduler, only="report")
    _print_report(summary.run_dir, summary.outputs.get("report"))
    if open_:
        import webbrowser

        page = summary.run_dir / "report" / "index.html"
        if not webbrowser.open(page.resolve().as_uri()):
            out.print(f"[yellow]no browser could be started here[/]: open {page} yourself")


def _print_report(run_dir: Path, facts: Any) -> None:
    if not facts:
        return
    out.print(f"report: {run_dir / 'report' / 'index.html'} (built in {facts['seconds']:.1f}s"
              f"; open it from the disk, no server needed)")
    for m, p in (facts.get("shortcut_purity") or {}).items():
        out.print(f"  planted shortcut: cluster purity {p:.3f} with {m}")
    if facts.get("missing"):
        out.print("[yellow]  stages missing[/]: " + "; ".join(facts["missing"]))


def _print_summary(summary: Any) -> None:
    table = Table(title="run summary (busy: the tasks' own work, img/s from it; span: first "
                        "start to last end; idle: the device waiting)", title_justify="left")
    for col in ("stage", "units", "images", "busy s", "img/s", "span s", "idle", "workers"):
        table.add_column(col, justify="left" if col in ("stage", "workers") else "right",
                         no_wrap=col == "stage")
    for st in summary.stats:
        rate = f"{st.img_per_s:.1f}" if st.img_per_s else "-"
        idle = f"{100 * st.device_idle:.0f}%" if st.device_idle is not None else ""
        table.add_row(st.stage, f"{st.units_run}/{st.units_total}", str(st.images_run),
                      f"{st.busy_seconds:.1f}", rate, f"{st.seconds:.1f}", idle,
                      str(len(st.workers) or ""))
    out.print(table)
    device_span = max((st.seconds for st in summary.stats if st.device_idle is not None),
                      default=0.0)
    if device_span:
        out.print(f"whole run {summary.seconds:.1f}s (wall time of this command) = "
                  f"{summary.seconds / device_span:.2f}x the longest device stage "
                  f"({device_span:.1f}s); busy time adds up to "
                  f"{sum(st.busy_seconds for st in summary.stats):.1f}s (streaming "
                  f"{'on: stages overlap' if summary.streaming else 'off'}, scheduler "
                  f"{summary.scheduler})")
    if not any(st.units_run for st in summary.stats):
        out.print("[green]everything was already up to date: nothing was recomputed[/]")
    out.print(f"images: {summary.images} ({summary.ok} explained, {len(summary.skipped)} "
              f"skipped) on {summary.device} in {summary.seconds:.1f}s")
    for image_id, reason in summary.skipped[:20]:
        out.print(f"  [yellow]skipped[/] {image_id}: {reason}")
    if len(summary.skipped) > 20:
        out.print(f"  ... and {len(summary.skipped) - 20} more (see `xai status`)")
    out.print(f"store:  {summary.store_path}")
    out.print(f"sheets: {summary.sheets_dir}")
    out.print(f"summary: {summary.run_dir / 'summary.json'}")
    out.print(f"weights: {summary.weights_id}")
    if summary.accuracy:
        acc = summary.accuracy
        out.print(f"top-1 accuracy: {acc['accuracy']:.1%} ({acc['correct']} of "
                  f"{acc['labelled']} labelled images)")
    if summary.engine:
        shown = {k: v for k, v in summary.engine.items() if k not in ("arch", "precision")}
        out.print(f"engine ({escape(summary.engine.get('arch', ''))}): "
                  + "; ".join(f"{k} {escape(v)}" for k, v in shown.items()))
    _print_completeness(summary.completeness, limit=0)
    _print_evaluation(summary.outputs.get("evaluate"), summary.run_dir)
    _print_report(summary.run_dir, summary.outputs.get("report"))
    if summary.random_weights:
        out.print("[bold red]random weights: the attributions say nothing about a real "
                  "model[/]")


def _print_evaluation(ev: Any, run_dir: Path) -> None:
    """Per metric (its direction) and method: mean and 95% bootstrap interval; random row."""
    if not ev:
        return
    metrics = ev["metrics"]
    if metrics:
        table = Table(title="evaluation: mean [95% bootstrap interval]; random maps give the "
                            "floor", title_justify="left")
        for col in ("metric", "explainer", "mean", "95% interval"):
            table.add_column(col, justify="right" if col == "mean" else "left")
        for name, entry in metrics.items():
            arrow = "↑ higher is better" if entry["better"] == "higher" else "↓ lower is better"
            rows = [*entry["methods"].items(), ("random maps", entry["random"])]
            for k, (m, stat) in enumerate(rows):
                head = name if k == 0 else (f"[dim]{arrow}[/]" if k == 1 else "")
                interval = "-" if stat["mean"] is None else \
                    f"[{stat['low']:.3f}, {stat['high']:.3f}]"
                mean = "-" if stat["mean"] is None else f"{stat['mean']:.3f}"
                style = "dim" if m == "random maps" else ""
                table.add_row(head, m, mean, interval, style=style)
            table.add_section()
        out.print(table)
    if ev.get("randomisation"):
        table = Table(title="randomisation: Spearman of each map with the map after "
                            "randomising the network down to ...", title_justify="left")
        table.add_column("explainer")
        groups = list(next(iter(ev["randomisation"].values())))
        for g in groups:
            table.add_column(g)
        for m, per in ev["randomisation"].items():
            table.add_row(m, *(f"{v['mean']:.2f}" if v["mean"] is not None else "-"
                               for v in per.values()))
        out.print(table)
    for note in ev.get("notes", []):
        out.print(f"[yellow]{escape(note)}[/]")
    out.print(f"evaluation: {run_dir / 'evaluation.json'}, {run_dir / 'evaluation.png'}")


def _print_completeness(rows: Any, limit: int) -> None:
    """Per IG method: median and worst relative completeness error; images above the
    threshold (up to ``limit`` of them listed)."""
    if not rows:
        return
    table = Table(title="completeness |sum(A) - (F(x) - F(baseline))| / |F(x) - F(baseline)|",
                  title_justify="left")
    for col in ("explainer", "images", "median", "worst", "worst image", "above"):
        table.add_column(col, justify="left" if col in ("explainer", "worst image") else "right")
    for c in rows:
        style = "yellow" if c.flagged else ""
        table.add_row(c.method, str(c.images), f"{100 * c.median:.2f}%",
                      f"{100 * c.worst:.2f}%", c.worst_image,
                      f"[{style}]{len(c.flagged)}[/]" if style else "0")
    out.print(table)
    for c in rows:
        a = c.adaptive
        if a:
            res = "-" if a["residual_median"] is None else f"{100 * a['residual_median']:.2f}%"
            out.print(f"{c.method} (adaptive): path points per image median "
                      f"{a['steps_median']:g}, 90th percentile {a['steps_p90']:g}, max "
                      f"{a['steps_max']}; median residual {res}"
                      + (f"; {a['zero_gap']} images with F(x) = F(baseline) stopped at the "
                         "starting grid (residual NaN)" if a["zero_gap"] else ""))
    flagged = [c for c in rows if c.flagged]
    if flagged:
        threshold = flagged[0].threshold
        out.print(f"[yellow]{sum(len(c.flagged) for c in flagged)} maps miss completeness by "
                  f"more than {100 * threshold:g}% (\\[run] completeness_warning)[/]")
        for c in flagged:
            out.print(f"  {c.method}: {escape(_incomplete_hint(c.method))}")
        for c in flagged:
            for image, rel in c.flagged[:limit]:
                out.print(f"  {c.method} {image}: {100 * rel:.1f}%")
            if len(c.flagged) > limit > 0:
                out.print(f"  ... {c.method}: {len(c.flagged) - limit} more")


def _incomplete_hint(method: str) -> str:
    from pipeline.attribution.registry import METHODS

    spec = METHODS.get(method)
    return spec.incomplete_hint if spec is not None else ""


@app.command(short_help="what is done, stale or running")
def status(run_dir: RunDirArg = None, dataset: DatasetOpt = None, config: ConfigOpt = None,
           out_dir: OutOpt = None, sets: SetOpt = None, data_dir: DataDirOpt = None) -> None:
    """Per stage and method: images done of the total, and whether the config made them
    stale; and whether a run is in progress."""
    from workflows.commands.status import run_status

    try:
        cfg = _config(dataset, config, sets, run_dir, out=out_dir, data_dir=data_dir)
        st = run_status(cfg)
    except XaiError as exc:
        raise _fail(exc) from None
    out.print(f"run: {st.run_dir}")
    if st.running:
        r = st.running
        out.print(f"[bold yellow]a run is in progress[/]: pid {r['pid']} on {r['host']}, "
                  f"since {r['started']} (the counts below grow as it records its work)")
    if not st.exists:
        for note in st.notes:
            out.print(note)
        return
    if st.random_weights:
        out.print(f"[bold red]this run used random weights ({st.weights_id}): its maps say "
                  "nothing about a real model[/]")
    table = Table()
    for col in ("stage", "explainer", "images done", "of", "stale", "state"):
        table.add_column(col)
    for s in st.stages:
        state = ("done" if s.done == s.total else "stale" if s.stale else
                 "partial" if s.done else "pending")
        shared = REGISTRY[s.stage].shared_label if s.method is None and \
            REGISTRY[s.stage].per_method else ""
        table.add_row(s.stage, s.method or shared, str(s.done), str(s.total), str(s.stale),
                      state)
    out.print(table)
    out.print(f"images: {st.images}, skipped: {len(st.skipped)}")
    for image_id, reason in st.skipped:
        out.print(f"  {image_id}: {reason}")
    for note in st.notes:
        out.print(f"[yellow]{note}[/]")
    _print_completeness(st.completeness, limit=20)


@app.command(short_help="remove a run, or clear a stage and those after it")
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
    from workflows.commands.clean import run_size

    run_dir, stage = _clean_arguments(first, second)
    try:
        cfg = _config(dataset, config, sets, run_dir, out=out_dir, data_dir=data_dir)
        if stage is None and cfg.run_dir.exists() and not yes:
            files, size = run_size(cfg.run_dir)
            question = (f"Remove the whole run at {cfg.run_dir} ({files} files, "
                        f"{size / 2**20:.1f} MiB)?")
            if not sys.stdin.isatty():
                raise ConfigError(f"Expected --yes to remove the whole run at {cfg.run_dir} "
                                  f"({files} files) without a terminal to ask on. Pass --yes, "
                                  "or name a STAGE to clear only that stage and those after "
                                  "it.")
            if not typer.confirm(question, default=False):
                out.print("kept the run")
                raise typer.Exit(1)
        out.print(clean_run(cfg, stage))
    except XaiError as exc:
        raise _fail(exc) from None


def _clean_arguments(first: str | None, second: str | None) -> tuple[Path | None, str | None]:
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


@app.command(short_help="re-read finished shards against their checksums")
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
    from workflows.commands.verify import verify as verify_run

    try:
        cfg = _config(dataset, config, sets, run_dir, out=out_dir, data_dir=data_dir)
        with make_reporter(console, unit="shards") as reporter:
            report = verify_run(cfg, repair=not check_only, sample=sample, reporter=reporter)
    except XaiError as exc:
        raise _fail(exc) from None
    drawn = f" (drawn at random of {report.finished})" if report.checked < report.finished \
        else ""
    out.print(f"checked {report.checked} finished shards and sheets{drawn} in {cfg.run_dir}")
    if not report.damaged:
        out.print("[green]all data matches its records[/]")
        return
    for stage, index, what in report.damaged:
        out.print(f"  [red]damaged[/] {stage} shard {index}: {what}")
    if report.repaired:
        out.print("their records were dropped: run `xai run` (same options) to recompute "
                  "exactly these shards")
    raise typer.Exit(1)


@app.command(short_help="one PNG of heat maps for a few image files")
def explain(
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE...", help="image files")],
    out_file: Annotated[Path, typer.Option("--out", metavar="FILE", help="PNG to write")]
        = Path("explain.png"),
    weights: Annotated[str, typer.Option(metavar="WEIGHTS",
        help="imagenet | auto | random | a state-dict file | a .pt2 exported program")]
        = "auto",
    arch: Annotated[str, typer.Option(metavar="ARCH",
        help="any torchvision classification model, or timm:NAME")] = "resnet18",
    classes: Annotated[Path | None, typer.Option(metavar="FILE",
        help="a checkpoint's class names, one a line")] = None,
    head: Annotated[str, typer.Option(metavar="HEAD", help="softmax | logits")] = "softmax",
    method: Annotated[list[str] | None, typer.Option(metavar="METHOD",
        help=f"repeatable: {', '.join(METHODS)}; default: {', '.join(DEFAULT_METHODS)}")]
        = None,
    n_steps: Annotated[int, typer.Option(metavar="N", help="path steps for the IG methods")] = 50,
    nt_samples: Annotated[int, typer.Option(metavar="N", help="SmoothGrad samples")] = 10,
    device: Annotated[str, typer.Option(metavar="DEVICE", help="auto | cpu | cuda")] = "auto",
    seed: Annotated[int, typer.Option(
        metavar="N", help="seed for random weights and SmoothGrad")] = 0,
) -> None:
    """One PNG for a few image files: per image, the photo and one heat map per method.

    Each row shows the image with its predicted class and probability, then one heat map per
    method, drawn as the contact sheets are: each map scaled to its own maximum and clipped
    at its 99th percentile, with a colour bar. Arguments are checked before any model loads.
    """
    from workflows.commands.explain_images import check_request, explain_images

    names = method or list(DEFAULT_METHODS)
    try:
        check_request(images, names, weights=weights, arch=arch, head=head, classes=classes,
                      n_steps=n_steps, nt_samples=nt_samples, device=device,
                      out_file=out_file)
        with make_reporter(console) as reporter:
            reporter.stage_start("explain", len(images), 0)
            calls = iter(range(1, len(images) * len(names) + 1))

            def advance(what: str) -> None:
                if next(calls) % len(names) == 0:  # an image has all its maps
                    reporter.advance("explain", 1)

            result = explain_images(images, out_file, weights=weights, head=head,
                                    methods=names, n_steps=n_steps, nt_samples=nt_samples,
                                    device=device, seed=seed, progress=advance, arch=arch,
                                    classes=classes)
            reporter.stage_end("explain")
    except KeyboardInterrupt:
        console.print("[bold yellow]Interrupted.[/] Nothing was written.")
        raise typer.Exit(130) from None
    except XaiError as exc:
        raise _fail(exc) from None
    for line in result.lines:
        out.print(line)
    if result.random_weights:
        out.print("[bold red]random weights: the maps say nothing about a real model[/]")
    out.print(f"wrote {out_file}")


@app.command(short_help="the known datasets and whether their images are there")
def datasets() -> None:
    """The datasets that `--dataset NAME` (and `make run DATASET=NAME`) knows."""
    from workflows.config.loading import available_datasets, config_dir, load_config

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("name", no_wrap=True)
    for col in ("layout", "root", "found", "weights", "methods"):
        table.add_column(col, no_wrap=col == "root")
    # Below the table, one line each: a narrow terminal squeezes columns to "r…".
    runs: list[str] = []
    for name in available_datasets():
        path = config_dir() / f"{name}.toml"
        try:
            cfg = load_config(path)
        except XaiError as exc:
            table.add_row(name, "[red]invalid[/]", str(exc)[:60], "", "", "")
            continue
        root = cfg.dataset.root
        found = "generated" if cfg.dataset.layout == "synthetic" else (
            "yes" if root and root.is_dir() else "[red]missing[/]")
        shown = root
        if root is not None and root.is_relative_to(Path.cwd()):
            shown = root.relative_to(Path.cwd())
        table.add_row(name, cfg.dataset.layout, str(shown or "-"), found, cfg.model.weights,
                      str(len(cfg.method_names)))
        last = _last_run(cfg.run_dir)
        if last:
            runs.append(f"{name}: {last}")
    out.print(table)
    for line in runs:
        out.print(line)


def _last_run(run_dir: Path) -> str:
    """What the run in ``run_dir`` used, from the store's attributes (read as JSON, fast);
    empty when there is no run."""
    import json

    try:
        attrs = json.loads((run_dir / "store.zarr" / "zarr.json").read_text())["attributes"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    where = escape(str(run_dir))
    if attrs.get("random_weights"):
        return (f"the run in {where} used [bold red]random weights[/] "
                f"({escape(str(attrs.get('weights_id', '')))}): its maps say nothing about a "
                "real model")
    return f"the run in {where} used {escape(str(attrs.get('weights_id', '?')))}"


weights_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                          help="The ImageNet checkpoint on machines without network.")
app.add_typer(weights_app, name="weights",
              short_help="the ImageNet checkpoint on machines without network")


@weights_app.command("import", short_help="check a downloaded checkpoint and cache it")
def weights_import(source: Annotated[Path, typer.Argument(
        metavar="FILE", show_default=False,
        help="the checkpoint torchvision publishes (resnet18-f37072fd.pth for resnet18), "
             "downloaded on a machine with network")],
                   arch: Annotated[str, typer.Option(
                       metavar="ARCH", help="the architecture it is for")] = "resnet18") -> None:
    """Check a downloaded ImageNet checkpoint against the hash torchvision publishes for it,
    and copy it into torch's cache, where `--weights imagenet` and `auto` find it."""
    from pipeline.models.architectures import check_arch
    from pipeline.models.checkpoints import import_weights

    try:
        if problem := check_arch(arch):
            raise ConfigError(f"--arch: {problem}")
        dest = import_weights(source, arch)
    except XaiError as exc:
        raise _fail(exc) from None
    out.print(f"imported {source} -> {dest}")
    out.print(f"runs of {arch} with --weights imagenet or auto now use the ImageNet weights")


@weights_app.command("status", short_help="where the checkpoint is looked for, and if it is there")
def weights_status(arch: Annotated[str, typer.Option(
        metavar="ARCH", help="the architecture whose checkpoint to look for")]
        = "resnet18") -> None:
    """Where the ImageNet checkpoint is looked for, whether it is there, and whether a failed
    download is remembered (auto does not retry the network until then)."""
    from pipeline.models.architectures import check_arch
    from pipeline.models.checkpoints import cache_path, published, recent_failure

    if problem := check_arch(arch):
        raise _fail(f"--arch: {problem}")
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


#: Entry-point group of commands that live outside the package (``xai bench``: the
#: benchmarks of a source checkout). Each entry is ``register(app)``, adding its commands.
COMMANDS_GROUP = "xai.commands"


def _plugin_commands() -> None:
    """Add the commands of the ``xai.commands`` entry points; one whose module is not there
    (an installed wheel has no ``benchmarks/``) becomes a command that says so."""
    import importlib.metadata

    for entry in importlib.metadata.entry_points(group=COMMANDS_GROUP):
        try:
            entry.load()(app)
        except ImportError as exc:
            _missing_command(entry.name, entry.value, exc)


def _missing_command(name: str, where: str, exc: ImportError) -> None:
    def missing() -> None:
        raise _fail(f"Expected {where} for `xai {name}`, got {exc}. It comes with a source "
                    "checkout of the project (a clone of the repository), not with the "
                    "installed package.")

    app.command(name, help=f"(not available here: {where} is missing)")(missing)


_plugin_commands()


def exit_code(exc: SystemExit) -> int:
    """The process exit status of a ``SystemExit`` (``None``: 0; a message: printed, 1)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def exit_now(code: int) -> None:
    """End the process once the command is done, without the interpreter's teardown.

    Freeing torch's and the other modules' objects at exit took 1.3 s for a bare torch script
    and 2.5 s after a 2,000-image run (``docs/benchmarks.md``), after every file was written:
    time a user waits for nothing, which made the printed "whole run" time short of the
    process's. What the normal exit does first still happens, in its order: non-daemon
    threads are joined (with the executors' own exit hooks), the ``atexit`` handlers run and
    the streams are flushed. Only the final freeing is skipped (the OS frees the memory).
    A Ctrl-C during these steps ends the process at once with 130, without a traceback
    from whichever handler it interrupted (the command itself is already over).
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: os._exit(130))
    shutdown = getattr(threading, "_shutdown", None)  # joins non-daemon threads, as at exit
    if shutdown is not None:
        shutdown()
    else:  # pragma: no cover - every CPython we support has it
        for t in threading.enumerate():
            if t is not threading.main_thread() and not t.daemon:
                t.join()
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def main() -> None:  # pragma: no cover - entry point
    os.environ.setdefault("MPLBACKEND", "Agg")
    t0 = time.perf_counter()
    code = 0
    try:
        app()
    except SystemExit as exc:
        code = exit_code(exc)
    finally:
        if os.environ.get("XAI_TIMING"):
            print(f"xai: {time.perf_counter() - t0:.2f}s", file=sys.stderr)
    exit_now(code)
