"""Scale benchmark: ``xai run`` end to end on many images, against a small run with the same
settings.

Synthetic images, 32 px crop, ``gradient`` only, random weights, the report on, 32 images a
shard, on the CPU: the model costs little, so what is measured is everything around it (the
scheduler, records, the store, sheets, the report). For each size it runs ``xai run`` in a
child process and reports:

- wall seconds and the coordinator's peak memory (the child's own max RSS);
- seconds per image, and the overhead per image: wall minus the attribute stage's busy time,
  per image (what the run costs beyond the explainer itself);
- the run folder's size and file count (and the store's);
- ``xai status``, ``xai verify --check-only`` and ``xai verify --sample 20`` wall times, each
  as a fresh command (imports included, as a user types it);
- the report's first screen in headless Chromium (when installed).

The per-image overhead of the large run against the small one is the scale target (within
1.2x). Run it with ``python -m benchmarks.bench_scale 50000 --baseline 2000``; it
writes ``runs/bench/scale-<N>-<layout>.json`` (``--layout shard``: the store's
``[store] layout``). A benchmark, not a test: the 50,000-image run takes about half an hour
on 2 cores; the slow suite runs 5,000 images (tests/benchmarks/test_bench_scale.py).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """\
[dataset]
layout = "synthetic"
count = {images}
resize = {crop}
crop = {crop}

[model]
weights = "random"
head = "softmax"

[run]
out = "{out}"
device = "cpu"
shard_size = {shard}
seed = 0

[methods.gradient]

[report]
enabled = {report}

[store]
layout = "{layout}"
"""


def _xai() -> list[str]:
    """The CLI as a user runs it (this interpreter's ``xai`` script)."""
    return [sys.executable, "-c", "from workflows.cli.app import main; main()"]


def _timed(args: list[str]) -> tuple[float, int, int, str]:
    """Run ``args``: ``(wall seconds, exit code, peak RSS in MB, output)``."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "COLUMNS": "160"})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        log.seek(0)
        text = log.read().decode(errors="replace")
    return wall, os.waitstatus_to_exitcode(status), usage.ru_maxrss // 1024, text


def _files(path: Path) -> tuple[int, float]:
    """Files under ``path`` and their size in MB."""
    n, size = 0, 0
    for p in path.rglob("*"):
        if p.is_file():
            n += 1
            size += p.stat().st_size
    return n, size / 2**20


def measure(images: int, out: Path, crop: int = 32, shard: int = 32, report: bool = True,
            browser: bool = True, layout: str = "method") -> dict[str, Any]:
    """Run ``xai run`` on ``images`` synthetic images under ``out``; the figures above.
    ``layout``: the store's ``[store] layout``."""
    name = f"scale{images}"
    shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    config = out / f"{name}.toml"
    config.write_text(CONFIG.format(images=images, crop=crop, out=out, shard=shard,
                                    report=str(report).lower(), layout=layout))
    run_dir = out / name
    wall, rc, rss, text = _timed([*_xai(), "run", "--config", str(config)])
    if rc != 0:
        raise RuntimeError(f"xai run exited {rc}:\n{text[-3000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    busy = {e["stage"]: e["busy_seconds"] for e in summary["stages"]}
    row: dict[str, Any] = {
        "images": images, "crop": crop, "shard_size": shard, "report": report,
        "layout": layout,
        "wall_s": round(wall, 2), "printed_s": summary["seconds"], "peak_rss_mb": rss,
        "s_per_image": wall / images,
        "overhead_s_per_image": (wall - busy.get("attribute", 0.0)) / images,
        "busy_s": busy,
    }
    row["run_files"], row["run_mb"] = _files(run_dir)
    row["store_files"], row["store_mb"] = _files(run_dir / "store.zarr")
    row["record_files"] = _files(run_dir / "state")[0]
    outputs: dict[str, str] = {}
    for key, args in (("status_s", ["status", str(run_dir)]),
                      ("verify_s", ["verify", "--check-only", str(run_dir)]),
                      ("verify_sample_s", ["verify", "--check-only", "--sample", "20",
                                           str(run_dir)])):
        t, code, _, said = _timed([*_xai(), *args])
        row[key] = round(t, 2) if code == 0 else f"exit {code}: {said[-200:]}"
        outputs[key] = said
    if report and browser:
        from benchmarks.bench_report import first_screen

        row["report_first_screen"] = first_screen(run_dir / "report" / "index.html")
    return {**row, "outputs": outputs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", type=int, nargs="?", default=50_000)
    parser.add_argument("--baseline", type=int, default=2000,
                        help="the small run's images (0: none)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the runs go (default: a temporary folder, removed)")
    parser.add_argument("--keep", action="store_true", help="keep the runs")
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument("--layout", default="method", help="[store] layout: method or shard")
    args = parser.parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="xai-scale-"))
    rows = []
    try:
        for n in ([args.baseline] if args.baseline else []) + [args.images]:
            row = measure(n, work, report=not args.no_report, layout=args.layout)
            row.pop("outputs")
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result: dict[str, Any] = {"rows": rows, "cpus": len(os.sched_getaffinity(0)),
                              "when": time.strftime("%Y-%m-%d %H:%M")}
    if len(rows) == 2:
        result["overhead_ratio"] = (rows[1]["overhead_s_per_image"]
                                    / rows[0]["overhead_s_per_image"])
        print(f"per-image overhead at {rows[1]['images']} / at {rows[0]['images']}: "
              f"{result['overhead_ratio']:.2f}x (target <= 1.2x)")
    dest = ROOT / "runs" / "bench" / f"scale-{args.images}-{args.layout}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(result, indent=2))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
