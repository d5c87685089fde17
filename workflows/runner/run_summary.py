"""What a run did: progress as units finish, per-stage statistics, completeness, skipped
images, and the :class:`RunSummary` that ``xai run`` prints and ``summary.json`` keeps.

Nothing here prints: a :class:`Reporter` receives progress and warnings (the CLI draws them,
tests may ignore them).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.store.access import explainers
from pipeline.store.arrays import array
from workflows.config.run_config import Config
from workflows.runner import fault_injection as faults
from workflows.runner.completion_records import Records
from workflows.runner.disk_writes import disk_errors
from workflows.runner.stage_api import Unit, explained_status
from workflows.runner.stage_registry import Hashes, StageRegistry


class Reporter(Protocol):
    """Receives progress; the CLI draws it, tests may ignore it."""

    def stage_start(self, stage: str, total_images: int, done_images: int,
                    before: str = "") -> None: ...
    def advance(self, stage: str, images: int) -> None: ...
    def stage_end(self, stage: str) -> None: ...
    def warn(self, message: str) -> None: ...
    def info(self, message: str) -> None: ...
    def training(self, what: str, done: int, total: int) -> None: ...


class SilentReporter:
    """A reporter that keeps warnings and drops everything else."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def stage_start(self, stage: str, total_images: int, done_images: int,
                    before: str = "") -> None: ...
    def advance(self, stage: str, images: int) -> None: ...
    def stage_end(self, stage: str) -> None: ...
    def info(self, message: str) -> None: ...

    def training(self, what: str, done: int, total: int) -> None: ...

    def warn(self, message: str) -> None:
        self.warnings.append(message)


@dataclass
class StageStats:
    """What one stage did in a run: counts, busy time, wall span and device use.

    ``busy_seconds`` is the work: the sum of the tasks' compute seconds (a device task's time
    on the device, a CPU task's own time), and img/s comes from it. ``seconds`` is the span
    from the first task's start to the last one's end: with streaming, a CPU stage's span
    covers the whole run while it waits for the device, so it says nothing of its speed.
    """

    stage: str
    units_total: int = 0
    units_run: int = 0
    images_run: int = 0
    seconds: float = 0.0
    busy_seconds: float = 0.0
    device_idle: float | None = None
    workers: list[str] = field(default_factory=list)

    @property
    def img_per_s(self) -> float | None:
        """Images per busy second."""
        return self.images_run / self.busy_seconds if self.images_run and self.busy_seconds \
            else None

    def to_dict(self, run_at: str) -> dict[str, Any]:
        return {"stage": self.stage, "units_run": self.units_run,
                "units_total": self.units_total, "images": self.images_run,
                "busy_seconds": round(self.busy_seconds, 3),
                "span_seconds": round(self.seconds, 3),
                "img_per_s": None if self.img_per_s is None else round(self.img_per_s, 3),
                "device_idle": None if self.device_idle is None else round(self.device_idle, 4),
                "workers": self.workers, "computed_by_run": run_at}


#: Runs kept in ``summary.json``'s ``history`` (the newest last).
HISTORY: int = 50


def process_seconds() -> float:
    """Wall seconds since this process started (start-up and imports included): what a
    user's clock says the command took. From ``/proc``; else since :mod:`workflows` loaded."""
    import os

    try:
        ticks = os.sysconf("SC_CLK_TCK")
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / ticks
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - started)
    except (OSError, ValueError, IndexError):
        import workflows

        return time.time() - workflows.LOADED_AT


