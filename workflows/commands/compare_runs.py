"""``xai compare RUN_A RUN_B``: compare the explanations of two runs over the same images.

Streams over run A's shards (a Dask task graph of a few shards at a time, threads), holding
one shard of maps per worker: per image and method the rank correlation and top-pixel
overlap of the two normalized maps, the predictions, the metrics both runs have and the
difference map on the test's grid, written to ``<out>/compare.zarr``; per class (A's
prediction, and the label where there are labels) running sums of the mean maps
(:mod:`pipeline.comparison.classes`). Then, once: the permutation test of each class from the
stored grid differences (put in class order in a scratch file, read a class at a time), the
classes ranked by change, the strategies matched (:mod:`pipeline.comparison.strategies`), what
differs between the runs' configs, and the report pages
(:mod:`pipeline.report.comparison_pages`).

Resumable: a shard's per-image rows are recorded (``<out>/state/compare.jsonl``, as the
stages record units) after they are written, and the running sums are checkpointed
atomically with the number of shards folded into them (``<out>/state/sums.npz``), at most
every :data:`CHECKPOINT_EVERY` seconds (or 20 times as long as the last save took) and at the
end. A rerun after a crash starts from the checkpoint, in the same order, so the store it
finishes is the one an uninterrupted comparison writes. A comparison whose inputs or settings
changed starts again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from pipeline.comparison.classes import (
    STOP_AFTER,
    ClassTest,
    ClassTotals,
    fold,
    grid_differences,
    holm,
    mean_map_side,
    permutations_for,
    shard_totals,
    sign_flip_test,
)
from pipeline.comparison.configs import Difference, differences
from pipeline.comparison.maps import spearman, top_iou
from pipeline.comparison.reading import read_maps, read_rows
from pipeline.comparison.strategies import match_strategies
from pipeline.errors import XaiError
from pipeline.store.access import shard_size
from pipeline.store.view import StoreView
from workflows.config.hashing import stable_hash
from workflows.runner import fault_injection as faults
from workflows.runner.completion_records import Records
from workflows.runner.disk_writes import atomic_write_bytes, atomic_write_json, read_json

#: The comparison's store, records and checkpoint, under its folder.
STORE = "compare.zarr"
STAGE = "compare"
SUMS = "state/sums.npz"
#: Seconds between two checkpoints of the running sums (and one at the end);
#: ``XAI_COMPARE_CHECKPOINT_S`` overrides it (the crash tests checkpoint every shard).
CHECKPOINT_EVERY = 10.0
#: In each compared run's folder: the comparisons made from it (``xai report`` links them).
COMPARISONS_FILE = "comparisons.json"
#: The version of what a comparison stores and checkpoints (2: per-image grid differences,
#: tests after the stream).
COMPARISON_LAYOUT = 2
#: The groupings of images into classes: by A's prediction, and by the label.
GROUPINGS = ("pred", "label")


class CompareError(XaiError):
    """Two runs that cannot be compared as asked (the message says why and what to do)."""


_RANGES = {"--top-fraction": "in (0, 1]", "--alpha": "in (0, 1)",
           "--permutations": "of at least 19 (p can reach 0.05)", "--workers": ">= 1"}


@dataclass(frozen=True)
class CompareSettings:
    """How two runs are compared (``xai compare``'s options).

    Attributes
    ----------
    top_fraction
        The share of pixels whose overlap (IoU) is measured: each map's highest.
    permutations
        The most sign-flip permutations a class's test draws (the smallest p it can give is
        1 / (P + 1)); None: as many as Holm's correction over the classes needs to flag every
        class (:func:`pipeline.comparison.classes.permutations_for`).
    grid
        Side of the grid the test's difference maps are averaged to.
    alpha
        A class is flagged as changed when its Holm-adjusted p is at most this.
    seed
        Seeds the permutations.
    shared_images
        Compare the images both runs hold when their image sets differ.
    workers
        Shards computed at once (each holds one shard of maps).
    min_overlap
        The least Jaccard index of two matched strategies.
    gallery
        Images per method in the report's gallery (the most changed).
    """

    top_fraction: float = 0.1
    permutations: int | None = None
    grid: int = 16
    alpha: float = 0.01
    seed: int = 0
    shared_images: bool = False
    workers: int = 2
    min_overlap: float = 0.2
    gallery: int = 40

    def __post_init__(self) -> None:
        for name, value, ok in (("--top-fraction", self.top_fraction,
                                 0 < self.top_fraction <= 1),
                                ("--alpha", self.alpha, 0 < self.alpha < 1),
                                ("--permutations", self.permutations,
                                 self.permutations is None or self.permutations >= 19),
                                ("--workers", self.workers, self.workers >= 1)):
            if not ok:
                raise CompareError(f"Expected {name} {_RANGES[name]}, got {value}.")

    def hashed(self) -> dict[str, Any]:
        """What the stored figures depend on (not the workers, nor the gallery's size)."""
        d = dataclasses.asdict(self)
        for key in ("workers", "gallery", "shared_images"):
            d.pop(key)
        return d


@dataclass
class RunSide:
    """One compared run, opened: its folder, store view, ids and facts."""

    path: Path
    view: StoreView
    ids: list[str]
    explainers: list[str]
    classes: list[str]
    metrics: list[str]
    config: dict[str, Any]
    attrs: dict[str, Any]
    #: What makes the run's maps untrustworthy, in words (its degenerate-output findings):
    #: a comparison against it says so before any figure.
    flags: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name


def open_run(path: Path) -> RunSide:
    """Open a run folder for comparison; a :class:`CompareError` when it holds no store of
    explained images."""
    run = Path(path).expanduser().resolve()
    if not (run / "store.zarr" / "zarr.json").is_file():
        raise CompareError(f"Expected a run folder with a store (store.zarr) at {path}, got "
                           "none. Pass the folder `xai run` wrote (runs/NAME).")
    view = StoreView(run / "store.zarr", mode="r")
    if "normalized" not in view:
        raise CompareError(f"Expected normalized maps in {run / 'store.zarr'}, got none. "
                           f"Finish the run first: `xai run {run}`.")
    ids = [str(v) for v in np.asarray(view.array("image")[:]).tolist()]
    attrs = dict(view.attrs)
    config = read_json(run / "config.resolved.json")
    if not isinstance(config, dict):
        config = dict(attrs.get("config") or {})
    metrics = sorted(k.removeprefix("metric_") for k in view.keys if k.startswith("metric_"))
    return RunSide(run, view, ids, list(view.explainers), [str(c) for c in
                   attrs.get("classes") or []], metrics, config, attrs,
                   run_flags(run, view, list(view.explainers), attrs))


def run_flags(run: Path, view: StoreView, methods: list[str], attrs: dict[str, Any]
              ) -> list[str]:
    """What makes the run's maps untrustworthy: random weights, and its degenerate-output
    findings (a model whose output does not depend on its input, zero gaps, zero maps),
    those its ``summary.json`` recorded, else found in its store now (a run made before the
    check)."""
    from workflows.runner.run_summary import degeneracy_summary

    summary = read_json(run / "summary.json")
    found = summary.get("degenerate") if isinstance(summary, dict) else None
    if found is None:
        found = degeneracy_summary(view.group, run / "store.zarr", methods)
    random = ["RANDOM WEIGHTS: its maps say nothing about a real model."] \
        if attrs.get("random_weights") else []
    return random + [str(f["message"]) for f in found]


@dataclass(frozen=True)
class ImageMatch:
    """The images compared, in A's order: their ids and rows in each run."""

    ids: list[str]
    rows_a: np.ndarray
    rows_b: np.ndarray
    only_a: int
    only_b: int


def match_images(ids_a: Sequence[str], ids_b: Sequence[str], shared: bool) -> ImageMatch:
    """Match the two runs' images by id (never by position).

    Raises
    ------
    CompareError
        When the id sets differ and ``shared`` is off: how many ids differ, and the flag.
    """
    where_b = {i: k for k, i in enumerate(ids_b)}
    if len(where_b) != len(ids_b) or len(set(ids_a)) != len(ids_a):
        raise CompareError("Expected unique image ids in each run, got repeated ids.")
    rows_a = [k for k, i in enumerate(ids_a) if i in where_b]
    only_a = len(ids_a) - len(rows_a)
    only_b = len(ids_b) - len(rows_a)
    if (only_a or only_b) and not shared:
        example = next((i for i in ids_a if i not in where_b), None) or next(
            i for i in ids_b if i not in set(ids_a))
        raise CompareError(
            f"Expected the two runs to hold the same images (matched by id), got "
            f"{only_a + only_b} ids that differ: {only_a} only in A, {only_b} only in B "
            f"(e.g. {example!r}). Pass --shared-images to compare the {len(rows_a)} images "
            "they share.")
    if not rows_a:
        raise CompareError("Expected images the two runs share, got none: they hold "
                           "different images. Compare runs of the same dataset.")
    ids = [ids_a[k] for k in rows_a]
    return ImageMatch(ids, np.asarray(rows_a, dtype=np.int64),
                      np.asarray([where_b[i] for i in ids], dtype=np.int64), only_a, only_b)


@dataclass(frozen=True)
class ShardPlan:
    """One unit: A's shard ``index``, its compared images' rows in A and B, and their rows
    ``out`` in the comparison."""

    index: int
    rows_a: np.ndarray
    rows_b: np.ndarray
    out: slice


def plan_shards(match: ImageMatch, shard: int) -> list[ShardPlan]:
    """The units: A's shards, each with the compared images it holds (empty ones skipped)."""
    shard_of = match.rows_a // shard
    plans, start = [], 0
    for index in np.unique(shard_of):
        sel = np.flatnonzero(shard_of == index)
        stop = start + len(sel)
        plans.append(ShardPlan(int(index), match.rows_a[sel], match.rows_b[sel],
                               slice(start, stop)))
        start = stop
    return plans


@dataclass
class Comparison:
    """Everything one comparison needs: both runs, the matching, the settings, the folder."""

    a: RunSide
    b: RunSide
    match: ImageMatch
    settings: CompareSettings
    out: Path
    explainers: list[str]
    metrics: list[str]
    plans: list[ShardPlan]
    labelled: bool
    digest: str = ""
    skipped_explainers: dict[str, list[str]] = field(default_factory=dict)
    #: The mean maps' side (:func:`pipeline.comparison.classes.mean_map_side`).
    mean_side: int = 0
    #: What makes the comparison's own figures untrustworthy (too few permutations for any
    #: class to be flagged), in words: said before any figure, as the runs' flags are.
    warnings: list[str] = field(default_factory=list)

    @property
    def store_path(self) -> Path:
        return self.out / STORE


def default_out(a: Path, b: Path) -> Path:
    """``<A's parent>/compare-<A>-vs-<B>``."""
    return a.parent / f"compare-{a.name}-vs-{b.name}"


def prepare(run_a: Path, run_b: Path, out: Path | None, settings: CompareSettings
            ) -> Comparison:
    """Open both runs, match their images and methods, and plan the units."""
    a, b = open_run(run_a), open_run(run_b)  # the same run twice: the null comparison
    match = match_images(a.ids, b.ids, settings.shared_images)
    explainers = [m for m in a.explainers if m in b.explainers]
    if not explainers:
        raise CompareError(f"Expected methods both runs explained with, got none: A has "
                           f"{a.explainers}, B has {b.explainers}. Add a shared method "
                           "(`xai run RUN --method NAME`).")
    shape_a = a.view.array("normalized").shape[-2:]
    shape_b = b.view.array("normalized").shape[-2:]
    if shape_a != shape_b:
        raise CompareError(f"Expected maps of one size in both runs, got {shape_a} in A and "
                           f"{shape_b} in B. Compare runs with the same [dataset] crop.")
    labels = np.asarray(a.view.array("label")[:])[match.rows_a]
    preds = np.asarray(a.view.array("pred")[:])[match.rows_a] if "pred" in a.view else labels
    # The classes the groupings can name: A's class list, else the largest index seen + 1.
    n_classes = max(len(a.classes), int(max(labels.max(initial=-1), preds.max(initial=-1))) + 1,
                    1)
    target = (out or default_out(a.path, b.path)).expanduser().resolve()
    cmp = Comparison(
        a, b, match, settings, target, explainers,
        [m for m in a.metrics if m in b.metrics],
        plan_shards(match, shard_size(a.view)), bool((labels >= 0).any()),
        skipped_explainers={"a": [m for m in a.explainers if m not in explainers],
                            "b": [m for m in b.explainers if m not in explainers]})
    if shape_a[0] == shape_a[1]:
        cmp.mean_side = mean_map_side(n_classes, len(explainers), int(shape_a[0]),
                                      2 if cmp.labelled else 1)
    # else 0: the pipeline's maps are square; another shape keeps its own size
    cmp.digest = stable_hash({
        "a": [a.attrs.get("config_hash"), a.attrs.get("stage_hashes"), str(a.path)],
        "b": [b.attrs.get("config_hash"), b.attrs.get("stage_hashes"), str(b.path)],
        # The layout of what is stored and checkpointed: a comparison made by an older one
        # starts again rather than resume from sums of another shape.
        "layout": COMPARISON_LAYOUT,
        "settings": settings.hashed(), "ids": stable_hash(match.ids),
        "explainers": explainers, "metrics": cmp.metrics})
    return cmp


# ---------------------------------------------------------------------------- the store


def _create(group: zarr.Group, name: str, dims: tuple[str, ...], shape: tuple[int, ...],
            dtype: Any, fill: Any, chunk_images: int = 4096) -> zarr.Array:
    # The image axis in long chunks; a mean map chunk holds one explainer and 16 classes.
    split = {"image": chunk_images, "class": 16 if "y" in dims else 1 << 16,
             "explainer": 1 if "y" in dims else 1 << 16}
    chunks = tuple(max(1, min(s, split.get(d, s))) for d, s in zip(dims, shape, strict=True))
    return group.create_array(name, shape=shape, chunks=chunks, dtype=dtype,
                              fill_value=fill, dimension_names=dims, overwrite=True)


def create_store(cmp: Comparison) -> zarr.Group:
    """The comparison store with its axes and empty per-image arrays."""
    group = zarr.open_group(str(cmp.store_path), mode="w", zarr_format=3)
    n, e = len(cmp.match.ids), len(cmp.explainers)
    image = _create(group, "image", ("image",), (n,), str, "")
    image[:] = np.asarray(cmp.match.ids, dtype=object)
    explainer = _create(group, "explainer", ("explainer",), (e,), str, "")
    explainer[:] = np.asarray(cmp.explainers, dtype=object)
    for name in ("spearman", "iou"):
        _create(group, name, ("explainer", "image"), (e, n), np.float32, np.nan)
    for m in cmp.metrics:
        for side in "ab":
            _create(group, f"metric_{m}_{side}", ("explainer", "image"), (e, n), np.float32,
                    np.nan)
    for side in "ab":
        _create(group, f"pred_{side}", ("image",), (n,), np.int16, -1)
        _create(group, f"prob_{side}", ("image",), (n,), np.float32, np.nan)
        _create(group, f"status_{side}", ("image",), (n,), str, "")
    _create(group, "label", ("image",), (n,), np.int16, -1)
    _create(group, "pred_changed", ("image",), (n,), bool, False)
    # Each image's B - A on the test's grid, a chunk per explainer and shard: written as the
    # shards are, and read one explainer at a time by the tests.
    cells = cmp.settings.grid ** 2
    group.create_array("grid_diff", shape=(e, n, cells), dtype=np.float32, fill_value=np.nan,
                       chunks=(1, max(1, min(n, shard_size(cmp.a.view))), cells),
                       dimension_names=("explainer", "image", "cell"), overwrite=True)
    group.update_attributes({"digest": cmp.digest, "complete": False})
    return group


def _names(classes: Sequence[str], idx: np.ndarray) -> list[str]:
    return [classes[i] if 0 <= i < len(classes) else "" for i in idx.tolist()]


@dataclass
class ShardResult:
    """What one shard's task returns: its per-image rows and its sums per grouping."""

    plan: ShardPlan
    rows: dict[str, np.ndarray]
    sums: dict[str, dict[int, ClassTotals]]


def compute_shard(cmp: Comparison, plan: ShardPlan) -> ShardResult:
    """One shard: read both runs' maps and per-image arrays, compute the per-image figures
    and the shard's class sums. Holds this shard's maps only."""
    a, b, s = cmp.a, cmp.b, cmp.settings
    ra, rb = plan.rows_a, plan.rows_b
    rows: dict[str, np.ndarray] = {}
    for side, run, r in (("a", a, ra), ("b", b, rb)):
        for name in ("pred", "prob", "status"):
            if name in run.view:
                rows[f"{name}_{side}"] = read_rows(run.view.array(name), r)
    rows["label"] = read_rows(a.view.array("label"), ra).astype(np.int16)
    pred_a = rows.get("pred_a", np.full(len(ra), -1)).astype(np.int64)
    pred_b = rows.get("pred_b", np.full(len(ra), -1)).astype(np.int64)
    rows["pred_changed"] = np.asarray(
        [x != y for x, y in zip(_names(a.classes, pred_a), _names(b.classes, pred_b),
                                strict=True)] if a.classes != b.classes else pred_a != pred_b)
    maps_a = np.stack([read_maps(a.view, a.view.slot(m), ra) for m in cmp.explainers])
    maps_b = np.stack([read_maps(b.view, b.view.slot(m), rb) for m in cmp.explainers])
    rows["spearman"] = np.stack([spearman(x, y) for x, y in zip(maps_a, maps_b, strict=True)])
    rows["iou"] = np.stack([top_iou(x, y, s.top_fraction)
                            for x, y in zip(maps_a, maps_b, strict=True)])
    for m in cmp.metrics:
        for side, run, r in (("a", a, ra), ("b", b, rb)):
            arr = run.view.array(f"metric_{m}")
            rows[f"metric_{m}_{side}"] = np.stack(
                [read_rows(arr, r, run.view.slot(x)) for x in cmp.explainers])
    rows["grid_diff"] = np.stack([grid_differences(x, y, s.grid)
                                  for x, y in zip(maps_a, maps_b, strict=True)])
    sums = {"pred": shard_totals(maps_a, maps_b, pred_a, cmp.mean_side)}
    if cmp.labelled:
        sums["label"] = shard_totals(maps_a, maps_b, rows["label"].astype(np.int64),
                                     cmp.mean_side)
    return ShardResult(plan, rows, sums)


def write_rows(group: zarr.Group, result: ShardResult) -> None:
    """Write one shard's per-image rows into the comparison store."""
    out = result.plan.out
    for name, values in result.rows.items():
        arr = group[name]
        if len(arr.shape) >= 2:
            arr[:, out] = values
        else:
            arr[out] = np.asarray(values, dtype=object) if name.startswith("status") else values


def rows_checksum(result: ShardResult) -> str:
    """CRC32 of a shard's rows, for its record."""
    from pipeline.store.access import checksum

    crc = 0
    for name in sorted(result.rows):
        crc = checksum(np.asarray(result.rows[name]), crc)
    return f"{crc:08x}"


# ---------------------------------------------------------------------------- checkpoint


def save_sums(path: Path, digest: str, folded: int,
              totals: dict[str, dict[int, ClassTotals]]) -> None:
    """Write the running sums and the number of shards folded into them, atomically."""
    arrays: dict[str, np.ndarray] = {"folded": np.asarray(folded),
                                     "digest": np.asarray(digest)}
    for g, per_class in totals.items():
        for cls, t in per_class.items():
            for f in dataclasses.fields(t):
                arrays[f"{g}/{cls}/{f.name}"] = getattr(t, f.name)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buf.getvalue())


