"""The stages ``ingest -> predict -> attribute -> aggregate -> normalize -> render``.

Each stage is a shard function followed by its :func:`~workflows.registry.register` call. A
shard function is a self-contained task: it opens the store by path, loads what it needs (the
model through the worker's cache), computes, writes its own region and returns what the
coordinator needs for the completion record (a checksum of the region read back, counts,
timings, who ran it). It never writes records: the coordinator alone does, after the data.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.render import SheetStyle
from pipeline.store import EXPLAINER_ARRAYS, array, explainer_index, open_store
from workflows import faults, worker
from workflows.config import Config
from workflows.registry import STAGES, Stage, Unit, register
from workflows.state import disk_errors


def sheet_style(cfg: Config) -> SheetStyle:
    r = cfg.render
    return SheetStyle(colormap=r.colormap, signed_colormap=r.signed_colormap,
                      clip_percentile=r.clip_percentile, signed=r.signed, overlay=r.overlay)


@dataclass(frozen=True)
class RunSettings:
    """What shard tasks need from the config (picklable; the same for every task of a run)."""

    root: str | None
    layout: str
    resize: int
    crop: int
    max_pixels: int
    seed: int
    methods: Mapping[str, Mapping[str, Any]]
    precision: str
    style: SheetStyle
    tiles: bool
    banner: str | None
    class_names: tuple[str, ...]
    target: str = "predicted"
    head: str = "softmax"
    evaluate: Mapping[str, Any] = field(default_factory=dict)
    #: The evidence layout's planted shortcut: (class, fraction); class -1 for none.
    shortcut: tuple[int, float] = (-1, 0.5)
    report: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        """The model's class count (the width of ``logits``)."""
        return len(self.class_names)

    @classmethod
    def from_config(cls, cfg: Config, layout: str, banner: str | None,
                    class_names: tuple[str, ...]) -> RunSettings:
        d = cfg.dataset
        return cls(root=str(d.root) if d.root else None, layout=layout, resize=d.resize,
                   crop=d.crop, max_pixels=d.max_pixels, seed=cfg.run.seed,
                   methods={k: dict(v) for k, v in cfg.methods.items()},
                   precision=cfg.run.precision, style=sheet_style(cfg),
                   tiles=cfg.render.tiles, banner=banner, class_names=tuple(class_names),
                   target=cfg.run.target, head=cfg.model.head,
                   evaluate=cfg.to_dict()["evaluate"],
                   shortcut=(cfg.shortcut().label, cfg.shortcut().fraction),
                   report=cfg.to_dict()["report"])


@dataclass(frozen=True)
class Task:
    """One unit of one stage, with everything needed to run it anywhere."""

    unit: Unit
    store_path: str
    run_dir: str
    settings: RunSettings
    engine: worker.EngineSpec | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def execute(task: Task) -> dict[str, Any]:
    """Run ``task`` on this worker; return the record's content (without the hash)."""
    started = time.time()
    result = STAGES[task.unit.stage].run(task)
    result.setdefault("worker", worker.identity())
    result["started"], result["ended"] = started, time.time()
    return result


# --------------------------------------------------------------------------- checksums


def checksum(values: np.ndarray, crc: int = 0) -> int:
    """CRC32 of an array's content (strings joined), continuing from ``crc``."""
    arr = np.asarray(values)
    if arr.dtype.kind in "OUT":
        return zlib.crc32("\x00".join(str(v) for v in arr.ravel()).encode(), crc)
    return zlib.crc32(np.ascontiguousarray(arr).view(np.uint8).ravel(), crc)


def region_checksum(store_path: Path | str, unit: Unit) -> str:
    """CRC32 of what the store holds in ``unit``'s region of its stage's arrays.

    Records carry it (read back after the write), so ``xai verify`` can tell a deleted or
    damaged chunk from a legitimately empty one: Zarr reads a missing chunk as fill values.
    """
    group = open_store(store_path, mode="r")
    crc = 0
    rows = slice(unit.start, unit.stop)
    stage = STAGES[unit.stage]
    dynamic = sorted(k for k in group.array_keys() if k.startswith(stage.writes_prefix)) \
        if stage.writes_prefix else []
    for name in (*stage.writes, *dynamic):
        arr = array(group, name)
        if name in EXPLAINER_ARRAYS:
            region = arr[explainer_index(group, str(unit.method)), rows]
        elif (arr.metadata.dimension_names or ("",))[0] == "explainer":
            region = arr[:, rows]  # every explainer: the unit is per shard, not per method
        else:
            region = arr[rows]
        crc = checksum(np.asarray(region), crc)
    return f"{crc:08x}"