@dataclass
class Completeness:
    """How well one method's attributions add up: the relative completeness error
    ``|delta| / |F(x) - F(baseline)|`` over the explained images."""

    method: str
    images: int
    median: float
    worst: float
    worst_image: str
    threshold: float
    flagged: list[tuple[str, float]]
    #: ``rule = "adaptive"``: path points per image (median, 90th percentile, max), the
    #: median final residual, and the images whose gap F(x) - F(baseline) was zero (they
    #: stopped at the starting grid, residual NaN).
    adaptive: dict[str, Any] | None = None
    #: Images whose gap F(x) - F(baseline) is zero: their relative error is undefined.
    zero_gap: int = 0

    def to_dict(self) -> dict[str, Any]:
        defined = self.images > 0  # NaN is not JSON
        return {"method": self.method, "images": self.images,
                "median": self.median if defined else None,
                "worst": self.worst if defined else None, "worst_image": self.worst_image,
                "threshold": self.threshold,
                "flagged": [{"image": i, "relative_error": r} for i, r in self.flagged],
                "adaptive": self.adaptive,
                # only where some gap is zero: runs without one keep their summary's shape
                **({"zero_gap": self.zero_gap} if self.zero_gap else {})}


@dataclass
class RunSummary:
    """What a run did and where its outputs are.

    ``outputs`` holds what each stage's ``finalize`` returned, by stage name (the
    evaluation summary, the report's facts); ``summary.json`` keeps them under those names.
    """

    run_dir: Path
    store_path: Path
    sheets_dir: Path
    images: int
    ok: int
    skipped: list[tuple[str, str]]
    weights_id: str
    random_weights: bool
    device: str
    scheduler: str = "threads"
    streaming: bool = True
    stats: list[StageStats] = field(default_factory=list)
    seconds: float = 0.0
    completeness: list[Completeness] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    #: What the engine did on the model (optimisations on, and why others are off).
    engine: dict[str, str] = field(default_factory=dict)
    #: Top-1 accuracy on the labelled images: ``{"correct", "labelled", "accuracy"}``
    #: (empty when no image has a label).
    accuracy: dict[str, Any] = field(default_factory=dict)
    #: When this run started (local time, ISO), the key of its figures in ``summary.json``.
    run_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))
    #: The ``summary.json`` this run found: stages it did not compute keep their figures.
    previous: dict[str, Any] | None = None
    #: The dataset layout the run used (``auto`` resolved), and how many of its images
    #: have a label.
    layout: str = ""
    labelled: int = 0
    #: Degenerate output found in the store (:func:`degeneracy_summary`), as dicts.
    degenerate: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stage_seconds(self) -> float:
        """The sum of the stages' own wall times (what a run without overlap would take)."""
        return sum(st.seconds for st in self.stats)

    def stage_entries(self) -> list[dict[str, Any]]:
        """Per stage, the figures of the last run that computed any of its units: this
        run's where it computed some, else those ``summary.json`` kept."""
        kept = {e.get("stage"): e for e in (self.previous or {}).get("stages", [])
                if isinstance(e, dict) and e.get("units_run")}
        out = []
        for st in self.stats:
            entry = st.to_dict(self.run_at)
            if not st.units_run and st.stage in kept:
                entry = {**kept[st.stage], "units_total": st.units_total}
            out.append(entry)
        return out

    def history(self) -> list[dict[str, Any]]:
        """Every run's own figures, oldest first (at most :data:`HISTORY`), this one last."""
        old = [h for h in (self.previous or {}).get("history", []) if isinstance(h, dict)]
        mine = {"run_at": self.run_at, "seconds": round(self.seconds, 3),
                "scheduler": self.scheduler, "device": self.device,
                "units_run": {st.stage: st.units_run for st in self.stats},
                "busy_seconds": {st.stage: round(st.busy_seconds, 3) for st in self.stats}}
        return [*old, mine][-HISTORY:]

    def to_dict(self) -> dict[str, Any]:
        """``summary.json``: the same numbers as the console table. ``stages`` keeps, per
        stage, the figures of the last run that computed it (a no-op rerun does not erase
        them); ``seconds`` is this command's wall time; ``history`` lists every run."""
        return {
            "run_dir": str(self.run_dir), "images": self.images, "ok": self.ok,
            "skipped": len(self.skipped), "weights_id": self.weights_id,
            "random_weights": self.random_weights, "device": self.device,
            "scheduler": self.scheduler, "streaming": self.streaming,
            "seconds": round(self.seconds, 3),
            "sum_of_stage_seconds": round(self.stage_seconds, 3),
            "completeness": [c.to_dict() for c in self.completeness],
            "engine": self.engine,
            "accuracy": self.accuracy or None,
            "layout": self.layout, "labelled": self.labelled,
            "degenerate": self.degenerate,
            **{name: out for name, out in self.outputs.items() if out},
            "run_at": self.run_at,
            "stages": self.stage_entries(),
            "history": self.history(),
        }