def load_sums(path: Path, digest: str) -> tuple[int, dict[str, dict[int, ClassTotals]]]:
    """The checkpoint's shards folded and sums; ``(0, {})`` when there is none for
    ``digest``."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return 0, {}
    with data:
        if str(data["digest"]) != digest:
            return 0, {}
        parts: dict[str, dict[int, dict[str, np.ndarray]]] = {}
        for key in data.files:
            if key.count("/") == 2:
                g, cls, name = key.split("/")
                parts.setdefault(g, {}).setdefault(int(cls), {})[name] = data[key]
        totals = {g: {c: ClassTotals(**v) for c, v in per.items()} for g, per in parts.items()}
        return int(data["folded"]), totals


# ---------------------------------------------------------------------------- the run


Reporter = Any  # workflows.runner.progress's reporters (stage_start, advance, stage_end)


def start_fresh(cmp: Comparison) -> None:
    """Remove a comparison of other inputs or settings from the folder."""
    for p in (cmp.store_path, cmp.out / "state"):
        if p.exists():
            shutil.rmtree(p)


def existing_digest(cmp: Comparison) -> str | None:
    try:
        group = zarr.open_group(str(cmp.store_path), mode="r", zarr_format=3)
    except Exception:
        return None
    return str(group.attrs.get("digest"))


def stream(cmp: Comparison, reporter: Reporter,
           after_window: Callable[[int], None] = lambda folded: None
           ) -> dict[str, dict[int, ClassTotals]]:
    """Compute every shard (resuming from the checkpoint) and return the class sums."""
    import dask

    cmp.out.mkdir(parents=True, exist_ok=True)
    if existing_digest(cmp) != cmp.digest:
        start_fresh(cmp)
        group = create_store(cmp)
    else:
        group = zarr.open_group(str(cmp.store_path), mode="r+", zarr_format=3)
    records = Records(cmp.out)
    folded, totals = load_sums(cmp.out / SUMS, cmp.digest)
    totals = totals or {g: {} for g in GROUPINGS if g == "pred" or cmp.labelled}
    n = len(cmp.match.ids)
    done_images = sum(p.out.stop - p.out.start for p in cmp.plans[:folded])
    reporter.stage_start(STAGE, n, done_images)
    last = time.monotonic()
    every = float(os.environ.get("XAI_COMPARE_CHECKPOINT_S", CHECKPOINT_EVERY))
    todo = cmp.plans[folded:]
    step = max(1, cmp.settings.workers)
    for start in range(0, len(todo), step):
        window = todo[start:start + step]
        # The comparison rides in the function (pure=False: no hashing of it), so that Dask
        # does not walk its ids and plans looking for collections on every task.
        task = dask.delayed(partial(compute_shard, cmp), pure=False)
        results = dask.compute(*[task(p) for p in window], scheduler="threads",
                               num_workers=step)
        for result in results:  # in shard order: the sums are folded in one order always
            write_rows(group, result)
            faults.point("compare:after-write")
            for g, part in result.sums.items():
                fold(totals[g], part)
            records.mark_done(f"{STAGE}/{result.plan.index:06d}", cmp.digest,
                              checksum=rows_checksum(result))
            faults.point("compare:after-record")
            folded += 1
            reporter.advance(STAGE, result.plan.out.stop - result.plan.out.start)
        if time.monotonic() - last >= every or folded == len(cmp.plans):
            began = time.monotonic()
            save_sums(cmp.out / SUMS, cmp.digest, folded, totals)
            faults.point("compare:after-checkpoint")
            last = time.monotonic()
            # Large sums (many classes) take a while to write: keep that under 5% of the time.
            every = max(every, 20 * (last - began))
        after_window(folded)
    reporter.stage_end(STAGE)
    return totals


def class_differences(grid_diff: zarr.Array, j: int, groups: np.ndarray, n_classes: int,
                      scratch: Path) -> Iterator[tuple[int, np.ndarray]]:
    """Each class's grid differences ``(n_c, D)`` under explainer ``j``, class by class.

    One pass over the stored rows, in slabs, writes them in class order to a scratch file
    in ``scratch`` (deleted after); each class is then one read of consecutive rows. Memory
    holds a slab and a class, whatever the number of images.
    """
    import tempfile

    order = np.argsort(groups, kind="stable")
    bounds = np.searchsorted(groups[order], np.arange(n_classes + 1))
    dest = np.full(len(groups), -1, np.int64)
    dest[order[bounds[0]:bounds[-1]]] = np.arange(bounds[-1] - bounds[0])
    cells = grid_diff.shape[2]
    row_bytes = 4 * cells
    slab = max(grid_diff.chunks[1], (4096 // grid_diff.chunks[1]) * grid_diff.chunks[1])
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=scratch) as fh:
        fd = fh.fileno()
        for start in range(0, len(groups), slab):
            where = dest[start:start + slab]
            if (where >= 0).any():
                values = np.ascontiguousarray(grid_diff[j, start:start + slab], np.float32)
                for k in np.flatnonzero(where >= 0):
                    os.pwrite(fd, values[k].tobytes(), int(where[k]) * row_bytes)
        for cls in range(n_classes):
            lo, hi = bounds[cls] - bounds[0], bounds[cls + 1] - bounds[0]
            data = os.pread(fd, int(hi - lo) * row_bytes, int(lo) * row_bytes)
            yield cls, np.frombuffer(data, np.float32).reshape(int(hi - lo), cells)


def most_permutations(cmp: Comparison, totals: dict[int, ClassTotals]) -> int:
    """The most permutations a class's test of this grouping draws: ``--permutations``, else
    as many as Holm's correction over its classes with images needs to flag every one."""
    tested = sum(1 for t in totals.values() if (t.count > 0).any())
    return cmp.settings.permutations or permutations_for(tested, cmp.settings.alpha)


