"""``summary.html``: which method to trust first (the methods × metrics overview, the
signed-map caveat, the sanity check), then the run's facts, package versions, stage timings,
completeness, every metric in detail, plots and the skipped images.

This module turns the run's plain data into what the templates ``summary.html`` and
``trust.html`` show (formatted numbers, classes, marks); the HTML is theirs, every value
escaped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.report.templating import counted, macro, render
from pipeline.report.verdicts import (
    SANITY_THRESHOLD,
    Verdict,
    arrow,
    beats_floor,
    best_methods,
    group_words,
    sanity_verdicts,
    sign_caveat,
    stat,
)

#: Skipped images listed on the page (the rest are counted).
SKIPPED_SHOWN = 500


def fmt(v: Any, digits: int = 4) -> str:
    """A value for a table cell: ``—`` for none, floats to ``digits`` significant digits."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


@dataclass(frozen=True)
class StatCell:
    """A statistic's table cell: its mean and 95% interval (3 significant digits), the
    images it is over (``n``), CSS ``classes``, a ``mark`` before it and a ``title``."""

    mean: str
    low: str
    high: str
    n: Any
    classes: str = ""
    mark: str = ""
    title: str = ""


def stat_cell(b: Mapping[str, Any] | None, classes: Sequence[str] = (), mark: str = "",
              title: str = "") -> StatCell | None:
    """The cell of statistic ``b`` (``mean``, ``low``, ``high``, ``n``); None where it has
    no mean (the page shows a dash)."""
    s = stat(b)
    if s is None:
        return None
    mean, low, high = s
    return StatCell(f"{mean:.3g}", f"{low:.3g}", f"{high:.3g}", (b or {}).get("n"),
                    " ".join(classes), mark, title)


@dataclass(frozen=True)
class MetricHeader:
    """A metric's column: its name, description, direction and the direction's arrow."""

    name: str
    description: str
    better: str
    arrow: str


@dataclass(frozen=True)
class OverviewRow:
    """A method's row: how its maps treat sign, and a cell per metric."""

    method: str
    sign: str
    cells: list[StatCell | None]


@dataclass(frozen=True)
class Overview:
    """The methods × metrics table: columns, a row per method, the random floor's row, and
    the sanity check's verdict per method (empty: no verdict column)."""

    metrics: list[MetricHeader]
    rows: list[OverviewRow]
    floor: list[StatCell | None]
    verdicts: Mapping[str, Verdict] = field(default_factory=dict)


def overview(evaluation: Mapping[str, Any], signs: Mapping[str, str],
             verdicts: Mapping[str, Verdict]) -> Overview:
    """The overview's contents (see :func:`overview_table`)."""
    metrics = evaluation["metrics"]
    methods = list(dict.fromkeys(m for e in metrics.values() for m in e["methods"]))
    best = {name: best_methods({m: stat(e["methods"].get(m)) for m in methods},
                               e["better"] == "higher") for name, e in metrics.items()}
    rows = []
    for m in methods:
        cells = []
        for name, entry in metrics.items():
            higher = entry["better"] == "higher"
            b = entry["methods"].get(m)
            s = stat(b)
            classes, mark, title = [], "", ""
            if s is not None and m in best[name]:
                classes.append("best")
                mark, title = "★ ", f"best {name} of the methods ({entry['better']} is better)"
            if s is not None and not beats_floor(s, stat(entry["random"]), higher):
                classes.append("chance")
                title = ((title + "; " if title else "")
                         + "does not beat the random floor's 95% interval")
            cells.append(stat_cell(b, classes, mark, title))
        rows.append(OverviewRow(m, signs.get(m, "—"), cells))
    headers = [MetricHeader(name, entry.get("description", ""), entry["better"],
                            arrow(entry["better"])) for name, entry in metrics.items()]
    floor = [stat_cell(e["random"], ["floor"]) for e in metrics.values()]
    return Overview(headers, rows, floor, verdicts)