class Recorder:
    """Turns finished units into completion records, progress and per-stage statistics.

    The coordinator alone writes records, after the unit's data (the task wrote it and
    returned its checksum).
    """

    def __init__(self, registry: StageRegistry, cfg: Config, records: Records, hashes: Hashes,
                 reporter: Reporter) -> None:
        self.registry, self.cfg, self.records, self.hashes = registry, cfg, records, hashes
        self.rep = reporter
        self.results: dict[str, list[tuple[Unit, dict[str, Any]]]] = defaultdict(list)
        self.shown: dict[str, float] = defaultdict(float)

    def share(self, unit: Unit) -> float:
        """The images a unit stands for: a per-method unit is one method's share."""
        return unit.size / len(self.registry[unit.stage].methods(self.cfg))

    def start(self, planned: dict[str, list[Unit]], pending: dict[str, list[Unit]],
              n: int) -> None:
        """Open one progress bar per stage that has units, counting what is done already."""
        for name, units in planned.items():
            if units:
                done = sum(self.share(u) for u in units) - sum(self.share(u)
                                                               for u in pending[name])
                self.rep.stage_start(name, n, int(round(done, 6)),
                                     before=self.done_per_method(units, pending[name], n))
                self.shown[name] = done

    @staticmethod
    def done_per_method(units: list[Unit], pending: list[Unit], n: int) -> str:
        """What a per-method stage had done before, method by method (``gradient 24,
        smoothgrad 16 of 40 images done before``): a stage's one count averages its methods,
        which matches none when they stopped at different images. Empty when the stage is
        not per method or nothing was done."""
        done: dict[str, int] = {}
        for unit in units:
            if unit.method is not None:
                done[unit.method] = done.get(unit.method, 0) + unit.size
        for unit in pending:
            if unit.method is not None:
                done[unit.method] -= unit.size
        if not any(done.values()):
            return ""
        each = ", ".join(f"{method} {count}" for method, count in done.items())
        return f"{each} of {n} images done before"

    def end(self, planned: dict[str, list[Unit]]) -> None:
        for name, units in planned.items():
            if units:
                self.rep.stage_end(name)

    def __call__(self, unit: Unit, result: dict[str, Any]) -> None:
        if not result.get("provisional"):  # built from incomplete inputs: build it again
            with disk_errors(self.records.path(unit.key)):
                self.records.mark_done(unit.key, self.hashes[(unit.stage, unit.method)],
                                       **result)
        faults.point(f"{unit.stage}:after-record")
        self.results[unit.stage].append((unit, result))
        # Whole images only: per-method shares (1/M each) would show 5.999 as 5.
        before = round(self.shown[unit.stage], 6)
        self.shown[unit.stage] += self.share(unit)
        step = int(round(self.shown[unit.stage], 6)) - int(before)
        if step:
            self.rep.advance(unit.stage, step)

    def engine(self, planned: dict[str, list[Unit]]) -> dict[str, str]:
        """The engine facts a device task reported: this run's, else a record's."""
        for results in self.results.values():
            for _, result in results:
                if result.get("engine"):
                    return dict(result["engine"])
        for units in planned.values():
            for unit in units[:1]:
                record = self.records.get(unit.key) or {}
                if record.get("engine"):
                    return dict(record["engine"])
        return {}

    def stats(self, planned: dict[str, list[Unit]]) -> list[StageStats]:
        out = []
        for stage in self.registry:
            if not planned[stage.name]:
                continue  # turned off under this config
            done = self.results.get(stage.name, [])
            st = StageStats(stage.name, units_total=len(planned[stage.name]),
                            units_run=len(done))
            st.images_run = len({i for u, _ in done for i in range(u.start, u.stop)})
            if done:
                st.seconds = (max(r["ended"] for _, r in done)
                              - min(r["started"] for _, r in done))
                st.busy_seconds = sum(_busy(r) for _, r in done)
                st.workers = sorted({worker_name(r["worker"]) for _, r in done})
                if stage.device:
                    st.device_idle = _device_idle(done)
            out.append(st)
        return out