def permutation_warning(cmp: Comparison, grouping: str, totals: dict[int, ClassTotals]
                        ) -> str | None:
    """The warning when ``--permutations`` is too few for Holm's first step over this
    grouping's classes: then no class can be flagged, however much it changed."""
    most = most_permutations(cmp, totals)
    tested = sum(1 for t in totals.values() if (t.count > 0).any())
    if tested / (most + 1) <= cmp.settings.alpha:
        return None
    by = "A's prediction" if grouping == "pred" else "label"
    return (f"TOO FEW PERMUTATIONS: --permutations {most} cannot give a p below 1/{most + 1}, "
            f"and Holm over the {tested} classes by {by} needs {cmp.settings.alpha / tested:.2g}"
            f" for the first: no class can be flagged, however much it changed. Leave "
            f"--permutations out (it then draws up to "
            f"{permutations_for(tested, cmp.settings.alpha):,}).")


def class_figures(cmp: Comparison, group: zarr.Group, grouping: str,
                  totals: dict[int, ClassTotals], n_classes: int) -> dict[str, np.ndarray]:
    """Per explainer and class: write the mean maps of each run and their difference
    (``<prefix>mean_a``, ``mean_b``, ``mean_diff``, NaN for a class without images) one class
    at a time, test each class from the stored grid differences, and return the counts and
    the tests (``NaN`` / -1 without images)."""
    prefix = "" if grouping == "pred" else "label_"
    e = len(cmp.explainers)
    h, w = (cmp.mean_side, cmp.mean_side) if cmp.mean_side else \
        cmp.a.view.array("normalized").shape[-2:]
    maps = {name: _create(group, prefix + name, ("explainer", "class", "y", "x"),
                          (e, n_classes, h, w), np.float32, np.nan)
            for name in ("mean_a", "mean_b", "mean_diff")}
    out: dict[str, np.ndarray] = {"count": np.zeros((e, n_classes), np.int32),
                                  "permutations": np.zeros((e, n_classes), np.int32)}
    for name in ("statistic", "null_mean", "null_sd", "score", "p_value"):
        out[name] = np.full((e, n_classes), np.nan, np.float64)
    for cls in sorted(totals):
        t = totals[cls]
        if not 0 <= cls < n_classes:
            continue
        counts = np.maximum(t.count, 1)[:, None, None]
        empty = (t.count <= 0)[:, None, None]
        mean_a = np.where(empty, np.nan, t.sum_a / counts).astype(np.float32)
        mean_b = np.where(empty, np.nan, t.sum_b / counts).astype(np.float32)
        maps["mean_a"][:, cls] = mean_a
        maps["mean_b"][:, cls] = mean_b
        maps["mean_diff"][:, cls] = mean_b - mean_a
        out["count"][:, cls] = t.count.astype(np.int32)
    groups = np.asarray(group["pred_a" if grouping == "pred" else "label"][:], np.int64)
    most = most_permutations(cmp, totals)
    key = (cmp.settings.seed, GROUPINGS.index(grouping))
    for j in range(e):
        for cls, diffs in class_differences(group["grid_diff"], j, groups, n_classes,
                                            cmp.out / "state"):
            if out["count"][j, cls] > 0:
                test = sign_flip_test(diffs, (*key, j, cls), most)
                for f in dataclasses.fields(ClassTest):
                    out[f.name][j, cls] = getattr(test, f.name)
    out["p_adjusted"] = np.stack([holm(out["p_value"][j]) for j in range(e)])
    out["changed"] = out["p_adjusted"] <= cmp.settings.alpha
    # How much the class changed beyond what the maps' noise alone gives: T less the mean of
    # the null (a class of a few noisy images has a large T and a null as large).
    out["excess"] = out["statistic"] - out["null_mean"]
    # Rank 1: the most changed class (by excess, then score); -1: no images.
    rank = np.full((e, n_classes), -1, np.int32)
    for j in range(e):
        have = np.flatnonzero(out["count"][j] > 0)
        order = sorted(have, key=lambda c: (-np.nan_to_num(out["excess"][j, c], nan=-np.inf),
                                            -np.nan_to_num(out["score"][j, c]), c))
        for r, c in enumerate(order):
            rank[j, c] = r + 1
    out["rank"] = rank
    return out