def file_checksum(path: Path) -> str:
    """CRC32 of a file's bytes."""
    return f"{zlib.crc32(path.read_bytes()):08x}"


def unit_checksum(store_path: Path | str, run_dir: Path | str, unit: Unit) -> str:
    """What a unit's record must say: its output file's CRC, or its store region's."""
    stage = STAGES[unit.stage]
    if stage.output_file is not None:
        path = stage.output_file(Path(run_dir), unit)
        return file_checksum(path) if path.is_file() else "missing"
    return region_checksum(store_path, unit)


def _done(task: Task, device: Any = None, **info: Any) -> dict[str, Any]:
    unit = task.unit
    faults.point(f"{unit.stage}:after-write")
    return {"checksum": unit_checksum(task.store_path, task.run_dir, unit),
            "images": unit.size, "worker": worker.identity(device), **info}


# --------------------------------------------------------------------------- ingest


def ingest_shard(task: Task) -> dict[str, Any]:
    """Decode, preprocess and store the crops of one shard."""
    from pipeline.data import ImageDecodeError, load_image, preprocess_transform, to_uint8_hwc
    from pipeline.datasets import synthetic_image

    u, s = task.unit, task.settings
    group = open_store(task.store_path)
    ids = array(group, "image")[u.start:u.stop]
    transform = preprocess_transform(s.resize, s.crop)
    pixels = np.zeros((u.size, s.crop, s.crop, 3), dtype=np.uint8)
    mask = np.zeros((u.size, s.crop, s.crop), dtype=bool)
    status = np.empty(u.size, dtype=object)
    for k, image_id in enumerate(ids):
        try:
            if s.layout == "evidence":
                from pipeline.evidence import Shortcut, evidence_image

                made = evidence_image(u.start + k, s.seed, s.crop, s.root or ".", "test",
                                      Shortcut(*s.shortcut))
                pixels[k], mask[k], status[k] = made.pixels, made.mask, "ok"
                continue
            if s.layout == "synthetic":
                from PIL import Image

                img = Image.fromarray(synthetic_image(u.start + k, s.resize, s.seed))
            else:
                img = load_image(Path(s.root or ".") / str(image_id), max_pixels=s.max_pixels)
            pixels[k] = to_uint8_hwc(transform(img))
            status[k] = "ok"
        except ImageDecodeError as exc:
            status[k] = str(exc)
        except Exception as exc:  # one bad file must never stop a 50,000-image run
            status[k] = f"cannot preprocess: {type(exc).__name__}: {exc}"
    faults.point("ingest:before-write")
    with disk_errors(task.store_path):
        array(group, "pixels")[u.start:u.stop] = pixels
        array(group, "mask")[u.start:u.stop] = mask
        faults.point("ingest:mid-write")
        array(group, "status")[u.start:u.stop] = status
    return _done(task)


def _ingest_depends(cfg: Config, _method: str | None, _weights: str) -> Any:
    d = cfg.dataset
    return {"layout": d.layout, "labels_csv": d.labels_csv, "limit": d.limit,
            "per_class": d.per_class, "count": d.count, "resize": d.resize, "crop": d.crop,
            "max_pixels": d.max_pixels, "shard_size": cfg.run.shard_size,
            "synthetic_seed": cfg.run.seed if d.layout in ("synthetic", "evidence") else None,
            "classes": cfg.model_classes(),
            **({"shortcut": [d.shortcut, d.shortcut_fraction]} if d.shortcut else {})}


register(Stage(
    "ingest", ingest_shard, reads=("image",), writes=("pixels", "mask", "status"), after=(),
    depends=_ingest_depends,
    doc="decode, resize, centre-crop; the uint8 crop or why the file cannot be used"))


# --------------------------------------------------------------------------- predict


