"""Evaluate before (the all-at-once stage of f20f799, taken from git) and after (per
(method, shard) + a shared floor), in one process,
on the same upstream maps: a full evaluation, then one method's parameters changed.

usage: .venv/bin/python benchmarks/issue23/evaluate_units.py COUNT SHARD [--reuse] [--full]
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("XAI_BENCH_DIR", "/tmp/eval_bench"))
os.environ.setdefault("XAI_CACHE_DIR", str(WORK / "cache"))
sys.path.insert(0, str(ROOT))

from workflows.config.loading import load_config  # noqa: E402
from workflows.runner.planning import Registry  # noqa: E402
from workflows.runner.run import run_pipeline  # noqa: E402
from workflows.stages import STAGES  # noqa: E402

OLD_STAGE = WORK / "old_evaluate.py"  # the all-at-once stage, as committed before issue 23
if not OLD_STAGE.is_file():
    import subprocess

    WORK.mkdir(parents=True, exist_ok=True)
    OLD_STAGE.write_text(subprocess.run(["git", "show", "f20f799:workflows/stages/evaluate.py"],
                                  cwd=ROOT, capture_output=True, text=True, check=True).stdout)
spec = importlib.util.spec_from_file_location("old_evaluate", OLD_STAGE)
old_mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old_mod)
NEW = Registry([type(s)() for s in STAGES])
OLD = Registry([old_mod.Evaluate() if s.name == "evaluate" else type(s)() for s in STAGES])
CPU: list[float] = []


def cpu() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def metered(stage):
    run = stage.run

    def wrapped(task):
        c0 = cpu()
        try:
            return run(task)
        finally:
            CPU.append(cpu() - c0)
    stage.run = wrapped


metered(NEW["evaluate"])
metered(OLD["evaluate"])

count, shard = int(sys.argv[1]), int(sys.argv[2])
SETS = [f"dataset.count={count}", f"run.shard_size={shard}", "model.train_images=256",
        "model.val_images=64", "run.device=cpu", "report.enabled=false"]
CHANGE = ["methods.integrated_gradients.n_steps=16"]


def cfg_for(out: Path, extra: list[str] = ()):
    return load_config(ROOT / "configs" / "evidence.toml", [*SETS, *extra], out=out)


def evaluate_units(run_dir: Path, since: float) -> tuple[int, float]:
    """Evaluate units recorded since ``since``: how many, and the seconds they ran."""
    n, busy = 0, 0.0
    from workflows.runner.records import Records

    recs = Records(run_dir)
    for rec in (r for f in recs.folders("evaluate") for r in recs.entries(f).values()):
        if rec["finished"] >= since:
            n += 1
            busy += rec["ended"] - rec["started"]
    return n, busy


def timed(label: str, reg: Registry, out: Path, extra=(), force=None) -> dict:
    cfg = cfg_for(out, list(extra))
    t0 = time.time()
    CPU.clear()
    run_pipeline(cfg, scheduler="synchronous", registry=reg, force=force)
    wall = time.time() - t0
    units, busy = evaluate_units(cfg.run_dir, t0)
    row = {"case": label, "evaluate_units": units, "evaluate_seconds": round(busy, 2),
           "evaluate_cpu_seconds": round(sum(CPU), 2), "wall_seconds": round(wall, 2)}
    print(json.dumps(row), flush=True)
    return row


def arrays(run_dir: Path) -> dict[str, np.ndarray]:
    import zarr
    g = zarr.open_group(str(run_dir / "store.zarr"), mode="r")
    return {k: np.asarray(g[k][:]) for k in sorted(g.array_keys())
            if k.startswith(("metric_", "random_", "curve_", "randomisation"))}


def compare(a: Path, b: Path) -> str:
    x, y = arrays(a), arrays(b)
    assert x.keys() == y.keys(), (x.keys(), y.keys())
    worst = 0.0
    exact = True
    for k in x:
        if not np.array_equal(x[k], y[k], equal_nan=True):
            exact = False
            assert np.array_equal(np.isnan(x[k]), np.isnan(y[k])), k
            finite = np.isfinite(x[k])
            worst = max(worst, float(np.max(np.abs(x[k][finite] - y[k][finite]))))
    return "bit-identical" if exact else f"max abs difference {worst:.3g}"


base = WORK / "runs" / "base"
if "--reuse" not in sys.argv:  # the upstream maps (and a first evaluate) once
    shutil.rmtree(WORK / "runs", ignore_errors=True)
    t0 = time.time()
    run_pipeline(cfg_for(base), scheduler="synchronous", registry=NEW)
    print(json.dumps({"case": "setup (train, ingest .. normalize, evaluate)",
                      "wall_seconds": round(time.time() - t0, 2)}), flush=True)
old, new = WORK / "runs" / "old", WORK / "runs" / "new"
for d in (old, new):
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(base, d)
if "--full" in sys.argv:  # interleaved pairs of full evaluations only
    rows = [timed("before: full evaluate (1)", OLD, old, force="evaluate"),
            timed("after: full evaluate (1)", NEW, new, force="evaluate"),
            timed("after: full evaluate (2)", NEW, new, force="evaluate"),
            timed("before: full evaluate (2)", OLD, old, force="evaluate")]
    print(json.dumps(rows))
    sys.exit(0)
rows = [timed("before: full evaluate", OLD, old, force="evaluate"),
        timed("after: full evaluate", NEW, new, force="evaluate")]
print("full evaluation, before vs after:", compare(old / "evidence", new / "evidence"), flush=True)
rows += [timed(f"after: {CHANGE[0]}", NEW, new, CHANGE),
         timed(f"before: {CHANGE[0]}", OLD, old, CHANGE)]
print("after the change, before vs after:", compare(old / "evidence", new / "evidence"), flush=True)
rows += [timed("after: no-op rerun", NEW, new, CHANGE)]
print(json.dumps(rows))
