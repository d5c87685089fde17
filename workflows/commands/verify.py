"""``xai verify``: finished units re-read against their records' checksums, and what it
prints."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from pipeline.store.access import open_store
from pipeline.store.arrays import array
from pipeline.store.view import StoreView
from workflows.config.run_config import Config
from workflows.runner.completion_records import Records
from workflows.runner.run_lock import RunLock
from workflows.runner.run_summary import Reporter, SilentReporter
from workflows.runner.stage_api import Unit, unit_checksum
from workflows.runner.stage_registry import StageRegistry, hash_key

#: Units checked at once: reading chunks and their CRCs overlap across threads (zlib and the
#: codecs release the GIL).
THREADS: int = 4
#: Pooled chunks (256 shards of a small array each) a thread keeps decoded: the units of
#: consecutive shards read one chunk, decoded once (docs/performance.md, "ImageNet scale").
CACHED_CHUNKS: int = 64


@dataclass
class VerifyReport:
    #: Units re-read (all finished ones, or the sample).
    checked: int
    damaged: list[tuple[str, int, str]]
    repaired: bool
    #: Finished units in the run (``checked`` is fewer when sampled).
    finished: int = 0


def verify(cfg: Config, repair: bool = True, registry: StageRegistry | None = None,
           sample: int | None = None, reporter: Reporter | None = None,
           seed: int | None = None) -> VerifyReport:
    """Re-read every finished unit (store region or output file) against its record.

    A deleted or damaged chunk, sheet or record is reported; with ``repair`` its record is
    dropped so that the next ``xai run`` recomputes exactly that unit. ``sample`` checks
    that many finished units drawn at random (``seed`` fixes the draw). Progress goes to
    ``reporter`` as a ``verify`` stage counted in units. Only the checked units' chunks are
    read.
    """
    from workflows.stages import REGISTRY

    reg = registry or REGISTRY
    rep = reporter or SilentReporter()
    run_dir = cfg.run_dir
    store_path = run_dir / "store.zarr"
    open_store(store_path, mode="r")  # fail clearly before RunLock creates the run folder
    with RunLock(run_dir):
        group = open_store(store_path, mode="r")
        n = array(group, "image").shape[0]
        hashes = group.attrs.get("stage_hashes", {})
        records = Records(run_dir)
        finished = []
        for unit in reg.all_units(n, cfg):
            rec = records.get(unit.key)
            if rec is not None and rec.get("hash") == hashes.get(hash_key(unit.stage,
                                                                          unit.method)):
                finished.append((unit, rec))
        todo = finished
        if sample is not None and sample < len(finished):
            todo = sorted(random.Random(seed).sample(finished, sample),
                          key=lambda ur: finished.index(ur))
        damaged = _check(reg, cfg, todo, rep)
        if repair and damaged:
            records.drop(*(unit.key for unit, _ in damaged))
    return VerifyReport(len(todo), [(hash_key(u.stage, u.method), u.index, what)
                                    for u, what in damaged], repair, len(finished))


def _check(reg: StageRegistry, cfg: Config, todo: list[tuple[Unit, dict[str, Any]]],
           rep: Reporter) -> list[tuple[Unit, str]]:
    """The damaged units of ``todo``, in its order, with what is wrong."""
    store_path, run_dir = cfg.run_dir / "store.zarr", cfg.run_dir
    local = threading.local()

    def one(item: tuple[Unit, dict[str, Any]]) -> str | None:
        unit, rec = item
        if not hasattr(local, "view"):  # one handle per thread: metadata read once
            local.view = StoreView(store_path, mode="r", cache_pooled=CACHED_CHUNKS)
        try:
            actual = unit_checksum(reg[unit.stage], store_path, run_dir, unit, local.view)
        except Exception as exc:  # an unreadable chunk is damage, not a crash
            actual = f"unreadable ({type(exc).__name__})"
        if actual == rec.get("checksum"):
            return None
        return "file missing" if actual == "missing" else (
            f"data differs from its record ({actual} != {rec.get('checksum')})")

    rep.stage_start("verify", len(todo), 0)
    damaged = []
    with ThreadPoolExecutor(THREADS) as pool:
        for (unit, _), what in zip(todo, pool.map(one, todo), strict=True):
            rep.advance("verify", 1)
            if what is not None:
                damaged.append((unit, what))
    rep.stage_end("verify")
    return damaged


def print_verify_report(out: Console, report: VerifyReport, run_dir: Path) -> None:
    """What ``xai verify`` prints: how many shards were checked (of how many, when drawn at
    random), then that all matches or each damaged shard and what to run."""
    drawn = f" (drawn at random of {report.finished})" if report.checked < report.finished \
        else ""
    out.print(f"checked {report.checked} finished shards and sheets{drawn} in {run_dir}")
    if not report.damaged:
        out.print("[green]all data matches its records[/]")
        return
    for stage, index, what in report.damaged:
        out.print(f"  [red]damaged[/] {stage} shard {index}: {what}")
    if report.repaired:
        out.print("their records were dropped: run `xai run` (same options) to recompute "
                  "exactly these shards")