def _rows(task: Task, *names: str) -> dict[str, np.ndarray]:
    group = open_store(task.store_path)
    rows = slice(task.unit.start, task.unit.stop)
    out = {name: np.asarray(array(group, name)[rows]) for name in names}
    if "status" in out:
        out["status"] = np.asarray(out["status"], dtype=object)
    return out


def _to_input(pixels: np.ndarray, device: Any) -> Any:
    from pipeline.data import from_uint8_hwc, normalize

    return normalize(from_uint8_hwc(pixels)).to(device)


def predict_shard(task: Task) -> dict[str, Any]:
    """Logits, predicted class and its probability for every ``ok`` image of the shard."""
    import torch

    from pipeline.precision import precision_mode

    assert task.engine is not None
    eng = worker.engine(task.engine)
    u = task.unit
    data = _rows(task, "pixels", "status")
    batch = max(1, eng.max_batch * 4)  # no backward pass: four times the samples fit
    ok = np.flatnonzero(data["status"] == "ok")
    logits = np.full((u.size, task.settings.n_classes), np.nan, dtype=np.float32)
    pred = np.full(u.size, -1, dtype=np.int16)
    prob = np.full(u.size, np.nan, dtype=np.float32)
    compute = 0.0
    if ok.size:
        with worker.device_lock(eng.device):
            t0 = time.perf_counter()
            x = _to_input(data["pixels"][ok], eng.device)
            with torch.no_grad(), precision_mode(task.settings.precision, eng.device):
                out = torch.cat([eng.backbone(x[i:i + batch]).float()
                                 for i in range(0, x.shape[0], batch)])
            soft = out.double().softmax(dim=1)
            top = soft.argmax(dim=1)
            logits[ok] = out.cpu().numpy()
            pred[ok] = top.cpu().numpy().astype(np.int16)
            prob[ok] = soft.gather(1, top.view(-1, 1)).squeeze(1).float().cpu().numpy()
            compute = time.perf_counter() - t0
    faults.point("predict:before-write")
    group = open_store(task.store_path)
    with disk_errors(task.store_path):
        array(group, "logits")[u.start:u.stop] = logits
        faults.point("predict:mid-write")
        array(group, "pred")[u.start:u.stop] = pred
        array(group, "prob")[u.start:u.stop] = prob
    return _done(task, eng.device, compute_seconds=compute, max_batch=eng.max_batch)


def _predict_depends(cfg: Config, _method: str | None, weights_id: str) -> Any:
    return {"weights": weights_id, "precision": cfg.run.precision,
            "channels_last": cfg.run.channels_last, "fuse_bn": cfg.run.fuse_bn,
            "compile": cfg.run.compile}


register(Stage(
    "predict", predict_shard, reads=("pixels", "status"), writes=("logits", "pred", "prob"),
    after=("ingest",), depends=_predict_depends, device=True,
    doc="logits, predicted class and its softmax probability"))


# --------------------------------------------------------------------------- attribute


#: Why an image is not explained under ``[run] target = "label"``.
NO_LABEL = "no label (run.target = label explains the ground-truth class)"


def explained_status(status: str, label: int, target: str) -> str:
    """The image's status as far as its maps go: ``ok``, or why it has no maps (its ingest
    status, or :data:`NO_LABEL` when the label is the target and it has none)."""
    if status == "ok" and target == "label" and label < 0:
        return NO_LABEL
    return status