def overview_table(evaluation: Mapping[str, Any], signs: Mapping[str, str],
                   verdicts: Mapping[str, Verdict]) -> str:
    """The methods × metrics table: per method (and the random floor, its own row) each
    metric's mean with its 95% interval; the best mean per column marked (``class=best``,
    ★), means inside the floor's interval muted (``class=chance``); the map's sign and the
    sanity check's verdict per method.

    Parameters
    ----------
    evaluation
        The evaluation summary: ``metrics[name]`` with ``better``, ``description``,
        ``methods[method]`` and ``random`` (``mean``, ``low``, ``high``, ``n``).
    signs
        Per method, how its maps treat negative attribution
        (:func:`pipeline.report.verdicts.sign_caveat`).
    verdicts
        Per method, the sanity check (:func:`pipeline.report.verdicts.sanity_verdicts`);
        empty: no column.
    """
    return str(macro("trust.html", "overview_table")(overview(evaluation, signs, verdicts)))


@dataclass(frozen=True)
class SanityTable:
    """The randomisation test's table: the layer groups in words, top-down, and per method
    a cell per group."""

    groups: list[str]
    rows: list[tuple[str, list[StatCell | None]]]


def sanity_table(evaluation: Mapping[str, Any], threshold: float) -> SanityTable:
    """Per method, the correlation after each layer group is randomised; cells below
    ``threshold`` (in ``|ρ|``) marked ``changed``."""
    randomisation = evaluation.get("randomisation") or {}
    groups = list(dict.fromkeys(g for curve in randomisation.values() for g in curve))
    rows = []
    for m, curve in randomisation.items():
        cells = []
        for g in groups:
            b = curve.get(g)
            s = stat(b)
            cells.append(stat_cell(b, ["changed"] if s is not None and abs(s[0]) < threshold
                                   else []))
        rows.append((m, cells))
    return SanityTable([group_words(g) for g in groups], rows)


@dataclass(frozen=True)
class Trust:
    """The summary's first sections: the overview, the caveat, the evaluation's notes, and
    the sanity check (its line as text, its figure, its table)."""

    overview: Overview
    caveat: str | None
    notes: list[str]
    threshold: str
    sanity_plot: str | None
    sanity: SanityTable


def trust(evaluation: Mapping[str, Any], signs: Mapping[str, str],
          sanity_plot: str | None = None, threshold: float = SANITY_THRESHOLD
          ) -> Trust | None:
    """What the summary page says first: the methods × metrics overview, the signed-map
    caveat, and the sanity section (the randomisation curves and one verdict per method).

    Parameters
    ----------
    evaluation
        The evaluation summary (empty: the run was not evaluated, and the result is None;
        the page says how to evaluate it).
    signs
        Per method, ``"signed"``, ``"absolute"`` or ``"non-negative"``.
    sanity_plot
        The randomisation curves' figure, relative to the report folder.
    threshold
        The sanity check's line (:data:`pipeline.report.verdicts.SANITY_THRESHOLD`).
    """
    if not evaluation.get("metrics"):
        return None
    verdicts = sanity_verdicts(evaluation, threshold)
    return Trust(overview(evaluation, signs, verdicts), sign_caveat(signs),
                 [str(n) for n in evaluation.get("notes", [])], f"{threshold:g}", sanity_plot,
                 sanity_table(evaluation, threshold))