def _busy(result: dict[str, Any]) -> float:
    """A task's work: its compute seconds where it reports them (a device task: time on the
    device, not waiting for it), else its own wall time."""
    compute = result.get("compute_seconds")
    return float(compute) if compute else float(result["ended"] - result["started"])


def worker_name(w: dict[str, Any]) -> str:
    return f"{w.get('address')} ({w.get('host')}, {w.get('device')})"


def _device_idle(done: list[tuple[Unit, dict[str, Any]]]) -> float | None:
    """1 - compute / time with work assigned, summed over the workers' devices."""
    by_worker: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _, r in done:
        by_worker[worker_name(r["worker"])].append(r)
    busy = span = 0.0
    for results in by_worker.values():
        intervals = sorted((r["started"], r["ended"]) for r in results)
        start, end = intervals[0]
        for s, e in intervals[1:]:
            if s > end:
                span += end - start
                start = s
            end = max(end, e)
        span += end - start
        busy += sum(r.get("compute_seconds", 0.0) for r in results)
    return max(0.0, 1.0 - busy / span) if span > 0 else None


def completeness_summary(group: Any, methods: Sequence[str], threshold: float
                         ) -> list[Completeness]:
    """Per method with a completeness property (the IG methods): median and worst relative
    completeness error, and the images above ``threshold``, worst first."""
    from pipeline.attribution.method_registry import METHODS, relative_completeness_error

    names = explainers(group)
    if "gap" not in group:
        return []
    ids = array(group, "image")[:].tolist()
    out = []
    for method in methods:
        spec = METHODS.get(method)
        if spec is None or not spec.has_delta or method not in names:
            continue
        slot = names.index(method)
        gap = np.asarray(array(group, "gap")[slot], dtype=np.float64)
        rel = relative_completeness_error(array(group, "delta")[slot], gap)
        steps = residual = None
        if "steps" in group:
            steps = np.asarray(array(group, "steps")[slot], dtype=np.float64)
            residual = np.asarray(array(group, "residual")[slot], dtype=np.float64)
        found = summarize_completeness(method, rel, lambda idx: [str(ids[i]) for i in idx],
                                       threshold, steps, residual,
                                       zero_gap=int((gap == 0).sum()))
        if found is not None:
            out.append(found)
    return out