def attribute_shard(task: Task) -> dict[str, Any]:
    """One method on every ``ok`` image of the shard: raw maps, completeness errors and the
    output gap they are relative to. The target class is the prediction or the label."""
    import torch

    from pipeline.methods import METHODS, attribute, image_seed
    from pipeline.precision import precision_mode

    assert task.engine is not None and task.unit.method is not None
    eng = worker.engine(task.engine)
    u, name = task.unit, task.unit.method
    faults.delay("attribute")
    by_label = task.settings.target == "label"
    data = _rows(task, "pixels", "status", "pred", "label")
    crop = data["pixels"].shape[1]
    classes = data["label"] if by_label else data["pred"]
    ok = np.flatnonzero((data["status"] == "ok") & (data["pred"] >= 0) & (classes >= 0))
    raw = np.full((u.size, 3, crop, crop), np.nan, dtype=np.float32)
    delta = np.full(u.size, np.nan, dtype=np.float32)
    gap = np.full(u.size, np.nan, dtype=np.float32)
    steps = np.full(u.size, np.nan, dtype=np.float32)
    residual = np.full(u.size, np.nan, dtype=np.float32)
    zero_gap = 0
    compute = 0.0
    if ok.size:
        with worker.device_lock(eng.device):
            t0 = time.perf_counter()
            x = _to_input(data["pixels"][ok], eng.device)
            target = torch.as_tensor(classes[ok].astype(np.int64), device=eng.device)
            seeds = [image_seed(task.settings.seed, u.start + int(k)) for k in ok]
            info: dict[str, Any] = {}
            with precision_mode(task.settings.precision, eng.device):
                attr, d, g = attribute(METHODS[name], eng.model, x, target,
                                       task.settings.methods[name], eng.max_batch, seeds,
                                       info=info)
            raw[ok] = attr.cpu().numpy()
            delta[ok] = d.cpu().numpy()
            gap[ok] = g.cpu().numpy()
            if "steps" in info:  # rule = "adaptive"
                steps[ok] = info["steps"]
                residual[ok] = info["residual"]
                zero_gap = int(np.sum(info["zero_gap"]))
            compute = time.perf_counter() - t0
    faults.point("attribute:before-write")
    group = open_store(task.store_path)
    slot = explainer_index(group, name)
    with disk_errors(task.store_path):
        array(group, "raw")[slot, u.start:u.stop] = raw
        faults.point("attribute:mid-write")
        array(group, "delta")[slot, u.start:u.stop] = delta
        array(group, "gap")[slot, u.start:u.stop] = gap
        array(group, "steps")[slot, u.start:u.stop] = steps
        array(group, "residual")[slot, u.start:u.stop] = residual
    return _done(task, eng.device, compute_seconds=compute, max_batch=eng.max_batch,
                 zero_gap=zero_gap)


def _attribute_depends(cfg: Config, method: str | None, _weights: str) -> Any:
    from pipeline.methods import METHODS

    assert method is not None
    spec = METHODS[method]
    return {"head": cfg.model.head, "params": dict(cfg.methods[method]),
            "target": cfg.run.target,
            "seed": cfg.run.seed if spec.stochastic or "baseline" in spec.params else None}


register(Stage(
    "attribute", attribute_shard, reads=("pixels", "status", "pred", "label", "explainer"),
    writes=("raw", "delta", "gap", "steps", "residual"), after=("ingest", "predict"),
    depends=_attribute_depends,
    per_method=True, device=True,
    doc="one method for each image's predicted class (or label): raw maps, completeness "
        "errors and output gaps"))


# ------------------------------------------------------------ aggregate / normalize


def _postprocess(task: Task, src: str, dst: str, fn: Any) -> dict[str, Any]:
    u = task.unit
    group = open_store(task.store_path)
    slot = explainer_index(group, str(u.method))
    block = np.asarray(array(group, src)[slot, u.start:u.stop])
    out = fn(block[None])[0]
    faults.point(f"{u.stage}:before-write")
    with disk_errors(task.store_path):
        array(group, dst)[slot, u.start:u.stop] = out
    return _done(task)


def aggregate_shard(task: Task) -> dict[str, Any]:
    """Channel sum of one method's raw maps in one shard."""
    from pipeline.postprocess import aggregate_block

    return _postprocess(task, "raw", "aggregated", aggregate_block)


def normalize_shard(task: Task) -> dict[str, Any]:
    """``|A|``, minus the minimum, over the maximum, per map, for one method and shard."""
    from pipeline.postprocess import normalize_block

    return _postprocess(task, "aggregated", "normalized", normalize_block)


_POINTS = ("before-write", "after-write", "after-record")

register(Stage(
    "aggregate", aggregate_shard, reads=("raw",), writes=("aggregated",), after=("attribute",),
    depends=lambda cfg, m, w: "channel-sum", per_method=True, crash_points=_POINTS,
    doc="channel sum of each raw map"))