def write_classes(group: zarr.Group, prefix: str, figures: dict[str, np.ndarray]) -> None:
    """Write one grouping's per-class figures ``(explainer, class)``."""
    for name, values in figures.items():
        if values.dtype.kind == "f":
            dtype, fill = np.dtype(np.float32), np.nan
        else:
            dtype, fill = values.dtype, (False if values.dtype == bool else -1)
        arr = _create(group, prefix + name, ("explainer", "class"), values.shape, dtype, fill)
        arr[...] = values.astype(dtype)


def strategy_rows(cmp: Comparison) -> list[dict[str, Any]]:
    """Per explainer and class (A's prediction in A, B's in B): the strategies matched;
    empty when either run has no ``strategy`` array (its report did not run)."""
    if "strategy" not in cmp.a.view or "strategy" not in cmp.b.view:
        return []
    pred_a = np.asarray(read_rows(cmp.a.view.array("pred"), cmp.match.rows_a))
    pred_b = np.asarray(read_rows(cmp.b.view.array("pred"), cmp.match.rows_b))
    names_b = _names(cmp.b.classes, pred_b.astype(np.int64))
    out = []
    for m in cmp.explainers:
        sa = read_rows(cmp.a.view.array("strategy"), cmp.match.rows_a, cmp.a.view.slot(m))
        sb = read_rows(cmp.b.view.array("strategy"), cmp.match.rows_b, cmp.b.view.slot(m))
        for cls, name in enumerate(cmp.a.classes):
            in_a = pred_a == cls
            in_b = np.asarray([x == name for x in names_b])
            la = np.where(in_a, sa, -1)
            lb = np.where(in_b, sb, -1)
            if not ((la >= 0).any() or (lb >= 0).any()):
                continue
            for row in match_strategies(la, lb, cmp.settings.min_overlap):
                out.append({"explainer": m, "class": name, **dataclasses.asdict(row)})
    return out