def completeness_from_records(group: Any, records: Records, units: Sequence[Unit],
                              methods: Sequence[str], threshold: float
                              ) -> list[Completeness] | None:
    """:func:`completeness_summary` from the attribute records' per-image facts, reading
    from the store only the image ids of the shards it names (the worst and flagged images).
    None when a finished unit's record lacks them (a run from before they were kept)."""
    from pipeline.attribution.method_registry import METHODS

    n = array(group, "image").shape[0]
    out = []
    for method in methods:
        spec = METHODS.get(method)
        if spec is None or not spec.has_delta:
            continue
        rel, steps, residual = (np.full(n, np.nan) for _ in range(3))
        adaptive = False
        finished = np.zeros(n, dtype=bool)
        for u in units:
            if u.method != method or (rec := records.get(u.key)) is None:
                continue
            facts = rec.get("per_image")
            if not isinstance(facts, dict):
                return None
            finished[u.start:u.stop] = True
            rel[u.start:u.stop] = _floats(facts["relative_error"])
            if "steps" in facts:
                adaptive = True
                steps[u.start:u.stop] = _floats(facts["steps"])
                residual[u.start:u.stop] = _floats(facts["residual"])
        zero_gap = 0
        if (finished & ~np.isfinite(rel)).any() and method in explainers(group):
            # An undefined error: read the gaps (small) to count the zero ones.
            gap = np.asarray(array(group, "gap")[explainers(group).index(method)])
            zero_gap = int((finished & (gap == 0)).sum())
        found = summarize_completeness(method, rel, lambda idx: image_ids(group, idx),
                                       threshold, steps if adaptive else None, residual,
                                       zero_gap=zero_gap)
        if found is not None:
            out.append(found)
    return out


