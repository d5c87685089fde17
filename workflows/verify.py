"""``xai verify``: every finished unit re-read against its record's checksum."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.store import array, open_store
from workflows.config import Config
from workflows.plan import Registry, hash_key
from workflows.plugin import unit_checksum
from workflows.state import Records, RunLock


@dataclass
class VerifyReport:
    checked: int
    damaged: list[tuple[str, int, str]]
    repaired: bool


def verify(cfg: Config, repair: bool = True, registry: Registry | None = None) -> VerifyReport:
    """Re-read every finished unit (store region or output file) against its record.

    A deleted or damaged chunk, sheet or record is reported; with ``repair`` its record is
    dropped so that the next ``xai run`` recomputes exactly that unit.
    """
    from workflows.stages import REGISTRY

    reg = registry or REGISTRY
    run_dir = cfg.run_dir
    store_path = run_dir / "store.zarr"
    open_store(store_path, mode="r")  # fail clearly before RunLock creates the run folder
    with RunLock(run_dir):
        group = open_store(store_path, mode="r")
        n = array(group, "image").shape[0]
        hashes = group.attrs.get("stage_hashes", {})
        records = Records(run_dir)
        damaged: list[tuple[str, int, str]] = []
        checked = 0
        for unit in reg.all_units(n, cfg):
            rec = records.get(unit.key)
            if rec is None or rec.get("hash") != hashes.get(hash_key(unit.stage, unit.method)):
                continue
            checked += 1
            try:
                actual = unit_checksum(reg[unit.stage], store_path, run_dir, unit)
            except Exception as exc:  # an unreadable chunk is damage, not a crash
                actual = f"unreadable ({type(exc).__name__})"
            if actual != rec.get("checksum"):
                what = "file missing" if actual == "missing" else (
                    f"data differs from its record ({actual} != {rec.get('checksum')})")
                damaged.append((hash_key(unit.stage, unit.method), unit.index, what))
                if repair:
                    records.drop(unit.key)
    return VerifyReport(checked, damaged, repair)