def run_differences(cmp: Comparison) -> list[Difference]:
    """What differs between the runs: their saved configs, then the store facts that the
    config does not say (the weights' identity, the device, the versions)."""
    diffs = differences(cmp.a.config, cmp.b.config)
    facts = ("weights_id", "device", "arch", "precision", "attributions", "normalized",
             "head", "package_versions", "random_weights")
    keys = {d.key for d in diffs}
    for d in differences({k: cmp.a.attrs.get(k) for k in facts},
                         {k: cmp.b.attrs.get(k) for k in facts}):
        if d.key not in keys:
            diffs.append(Difference("store." + d.key, d.a, d.b))
    return diffs


def finalize(cmp: Comparison, totals: dict[str, dict[int, ClassTotals]]) -> dict[str, Any]:
    """The per-class figures, the strategies and the differences, into the store; returns
    the summary the command prints and the report shows."""
    group = zarr.open_group(str(cmp.store_path), mode="r+", zarr_format=3)
    classes = cmp.a.classes or [str(c) for c in range(1 + max(
        [max(t, default=-1) for t in totals.values()], default=-1))]
    cls_arr = _create(group, "class", ("class",), (len(classes),), str, "")
    cls_arr[:] = np.asarray(classes, dtype=object)
    summary_classes: dict[str, Any] = {}
    most = max((most_permutations(cmp, t) for t in totals.values()), default=0)
    cmp.warnings = [w for g, t in totals.items() if (w := permutation_warning(cmp, g, t))]
    for grouping, per_class in totals.items():
        prefix = "" if grouping == "pred" else "label_"
        figures = class_figures(cmp, group, grouping, per_class, len(classes))
        write_classes(group, prefix, figures)
        summary_classes[grouping] = class_table(cmp, figures, classes)
    strategies = strategy_rows(cmp)
    diffs = [dataclasses.asdict(d) for d in run_differences(cmp)]
    summary = {
        "run_a": str(cmp.a.path), "run_b": str(cmp.b.path), "images": len(cmp.match.ids),
        "only_a": cmp.match.only_a, "only_b": cmp.match.only_b,
        "explainers": cmp.explainers, "skipped_explainers": cmp.skipped_explainers,
        "metrics": cmp.metrics, "settings": dataclasses.asdict(cmp.settings),
        "differences": diffs, "classes": summary_classes, "strategies": strategies,
        "labelled": cmp.labelled, "flags": {"a": cmp.a.flags, "b": cmp.b.flags},
        "warnings": cmp.warnings,
        "test": (f"sign-flip permutation test, up to {most:,} permutations a class (stopping "
                 f"once {STOP_AFTER} reach the observed change), seed {cmp.settings.seed}, "
                 f"{cmp.settings.grid}x{cmp.settings.grid} grid, Holm-adjusted over classes, "
                 f"alpha {cmp.settings.alpha}"),
        "mean_map_side": cmp.mean_side or None,
    }
    group.update_attributes({"summary": json.loads(json.dumps(summary, default=_plain)),
                             "complete": True, "run_a": str(cmp.a.path),
                             "run_b": str(cmp.b.path)})
    atomic_write_json(cmp.out / "comparison.json", json.loads(json.dumps(summary,
                                                                         default=_plain)))
    return summary


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def class_table(cmp: Comparison, figures: dict[str, np.ndarray], classes: Sequence[str]
                ) -> dict[str, list[dict[str, Any]]]:
    """Per explainer: the classes with images, most changed first."""
    out: dict[str, list[dict[str, Any]]] = {}
    for j, m in enumerate(cmp.explainers):
        rows = []
        for c in np.argsort(np.where(figures["rank"][j] > 0, figures["rank"][j], 10**9),
                            kind="stable"):
            if figures["rank"][j, c] < 0:
                continue
            rows.append({"class": classes[c], "index": int(c),
                         "rank": int(figures["rank"][j, c]),
                         "images": int(figures["count"][j, c]),
                         "statistic": _f(figures["statistic"][j, c]),
                         "excess": _f(figures["excess"][j, c]),
                         "score": _f(figures["score"][j, c]),
                         "p_value": _f(figures["p_value"][j, c]),
                         "p_adjusted": _f(figures["p_adjusted"][j, c]),
                         "changed": bool(figures["changed"][j, c])})
        out[m] = rows
    return out


