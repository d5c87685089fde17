"""``xai status``: per stage (and method), how many images are done, stale or pending, and
whether a run is in progress; and the table it prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pipeline.store.access import explainers, open_store
from pipeline.store.arrays import array
from workflows.commands.summary_tables import print_completeness, print_degenerate
from workflows.config.run_config import Config
from workflows.runner.completion_records import Records
from workflows.runner.run_lock import RunLock
from workflows.runner.run_summary import (
    Completeness,
    completeness_from_records,
    completeness_summary,
    skipped_from_records,
    skipped_images,
)
from workflows.runner.stage_registry import StageRegistry
from workflows.runner.store_lifecycle import config_changes, expected_weights_id


@dataclass
class StageStatus:
    """One stage (and method): images whose units are done, of the total, and images whose
    records are stale (made under other settings). Images, as the progress bars count."""

    stage: str
    method: str | None
    done: int
    total: int
    stale: int


@dataclass
class RunStatus:
    run_dir: Path
    exists: bool
    stages: list[StageStatus]
    images: int
    skipped: list[tuple[str, str]]
    notes: list[str]
    completeness: list[Completeness] = field(default_factory=list)
    random_weights: bool = False
    weights_id: str = ""
    #: The run holding the lock now (``pid``, ``host``, ``started``), or None.
    running: dict[str, str] | None = None
    #: Degenerate output the last run's summary found (``summary.json``'s ``degenerate``).
    degenerate: list[dict[str, Any]] = field(default_factory=list)


def run_status(cfg: Config, registry: StageRegistry | None = None) -> RunStatus:
    """Per stage, and per method for method stages: units done, total, and made stale.

    Everything comes from the records (a few log files) and the store's metadata; the only
    chunks read are the image ids of the worst and flagged images' shards. Records written
    before they kept skipped images and completeness fall back to reading the arrays."""
    from workflows.stages import REGISTRY

    reg = registry or REGISTRY
    run_dir = cfg.run_dir
    store_path = run_dir / "store.zarr"
    running = RunLock(run_dir).holder()
    if not (store_path / "zarr.json").is_file():
        return RunStatus(run_dir, False, [], 0, [], ["no run yet: `xai run` starts one"],
                         running=running)
    group = open_store(store_path, mode="r")
    n = array(group, "image").shape[0]
    hashes = reg.hashes(cfg, expected_weights_id(cfg))
    records = Records(run_dir)
    notes = []
    rows = []
    for stage in reg:
        units = reg.units(stage, n, cfg)
        for method in stage.methods(cfg):
            mine = [u for u in units if u.method == method]
            done = stale = 0
            for u in mine:
                rec = records.get(u.key)
                if rec is None:
                    continue
                if rec.get("hash") == hashes[(stage.name, method)]:
                    done += u.size
                else:
                    stale += u.size
            rows.append(StageStatus(stage.name, method, done, sum(u.size for u in mine),
                                    stale))
    first_stale = next((s for s in rows if s.stale), None)
    if first_stale:
        changed = config_changes(group.attrs.get("config", {}), cfg.to_dict())
        why = f" ({'; '.join(changed)})" if changed else ""
        what = first_stale.stage + (f" of {first_stale.method}" if first_stale.method else "")
        notes.append(f"config changed since the last run{why}: {what} and the stages "
                     "after it will be recomputed")
    new = [m for m in cfg.method_names if m not in explainers(group)]
    if new:
        notes.append(f"new methods, computed on the next run (and only they): {', '.join(new)}")
    skipped = completeness = None
    stored = [m for m in cfg.method_names if m in explainers(group)]
    for stage in reg:
        units = reg.units(stage, n, cfg)
        if "skipped" in stage.record_facts and skipped is None:
            skipped = skipped_from_records(records, units, cfg.run.target)
        if "completeness" in stage.record_facts and completeness is None:
            completeness = completeness_from_records(group, records, units, stored,
                                                     cfg.run.completeness_warning)
    if skipped is None:  # records from before they listed them: read the store
        skipped = [(i, why) for i, why in skipped_images(group, cfg.run.target) if why]
    if completeness is None:
        completeness = completeness_summary(group, stored, cfg.run.completeness_warning)
    return RunStatus(run_dir, True, rows, n, skipped, notes, completeness,
                     bool(group.attrs.get("random_weights", False)),
                     str(group.attrs.get("weights_id", "")), running,
                     last_degenerate(run_dir))


def last_degenerate(run_dir: Path) -> list[dict[str, Any]]:
    """The degenerate output the last run's ``summary.json`` recorded (empty: none, or no
    summary yet)."""
    import json

    try:
        found = json.loads((run_dir / "summary.json").read_text()).get("degenerate")
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in found if isinstance(f, dict)] if isinstance(found, list) else []


def print_status(out: Console, st: RunStatus, registry: StageRegistry | None = None) -> None:
    """What ``xai status`` prints: the run folder, a run in progress, and per stage (and
    method) the images done of the total, made stale, and the stage's state; then the
    skipped images, the notes and the completeness table (20 flagged images listed)."""
    from workflows.stages import REGISTRY

    reg = registry or REGISTRY
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
    print_degenerate(out, st.degenerate)
    table = Table()
    for col in ("stage", "explainer", "images done", "of", "stale", "state"):
        table.add_column(col)
    for s in st.stages:
        shared = reg[s.stage].shared_label if s.method is None and reg[s.stage].per_method \
            else ""
        table.add_row(s.stage, s.method or shared, str(s.done), str(s.total), str(s.stale),
                      stage_state(s))
    out.print(table)
    out.print(f"images: {st.images}, skipped: {len(st.skipped)}")
    for image_id, reason in st.skipped:
        out.print(f"  {image_id}: {reason}")
    for note in st.notes:
        out.print(f"[yellow]{note}[/]")
    print_completeness(out, st.completeness, limit=20)


def stage_state(s: StageStatus) -> str:
    """``done`` (every image), ``stale`` (some made under other settings), ``partial`` (some
    done) or ``pending`` (none)."""
    if s.done == s.total:
        return "done"
    return "stale" if s.stale else "partial" if s.done else "pending"