def timings(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Per stage, the figures of the last run that computed it: busy seconds (the tasks'
    own work) with img/s from them, the span, and when that run was; with a sentence on the
    command's wall time (``wall``) and whether it recomputed nothing (``recomputed``).

    ``summary`` is ``summary.json``'s content; a report built inside a run (before that run
    has written it) gives the run's wall time so far as ``seconds_when_built`` instead of
    ``seconds``."""
    def busy(s: Mapping[str, Any]) -> Any:  # summary.json of an older run: span only
        return s.get("busy_seconds", s.get("seconds"))

    rows = [(s["stage"], f"{s['units_run']}/{s['units_total']}", s["images"],
             fmt(busy(s)), fmt(s.get("img_per_s")), fmt(s.get("span_seconds")),
             "" if s.get("device_idle") is None else f"{100 * s['device_idle']:.0f}%",
             s.get("computed_by_run", ""), ", ".join(s.get("workers") or ()))
            for s in summary["stages"]]
    runs = summary.get("history") or []
    last = runs[-1] if runs else {}
    did = sum((last.get("units_run") or {}).values()) if last else None
    nothing = did is not None and did == 0
    return {"rows": rows, "wall": wall_time(summary),
            "recomputed": " This command recomputed nothing: the figures are those of the "
                          "runs that did the work." if nothing else ""}


def wall_time(summary: Mapping[str, Any]) -> str:
    """The sentence on the wall time of the run that built the page (or, for a report built
    on its own, of the last run): never a figure the run had not reached yet."""
    so_far = summary.get("seconds_when_built")
    if so_far is not None:
        return (f"This command had run for {fmt(so_far)} s of wall time when it built this "
                "report (its total is in summary.json).")
    seconds = summary.get("seconds")
    if not seconds:
        return "The command's wall time is not known yet."
    when = summary.get("run_at")
    return f"The run{f' of {when}' if when else ''} took {fmt(seconds)} s of wall time."


def evaluation_rows(evaluation: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Every metric's statistics per method and for the random maps:
    ``(metric, better, method, "mean [low, high]", images)``."""
    rows = []
    for name, entry in (evaluation.get("metrics") or {}).items():
        for m, b in [*entry["methods"].items(), ("random maps", entry["random"])]:
            ci = "—" if b["mean"] is None else \
                f"{b['mean']:.4g} [{b['low']:.4g}, {b['high']:.4g}]"
            rows.append((name, entry["better"], m, ci, b["n"]))
    return rows


def completeness_rows(summary: Mapping[str, Any] | None) -> list[tuple[Any, ...]]:
    """Per IG method, its completeness errors: ``(method, images, median, worst, worst
    image, images above the warning)``; a method whose every gap F(x) - F(baseline) is zero
    says its error is undefined."""
    return [(c["method"], c["images"], f"{100 * c['median']:.3g}%",
             f"{100 * c['worst']:.3g}%", c["worst_image"], len(c["flagged"]))
            if c.get("median") is not None else
            (c["method"], 0, "undefined: F(x) = F(baseline) for "
             f"{counted(c.get('zero_gap', 0), 'image')}", "—", "—", 0)
            for c in (summary or {}).get("completeness") or []]


def summary_page(title: str, facts: Sequence[tuple[str, Any]], versions: Mapping[str, str],
                 summary: Mapping[str, Any] | None, evaluation: Mapping[str, Any],
                 notes: Sequence[str], plots: Sequence[str],
                 skipped: Sequence[tuple[str, str]], signs: Mapping[str, str] | None = None,
                 sanity_plot: str | None = None,
                 comparisons: Sequence[tuple[str, str]] = ()) -> str:
    """``summary.html``: which method to trust first (:func:`trust`: the methods × metrics
    overview, the signed-map caveat, the sanity check), then run facts, package versions,
    stage timings, completeness, every metric in detail, plots and the skipped images.

    Parameters
    ----------
    facts
        ``(name, value)`` rows of the run table.
    summary
        The run's ``summary.json`` (stage timings, completeness), or None.
    evaluation
        The evaluation summary (empty: no evaluation).
    plots
        Relative paths of the plot images, shown in this order.
    signs
        Per method, ``"signed"``, ``"absolute"`` or ``"non-negative"`` (None: unknown).
    sanity_plot
        The randomisation curves' figure (relative path), shown in the sanity section.
    comparisons
        ``(href, text)`` of the comparisons made from this run (``xai compare``).
    """
    return render(
        "summary.html", title=f"{title}: summary", current="summary.html", notes=notes,
        trust=trust(evaluation, signs or {}, sanity_plot), facts=facts,
        versions=sorted(versions.items()),
        timings=timings(summary) if summary and summary.get("stages") else None,
        completeness=completeness_rows(summary), evaluation=evaluation_rows(evaluation),
        plots=[(p, Path(p).stem) for p in plots], skipped=skipped[:SKIPPED_SHOWN],
        skipped_count=len(skipped), comparisons=comparisons)