def _f(v: Any) -> float | None:
    v = float(v)
    return None if not np.isfinite(v) else round(v, 6)


def link_runs(cmp: Comparison) -> None:
    """Add this comparison to each run's ``comparisons.json`` (for its report's links)."""
    sides = [("A", cmp.a, cmp.b)] + ([("B", cmp.b, cmp.a)] if cmp.b.path != cmp.a.path else [])
    for side, run, other in sides:
        path = run.path / COMPARISONS_FILE
        data = read_json(path)
        entries = [e for e in (data if isinstance(data, list) else [])
                   if isinstance(e, dict) and e.get("path") != str(cmp.out)]
        entries.append({"path": str(cmp.out), "as": side, "other": str(other.path)})
        # A run folder we may not write: the comparison stands without the link.
        with contextlib.suppress(OSError):
            atomic_write_json(path, entries)


def compare(run_a: Path, run_b: Path, out: Path | None, settings: CompareSettings,
            reporter: Reporter, after_window: Callable[[int], None] = lambda folded: None
            ) -> dict[str, Any]:
    """Compare two runs (see the module's docstring); returns the summary."""
    cmp = prepare(run_a, run_b, out, settings)
    totals = stream(cmp, reporter, after_window)
    summary = finalize(cmp, totals)
    from workflows.commands.compare_report import write_report

    summary["report"] = str(write_report(cmp, summary))
    link_runs(cmp)
    return summary