register(Stage(
    "normalize", normalize_shard, reads=("aggregated",), writes=("normalized",),
    after=("aggregate",), depends=lambda cfg, m, w: "abs-min-max", per_method=True,
    crash_points=_POINTS, doc="abs, minus the minimum, over the maximum, per map, in [0, 1]"))


# --------------------------------------------------------------------------- render

def sheet_path(run_dir: Path, index: int) -> Path:
    return Path(run_dir) / "sheets" / f"sheet-{index:04d}.png"


def tile_path(run_dir: Path, method: str, index: int) -> Path:
    """The heat-map tile of image ``index`` for ``method`` (``[render] tiles = true``)."""
    return Path(run_dir) / "tiles" / method / f"{index:06d}.png"


def render_sheet(task: Task) -> dict[str, Any]:
    """Render one contact sheet (images ``[start, stop)``, every method) atomically, and the
    per-(image, method) tiles when asked for."""
    from PIL import Image

    from pipeline.render import SheetRow, contact_sheet, heatmap_tile, save_image_atomic

    sheet, s = task.unit, task.settings
    names = s.class_names
    methods = list(s.methods)
    group = open_store(task.store_path)
    sl = slice(sheet.start, sheet.stop)
    ids, status = array(group, "image")[sl].tolist(), array(group, "status")[sl].tolist()
    pixels, pred = np.asarray(array(group, "pixels")[sl]), np.asarray(array(group, "pred")[sl])
    prob, label = np.asarray(array(group, "prob")[sl]), np.asarray(array(group, "label")[sl])
    source = array(group, "aggregated" if s.style.signed else "normalized")
    maps = np.stack([np.asarray(source[explainer_index(group, m), sl]) for m in methods],
                    axis=1)
    rows = []
    for k in range(sheet.size):
        p, t = int(pred[k]), int(label[k])
        rows.append(SheetRow(
            image_id=str(ids[k]), pixels=pixels[k], maps=maps[k],
            status=explained_status(str(status[k]), t, s.target),
            pred_name=names[p] if p >= 0 else "?", prob=float(prob[k]),
            true_name=names[t] if t >= 0 else None))
    title = f"images {sheet.start + 1}-{sheet.stop}"
    image = contact_sheet(rows, methods, style=s.style, banner=s.banner, title=title)
    path = sheet_path(Path(task.run_dir), sheet.index)
    faults.point("render:before-write")
    with disk_errors(path):
        if s.tiles:
            for k, row in enumerate(rows):
                for c, m in enumerate(methods):
                    if row.status == "ok":
                        tile = Image.fromarray(heatmap_tile(row.maps[c], s.style, row.pixels))
                        save_image_atomic(tile, tile_path(Path(task.run_dir), m,
                                                          sheet.start + k))
        save_image_atomic(image, path, before_rename=lambda: faults.point("render:mid-write"))
    return _done(task, file=path.name)


def remove_stale_sheets(run_dir: Path, valid: set[int]) -> int:
    """Delete sheet files without a current record (e.g. after images_per_sheet changed)."""
    removed = 0
    folder = Path(run_dir) / "sheets"
    if not folder.is_dir():
        return 0
    for path in folder.glob("sheet-*.png"):
        try:
            index = int(path.stem.split("-", 1)[1])
        except ValueError:
            continue
        if index not in valid:
            path.unlink(missing_ok=True)
            removed += 1
    for tmp in folder.glob(".sheet-*.tmp"):
        tmp.unlink(missing_ok=True)
    return removed


register(Stage(
    "render", render_sheet,
    reads=("image", "status", "pixels", "pred", "prob", "label", "normalized", "aggregated"),
    writes=(), after=("ingest", "predict", "normalize"),
    depends=lambda cfg, m, w: [cfg.render.images_per_sheet, sheet_style(cfg).__dict__,
                               cfg.render.tiles, cfg.run.target],
    unit="sheet", output_file=lambda run_dir, u: sheet_path(run_dir, u.index),
    output_dirs=("sheets", "tiles"), remove_stale=remove_stale_sheets,
    doc="contact sheets sheets/sheet-NNNN.png: image + one heat map per method per row"))


# The evaluate and report stages live in their own modules; importing evaluate here registers
# it after render, and it imports report (registered last).
import workflows.evaluate  # noqa: E402, F401