def _floats(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def image_ids(group: Any, indices: Sequence[int]) -> list[str]:
    """The ids of the images at ``indices``, reading only the chunks that hold them."""
    arr = array(group, "image")
    size = arr.chunks[0]
    chunks: dict[int, list[str]] = {}
    out = []
    for i in indices:
        c = int(i) // size
        if c not in chunks:
            chunks[c] = [str(v) for v in arr[c * size:(c + 1) * size].tolist()]
        out.append(chunks[c][int(i) - c * size])
    return out


def summarize_completeness(method: str, rel: np.ndarray, id_of: Any, threshold: float,
                           steps: np.ndarray | None, residual: np.ndarray | None,
                           zero_gap: int = 0) -> Completeness | None:
    """One method's :class:`Completeness` from its images' relative errors ``rel`` (shape
    ``(n,)``, NaN where not computed); ``id_of(indices)`` names images; ``zero_gap``: the
    images whose gap F(x) - F(baseline) is zero (their error is undefined). None when no
    image has an error and none has a zero gap; with zero gaps only, ``images`` is 0 and
    the median and worst are NaN."""
    done = np.flatnonzero(np.isfinite(rel))
    if not done.size:
        if not zero_gap:
            return None
        return Completeness(method, 0, float("nan"), float("nan"), "", threshold, [],
                            None, zero_gap)
    worst = int(done[np.argmax(rel[done])])
    above = done[rel[done] > threshold]
    above = above[np.argsort(-rel[above], kind="stable")]
    named = id_of([worst, *above.tolist()])
    return Completeness(
        method, int(done.size), float(np.median(rel[done])), float(rel[worst]),
        named[0], threshold, [(named[1 + k], float(rel[i])) for k, i in enumerate(above)],
        None if steps is None or residual is None else _adaptive_facts(steps, residual),
        zero_gap)


def _adaptive_facts(steps: np.ndarray, residual: np.ndarray) -> dict[str, Any] | None:
    """Steps and residuals of an adaptive IG method (None for the fixed rules)."""
    used = np.isfinite(steps)
    if not used.any():
        return None
    s = steps[used]
    r = residual[used & np.isfinite(residual)]
    return {"steps_median": float(np.median(s)), "steps_p90": float(np.percentile(s, 90)),
            "steps_max": int(s.max()), "steps_total": int(s.sum()),
            "residual_median": float(np.median(r)) if r.size else None,
            "zero_gap": int((used & ~np.isfinite(residual)).sum())}


#: Images whose maps :func:`degeneracy_summary` reads (the first explained ones).
DEGENERACY_MAP_IMAGES: int = 64
#: Images whose logits :func:`degeneracy_summary` reads (the first explained ones).
DEGENERACY_OUTPUT_IMAGES: int = 4096


def degeneracy_summary(group: Any, store_path: Path | str, methods: Sequence[str]
                       ) -> list[dict[str, Any]]:
    """Degenerate output in the store (see :mod:`pipeline.evaluation.degeneracy`): the
    logits and gaps of the first :data:`DEGENERACY_OUTPUT_IMAGES` explained images and the
    ``raw`` maps of the first :data:`DEGENERACY_MAP_IMAGES`, read from the stored arrays (so
    no stage record or hash depends on it). Empty when nothing is degenerate or nothing is
    explained yet."""
    from pipeline.evaluation.degeneracy import find_degeneracy
    from pipeline.store.access import open_dataset

    if "status" not in group or "logits" not in group:
        return []
    ok = np.flatnonzero(np.asarray(array(group, "status")[:]) == "ok")
    if not ok.size:
        return []
    rows = ok[:DEGENERACY_OUTPUT_IMAGES]
    logits = np.asarray(array(group, "logits")[:int(rows[-1]) + 1])[rows]
    names = explainers(group)
    present = [m for m in methods if m in names]
    gaps: dict[str, np.ndarray] = {}
    if "gap" in group:
        stored = np.asarray(array(group, "gap")[:, :int(rows[-1]) + 1])
        gaps = {m: stored[names.index(m)][rows] for m in present}
    peaks: dict[str, float] = {}
    few = ok[:DEGENERACY_MAP_IMAGES]
    dataset = open_dataset(store_path)  # "raw" whatever the store keeps (raw_float16, ...)
    if "raw" in dataset and present:
        raw = dataset["raw"]
        for m in present:
            values = np.asarray(raw.isel(explainer=names.index(m),
                                         image=few.tolist()).values, dtype=np.float64)
            finite = values[np.isfinite(values)]
            peaks[m] = float(np.abs(finite).max()) if finite.size else float("nan")
    return [f.to_dict() for f in find_degeneracy(logits, gaps, peaks, int(few.size))]


def top1_accuracy(group: Any) -> dict[str, Any]:
    """The model's top-1 accuracy on the ingested images with a label (``label >= 0``) and a
    prediction: ``{"correct", "labelled", "accuracy"}``, or ``{}`` when none has one."""
    labels = np.asarray(array(group, "label")[:])
    pred = np.asarray(array(group, "pred")[:])
    status = np.asarray(array(group, "status")[:])
    seen = (labels >= 0) & (pred >= 0) & (status == "ok")
    if not seen.any():
        return {}
    correct = int((pred[seen] == labels[seen]).sum())
    return {"correct": correct, "labelled": int(seen.sum()),
            "accuracy": round(correct / int(seen.sum()), 6)}


def skipped_from_records(records: Records, units: Sequence[Unit], target: str
                         ) -> list[tuple[str, str]] | None:
    """:func:`skipped_images` of the ingested shards from their records, without reading
    the store; None when it needs the store: a record from before they listed their skipped
    images, or images without a label when the label is the target."""
    out: list[tuple[str, str]] = []
    for u in units:
        rec = records.get(u.key)
        if rec is None:
            continue
        if "skipped" not in rec or (target == "label" and rec.get("unlabelled")):
            return None
        out.extend((str(i), str(why)) for i, why in rec["skipped"].items())
    return out


def skipped_images(group: Any, target: str) -> list[tuple[str, str]]:
    """``(image id, why)`` for every image without maps: its ingest status, or no label when
    the label is the target (see :func:`workflows.runner.stage_api.explained_status`). Images
    not yet ingested (empty status) are listed with an empty reason."""
    if "status" not in group:
        return [(str(i), "") for i in array(group, "image")[:].tolist()]
    status = array(group, "status")[:].tolist()
    labels = np.asarray(array(group, "label")[:])
    ids = array(group, "image")[:].tolist()
    out = []
    for i, st in enumerate(status):
        why = explained_status(str(st), int(labels[i]), target)
        if why != "ok":
            out.append((str(ids[i]), why))
    return out
