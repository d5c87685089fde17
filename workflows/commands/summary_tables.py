"""What ``xai run``, ``xai evaluate`` and ``xai report`` print about a run: the per-stage
summary, the evaluation and completeness tables, and where the report is.

Each function prints to the console it is given (the CLI's standard output); nothing here
computes a number: the run's summary and the evaluate and report stages did.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.report.templating import counted
from workflows.runner.run_summary import Completeness, RunSummary

#: Skipped images listed by name under the run summary; ``xai status`` lists them all.
SKIPPED_LISTED: int = 20


def print_report_location(out: Console, run_dir: Path, facts: dict[str, Any] | None) -> None:
    """Where the report is and how long it took, the planted shortcut's cluster purity per
    method, and the stages it is missing (``facts``: the report stage's outputs)."""
    if not facts:
        return
    out.print(f"report: {run_dir / 'report' / 'index.html'} (built in {facts['seconds']:.1f}s"
              f"; open it from the disk, no server needed)")
    for m, p in (facts.get("shortcut_purity") or {}).items():
        out.print(f"  planted shortcut: cluster purity {p:.3f} with {m}")
    if facts.get("missing"):
        out.print("[yellow]  stages missing[/]: " + "; ".join(facts["missing"]))


def print_run_summary(out: Console, summary: RunSummary) -> None:
    """The table of stages (units, images, busy and span seconds, device idle, workers), then
    the run's images, files, accuracy, engine, completeness, evaluation and report."""
    out.print(_stage_table(summary))
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
    for image_id, reason in summary.skipped[:SKIPPED_LISTED]:
        out.print(f"  [yellow]skipped[/] {image_id}: {reason}")
    if len(summary.skipped) > SKIPPED_LISTED:
        out.print(f"  ... and {len(summary.skipped) - SKIPPED_LISTED} more (see `xai status`)")
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
    print_completeness(out, summary.completeness, limit=0)
    print_evaluation(out, summary.outputs.get("evaluate"), summary.run_dir)
    print_report_location(out, summary.run_dir, summary.outputs.get("report"))
    if summary.random_weights:
        out.print("[bold red]random weights: the attributions say nothing about a real "
                  "model[/]")
    print_degenerate(out, summary.degenerate)


def print_degenerate(out: Console, findings: Sequence[dict[str, Any]]) -> None:
    """Each degenerate-output finding (``summary.json``'s ``degenerate``), in bold red."""
    for f in findings:
        out.print(f"[bold red]{escape(str(f.get('message', '')))}[/]")


def _stage_table(summary: RunSummary) -> Table:
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
    return table


def print_evaluation(out: Console, ev: dict[str, Any] | None, run_dir: Path) -> None:
    """Per metric (its direction) and method: mean and 95% bootstrap interval, with the
    random maps' row; the randomisation table; the evaluation's notes and files."""
    if not ev:
        return
    if ev["metrics"]:
        out.print(_metric_table(ev["metrics"]))
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


def _metric_table(metrics: dict[str, Any]) -> Table:
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
    return table


def print_completeness(out: Console, rows: Sequence[Completeness], limit: int) -> None:
    """Per IG method: median and worst relative completeness error, and the images above the
    threshold (up to ``limit`` of them listed by name)."""
    if not rows:
        return
    table = Table(title="completeness |sum(A) - (F(x) - F(baseline))| / |F(x) - F(baseline)|",
                  title_justify="left")
    for col in ("explainer", "images", "median", "worst", "worst image", "above"):
        table.add_column(col, justify="left" if col in ("explainer", "worst image") else "right")
    for c in rows:
        if not c.images:
            table.add_row(c.method, "0", "undefined", "-", "-", "-")
            continue
        style = "yellow" if c.flagged else ""
        table.add_row(c.method, str(c.images), f"{100 * c.median:.2f}%",
                      f"{100 * c.worst:.2f}%", c.worst_image,
                      f"[{style}]{len(c.flagged)}[/]" if style else "0")
    out.print(table)
    for c in rows:
        if c.zero_gap:  # beside the table: a cell this long would wrap
            out.print(f"[yellow]{c.method}: {undefined_errors(c.zero_gap)}[/]")
    for c in rows:
        if c.adaptive:
            out.print(_adaptive_line(c.method, c.adaptive))
    flagged = [c for c in rows if c.flagged]
    if flagged:
        threshold = flagged[0].threshold
        missed = sum(len(c.flagged) for c in flagged)
        out.print(f"[yellow]{counted(missed, 'map')} {'misses' if missed == 1 else 'miss'} "
                  "completeness by "
                  f"more than {100 * threshold:g}% (\\[run] completeness_warning)[/]")
        for c in flagged:
            out.print(f"  {c.method}: {escape(incomplete_hint(c.method))}")
        for c in flagged:
            for image, rel in c.flagged[:limit]:
                out.print(f"  {c.method} {image}: {100 * rel:.1f}%")
            if len(c.flagged) > limit > 0:
                out.print(f"  ... {c.method}: {len(c.flagged) - limit} more")


def undefined_errors(images: int) -> str:
    """The images whose relative completeness error is undefined, in words."""
    return f"undefined: F(x) = F(baseline) for {images} image{'' if images == 1 else 's'}"


def _adaptive_line(method: str, a: dict[str, Any]) -> str:
    """Adaptive IG's path points per image and median residual, in one line."""
    res = "-" if a["residual_median"] is None else f"{100 * a['residual_median']:.2f}%"
    return (f"{method} (adaptive): path points per image median "
            f"{a['steps_median']:g}, 90th percentile {a['steps_p90']:g}, max "
            f"{a['steps_max']}; median residual {res}"
            + (f"; {a['zero_gap']} images with F(x) = F(baseline) stopped at the "
               "starting grid (residual NaN)" if a["zero_gap"] else ""))


def incomplete_hint(method: str) -> str:
    """What to change when ``method``'s maps miss completeness (its registry entry says)."""
    from pipeline.attribution.method_registry import METHODS

    spec = METHODS.get(method)
    return spec.incomplete_hint if spec is not None else ""
