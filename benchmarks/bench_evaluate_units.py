"""What changing one method's parameters costs the evaluate stage: its units are per (method,
shard), with one shared unit per shard for the random floor, so the change re-evaluates that
method's units alone. The baseline, measured in the same process on the same upstream maps,
is re-evaluating every method and the floor after the same change (``--force evaluate``: what
a stage that evaluates all methods at once must do), and the two must store the same numbers.

On a synthetic ``evidence`` run (its shipped config: every method, all metrics), CPU,
``--scheduler synchronous``; evaluate units only, their seconds summed from the records:

1. a full evaluation (forced);
2. ``methods.integrated_gradients.n_steps=16``: only IG's units rerun;
3. the baseline: the same change with every evaluate unit forced, on a copy of the run;
4. a rerun with nothing to do.

usage: .venv/bin/python -m benchmarks.bench_evaluate_units [COUNT] [SHARD] [--reuse]
(defaults 16 images in shards of 8; ``--reuse`` keeps the upstream maps of the last call;
$XAI_BENCH_DIR is the work folder, /tmp/eval_bench by default).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: The change measured: one method's parameter.
CHANGE = "methods.integrated_gradients.n_steps=16"


def cpu_seconds() -> float:
    """User and system CPU seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def metered_registry(cpu: list[float]) -> Any:
    """The stages, with the evaluate stage's CPU seconds per task appended to ``cpu``."""
    from workflows.runner.stage_registry import StageRegistry
    from workflows.stages import STAGES

    reg = StageRegistry([type(s)() for s in STAGES])
    stage = reg["evaluate"]
    run: Callable[[Any], Any] = stage.run

    def metered(task: Any) -> Any:
        c0 = cpu_seconds()
        try:
            return run(task)
        finally:
            cpu.append(cpu_seconds() - c0)

    stage.run = metered  # type: ignore[method-assign]
    return reg


def evaluate_units(run_dir: Path, since: float) -> tuple[int, float]:
    """Evaluate units recorded since ``since``: how many, and the seconds they ran."""
    from workflows.runner.completion_records import Records

    records = Records(run_dir)
    n, busy = 0, 0.0
    for folder in records.folders("evaluate"):
        for rec in records.entries(folder).values():
            if rec["finished"] >= since:
                n += 1
                busy += rec["ended"] - rec["started"]
    return n, busy


def evaluation_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    """Every array the evaluate stage stores, by name."""
    import zarr

    group = zarr.open_group(str(run_dir / "store.zarr"), mode="r")
    return {k: np.asarray(group[k][:]) for k in sorted(group.array_keys())
            if k.startswith(("metric_", "random_", "curve_", "randomisation"))}


def same_numbers(a: Path, b: Path) -> str:
    """``bit-identical``, or the largest absolute difference between the two runs' arrays."""
    x, y = evaluation_arrays(a), evaluation_arrays(b)
    assert x.keys() == y.keys(), (x.keys(), y.keys())
    worst, exact = 0.0, True
    for k in x:
        if not np.array_equal(x[k], y[k], equal_nan=True):
            exact = False
            assert np.array_equal(np.isnan(x[k]), np.isnan(y[k])), k
            finite = np.isfinite(x[k])
            worst = max(worst, float(np.max(np.abs(x[k][finite] - y[k][finite]))))
    return "bit-identical" if exact else f"max abs difference {worst:.3g}"


def main() -> None:  # pragma: no cover - a measurement script
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("count", type=int, nargs="?", default=16)
    parser.add_argument("shard", type=int, nargs="?", default=8)
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    work = Path(os.environ.get("XAI_BENCH_DIR", "/tmp/eval_bench"))
    os.environ.setdefault("XAI_CACHE_DIR", str(work / "cache"))

    from workflows.config.loading import load_config
    from workflows.runner.run import run_pipeline

    sets = [f"dataset.count={args.count}", f"run.shard_size={args.shard}",
            "model.train_images=256", "model.val_images=64", "run.device=cpu",
            "report.enabled=false"]
    cpu: list[float] = []
    reg = metered_registry(cpu)

    def config(out: Path, extra: tuple[str, ...] = ()) -> Any:
        return load_config(ROOT / "configs" / "evidence.toml", [*sets, *extra], out=out)

    def timed(case: str, out: Path, extra: tuple[str, ...] = (),
              force: str | None = None) -> dict[str, Any]:
        cfg = config(out, extra)
        t0 = time.time()
        cpu.clear()
        run_pipeline(cfg, scheduler="synchronous", registry=reg, force=force)
        units, busy = evaluate_units(cfg.run_dir, t0)
        row = {"case": case, "evaluate_units": units, "evaluate_seconds": round(busy, 2),
               "evaluate_cpu_seconds": round(sum(cpu), 2),
               "wall_seconds": round(time.time() - t0, 2)}
        print(json.dumps(row), flush=True)
        return row

    base = work / "runs" / "base"
    if not args.reuse:  # the upstream maps (and a first evaluation) once
        shutil.rmtree(work / "runs", ignore_errors=True)
        t0 = time.time()
        run_pipeline(config(base), scheduler="synchronous", registry=reg)
        print(json.dumps({"case": "setup (train, ingest .. normalize, evaluate)",
                          "wall_seconds": round(time.time() - t0, 2)}), flush=True)
    per_unit, everything = work / "runs" / "per_unit", work / "runs" / "everything"
    for d in (per_unit, everything):
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(base, d)
    rows = [timed("full evaluation", per_unit, force="evaluate"),
            timed(f"{CHANGE}: that method's units", per_unit, (CHANGE,)),
            timed(f"{CHANGE}: every unit (baseline)", everything, (CHANGE,), force="evaluate")]
    print("after the change, that method's units vs every unit:",
          same_numbers(per_unit / "evidence", everything / "evidence"), flush=True)
    rows.append(timed("a rerun with nothing to do", per_unit, (CHANGE,)))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