def summary_lines(summary: dict[str, Any], top: int = 5) -> list[str]:
    """What ``xai compare`` prints: the images, the methods, what differs, and per method
    and grouping the most changed classes."""
    lines = [f"compared {summary['images']} images: {summary['run_a']} (A) against "
             f"{summary['run_b']} (B)"]
    if summary["only_a"] or summary["only_b"]:
        lines.append(f"left out: {summary['only_a']} images only in A, {summary['only_b']} "
                     "only in B")
    for side, flags in (summary.get("flags") or {}).items():
        lines += [f"RUN {side.upper()}: {flag}" for flag in flags]
    lines += list(summary.get("warnings") or [])
    lines.append("methods: " + ", ".join(summary["explainers"]))
    for side, names in summary["skipped_explainers"].items():
        if names:
            lines.append(f"only in {side.upper()} (not compared): {', '.join(names)}")
    diffs = summary["differences"]
    lines.append(f"what differs ({len(diffs)}):" if diffs else "what differs: nothing in "
                 "the saved configs")
    lines += [f"  {d['key']}: {d['a']} -> {d['b']}" for d in diffs]
    lines.append(f"test: {summary['test']}")
    for grouping, per_method in summary["classes"].items():
        by = "A's prediction" if grouping == "pred" else "label"
        for m, rows in per_method.items():
            flagged = [r for r in rows if r["changed"]]
            lines.append(f"{m}, classes by {by}: {len(flagged)} of {len(rows)} changed")
            for r in rows[:top]:
                lines.append(f"  {r['rank']}. {r['class']}: change {r['excess']} beyond "
                             f"noise (score {r['score']}), p {r['p_value']} (adjusted "
                             f"{r['p_adjusted']}), "
                             f"{r['images']} images{', CHANGED' if r['changed'] else ''}")
    if "report" in summary:
        lines.append(f"report: {summary['report']}")
    return lines


def print_summary(console: Any, summary: dict[str, Any]) -> None:
    """Print :func:`summary_lines` (no markup: class names are data)."""
    for line in summary_lines(summary):
        # A degenerate run, or a test that cannot flag anything: the figures below mislead.
        flagged = line.startswith(("RUN ", "TOO FEW PERMUTATIONS"))
        console.print(line, markup=False, highlight=False,
                      style="bold red" if flagged else None)
