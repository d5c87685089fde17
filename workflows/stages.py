"""The stages ``ingest -> predict -> attribute -> aggregate -> normalize -> render``.

Each stage works in shards (fixed runs of images = the store's chunks on the image axis). A
shard task opens the store by path, computes, writes its region, then writes its completion
record; it needs nothing from the process that planned it. ``ingest``, ``aggregate``,
``normalize`` and ``render`` run as Dask tasks; ``predict`` and ``attribute`` run in this
process on the model's device, with the next shard's read and the last shard's write
overlapping the compute.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.store import array, open_store
from workflows import faults
from workflows.state import Records, disk_errors

STAGES: tuple[str, ...] = ("ingest", "predict", "attribute", "aggregate", "normalize", "render")
#: The arrays each stage writes; their regions are checksummed in the stage's records.
STAGE_ARRAYS: dict[str, tuple[str, ...]] = {
    "ingest": ("pixels", "status"),
    "predict": ("logits", "pred", "prob"),
    "attribute": ("raw", "delta"),
    "aggregate": ("aggregated",),
    "normalize": ("normalized",),
}
METHOD_AXIS = frozenset({"raw", "delta", "aggregated", "normalized"})


@dataclass(frozen=True)
class Shard:
    """Images ``[start, stop)``; ``index`` names its record."""

    index: int
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


def make_shards(n: int, size: int) -> list[Shard]:
    """Fixed, contiguous shards of ``size`` images (the last may be shorter)."""
    return [Shard(i, s, min(s + size, n)) for i, s in enumerate(range(0, n, size))]


def stage_units(stage: str, n: int, shard_size: int, images_per_sheet: int) -> list[Shard]:
    """The units a stage works and records in: contact sheets for ``render``, else shards."""
    return make_shards(n, images_per_sheet if stage == "render" else shard_size)


@dataclass
class StageStats:
    """What a stage did: counts and timing, for the summary."""

    stage: str
    shards_total: int = 0
    shards_run: int = 0
    images_run: int = 0
    seconds: float = 0.0
    wait_seconds: float = 0.0


def checksum(values: np.ndarray, crc: int = 0) -> int:
    """CRC32 of an array's content (strings joined), continuing from ``crc``."""
    arr = np.asarray(values)
    if arr.dtype.kind in "OUT":
        return zlib.crc32("\x00".join(str(v) for v in arr.ravel()).encode(), crc)
    return zlib.crc32(np.ascontiguousarray(arr).view(np.uint8).ravel(), crc)


def region_checksum(store_path: Path | str, stage: str, shard: Shard) -> str:
    """CRC32 of what the store holds for ``stage``'s arrays in ``shard``'s region.

    Records carry it (read back after the write), so ``xai verify`` can tell a deleted or
    damaged chunk from a legitimately empty one: Zarr reads a missing chunk as fill values.
    """
    group = open_store(store_path, mode="r")
    crc = 0
    for name in STAGE_ARRAYS[stage]:
        arr = array(group, name)
        region = arr[:, shard.start:shard.stop] if name in METHOD_AXIS else \
            arr[shard.start:shard.stop]
        crc = checksum(np.asarray(region), crc)
    return f"{crc:08x}"


def file_checksum(path: Path) -> str:
    """CRC32 of a file's bytes."""
    return f"{zlib.crc32(path.read_bytes()):08x}"


def mark_done(run_dir: Path | str, store_path: Path | str, stage: str, shard: Shard,
              digest: str, **info: object) -> None:
    """Record ``shard`` of ``stage`` as done, with the checksum of what was stored."""
    Records(Path(run_dir)).mark_done(stage, shard.index, digest, images=shard.size,
                                     checksum=region_checksum(store_path, stage, shard), **info)


# --------------------------------------------------------------------------- ingest


def ingest_shard(store_path: str, run_dir: str, shard: Shard, root: str | None, layout: str,
                 resize: int, crop: int, max_pixels: int, seed: int, digest: str) -> int:
    """Decode, preprocess and store the crops of one shard; record it. Returns images done."""
    from pipeline.data import ImageDecodeError, load_image, preprocess_transform, to_uint8_hwc
    from pipeline.datasets import synthetic_image

    group = open_store(store_path)
    ids = array(group, "image")[shard.start:shard.stop]
    transform = preprocess_transform(resize, crop)
    pixels = np.zeros((shard.size, crop, crop, 3), dtype=np.uint8)
    status = np.empty(shard.size, dtype=object)
    for k, image_id in enumerate(ids):
        try:
            if layout == "synthetic":
                from PIL import Image

                img = Image.fromarray(synthetic_image(shard.start + k, resize, seed))
            else:
                img = load_image(Path(root or ".") / str(image_id), max_pixels=max_pixels)
            pixels[k] = to_uint8_hwc(transform(img))
            status[k] = "ok"
        except ImageDecodeError as exc:
            status[k] = str(exc)
        except Exception as exc:  # one bad file must never stop a 50,000-image run
            status[k] = f"cannot preprocess: {type(exc).__name__}: {exc}"
    faults.point("ingest:before-write")
    with disk_errors(store_path):
        array(group, "pixels")[shard.start:shard.stop] = pixels
        faults.point("ingest:mid-write")
        array(group, "status")[shard.start:shard.stop] = status
    faults.point("ingest:after-write")
    mark_done(run_dir, store_path, "ingest", shard, digest)
    faults.point("ingest:after-record")
    return shard.size


# ----------------------------------------------------------------- predict / attribute


def pipelined(shards: Sequence[Shard], load: Callable[[Shard], Any],
              compute: Callable[[Shard, Any], Any], write: Callable[[Shard, Any], None],
              on_done: Callable[[Shard], None], prefetch: bool = True) -> float:
    """Run load -> compute -> write over shards with the neighbours' I/O overlapped.

    While shard ``i`` computes, shard ``i+1`` is read and shard ``i-1`` written in background
    threads; at most one write is outstanding, so memory stays bounded.

    Returns
    -------
    float
        Seconds the compute loop sat waiting for reads or writes (device idle time).
    """
    if not shards:
        return 0.0
    waited = 0.0
    if not prefetch:
        for shard in shards:
            t0 = time.perf_counter()
            data = load(shard)
            waited += time.perf_counter() - t0
            result = compute(shard, data)
            t0 = time.perf_counter()
            write(shard, result)
            waited += time.perf_counter() - t0
            on_done(shard)
        return waited
    with ThreadPoolExecutor(1, thread_name_prefix="xai-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="xai-write") as writer:
        next_data: Future[Any] = reader.submit(load, shards[0])
        pending: tuple[Shard, Future[None]] | None = None
        for i, shard in enumerate(shards):
            t0 = time.perf_counter()
            data = next_data.result()
            waited += time.perf_counter() - t0
            if i + 1 < len(shards):
                next_data = reader.submit(load, shards[i + 1])
            result = compute(shard, data)
            if pending is not None:
                t0 = time.perf_counter()
                pending[1].result()
                waited += time.perf_counter() - t0
                on_done(pending[0])
            pending = (shard, writer.submit(write, shard, result))
        if pending is not None:
            pending[1].result()
            on_done(pending[0])
    return waited


@dataclass
class ComputeContext:
    """What predict/attribute need in this process."""

    store_path: Path
    run_dir: Path
    loaded: Any  # pipeline.model.LoadedModel
    device: Any  # torch.device
    precision: str
    max_batch: int
    methods: dict[str, dict[str, Any]]
    run_seed: int


def _load_rows(ctx: ComputeContext, shard: Shard, with_pred: bool) -> dict[str, np.ndarray]:
    group = open_store(ctx.store_path)
    out = {
        "pixels": array(group, "pixels")[shard.start:shard.stop],
        "status": np.asarray(array(group, "status")[shard.start:shard.stop], dtype=object),
    }
    if with_pred:
        out["pred"] = np.asarray(array(group, "pred")[shard.start:shard.stop])
    return out


def _to_input(ctx: ComputeContext, pixels: np.ndarray) -> Any:
    from pipeline.data import from_uint8_hwc, normalize

    return normalize(from_uint8_hwc(pixels)).to(ctx.device)


def run_predict(ctx: ComputeContext, shards: Sequence[Shard], digest: str,
                on_done: Callable[[Shard], None], prefetch: bool = True) -> float:
    """Logits, predicted class and its probability for every ``ok`` image."""
    import torch

    from pipeline.precision import precision_mode

    batch = max(1, ctx.max_batch * 4)  # no backward pass: four times the samples fit

    def compute(shard: Shard, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = np.flatnonzero(data["status"] == "ok")
        logits = np.full((shard.size, 1000), np.nan, dtype=np.float32)
        pred = np.full(shard.size, -1, dtype=np.int16)
        prob = np.full(shard.size, np.nan, dtype=np.float32)
        if ok.size:
            x = _to_input(ctx, data["pixels"][ok])
            with torch.no_grad(), precision_mode(ctx.precision, ctx.device):
                out = torch.cat([ctx.loaded.backbone(x[i:i + batch]).float()
                                 for i in range(0, x.shape[0], batch)])
            soft = out.double().softmax(dim=1)
            top = soft.argmax(dim=1)
            logits[ok] = out.cpu().numpy()
            pred[ok] = top.cpu().numpy().astype(np.int16)
            prob[ok] = soft.gather(1, top.view(-1, 1)).squeeze(1).float().cpu().numpy()
        return {"logits": logits, "pred": pred, "prob": prob}

    def write(shard: Shard, result: dict[str, np.ndarray]) -> None:
        faults.point("predict:before-write")
        group = open_store(ctx.store_path)
        with disk_errors(ctx.store_path):
            array(group, "logits")[shard.start:shard.stop] = result["logits"]
            faults.point("predict:mid-write")
            array(group, "pred")[shard.start:shard.stop] = result["pred"]
            array(group, "prob")[shard.start:shard.stop] = result["prob"]
        faults.point("predict:after-write")
        mark_done(ctx.run_dir, ctx.store_path, "predict", shard, digest)
        faults.point("predict:after-record")

    return pipelined(shards, lambda s: _load_rows(ctx, s, False), compute, write, on_done,
                     prefetch)


def run_attribute(ctx: ComputeContext, shards: Sequence[Shard], digest: str,
                  on_done: Callable[[Shard], None], prefetch: bool = True) -> float:
    """Every configured method on every ``ok`` image of each shard; raw maps and deltas."""
    import torch

    from pipeline.methods import METHODS, attribute, image_seed
    from pipeline.precision import precision_mode

    names = list(ctx.methods)
    crop = None

    def compute(shard: Shard, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        nonlocal crop
        faults.delay("attribute")
        crop = data["pixels"].shape[1]
        ok = np.flatnonzero((data["status"] == "ok") & (data["pred"] >= 0))
        raw = np.full((len(names), shard.size, 3, crop, crop), np.nan, dtype=np.float32)
        delta = np.full((len(names), shard.size), np.nan, dtype=np.float32)
        if ok.size:
            x = _to_input(ctx, data["pixels"][ok])
            target = torch.as_tensor(data["pred"][ok].astype(np.int64), device=ctx.device)
            seeds = [image_seed(ctx.run_seed, shard.start + int(k)) for k in ok]
            for m, name in enumerate(names):
                with precision_mode(ctx.precision, ctx.device):
                    attr, d = attribute(METHODS[name], ctx.loaded.model, x, target,
                                        ctx.methods[name], ctx.max_batch, seeds)
                raw[m, ok] = attr.cpu().numpy()
                delta[m, ok] = d.cpu().numpy()
        return {"raw": raw, "delta": delta}

    def write(shard: Shard, result: dict[str, np.ndarray]) -> None:
        faults.point("attribute:before-write")
        group = open_store(ctx.store_path)
        raw_arr, delta_arr = array(group, "raw"), array(group, "delta")
        with disk_errors(ctx.store_path):
            for m in range(len(names)):
                raw_arr[m, shard.start:shard.stop] = result["raw"][m]
                delta_arr[m, shard.start:shard.stop] = result["delta"][m]
                faults.point("attribute:mid-write")
        faults.point("attribute:after-write")
        mark_done(ctx.run_dir, ctx.store_path, "attribute", shard, digest)
        faults.point("attribute:after-record")

    return pipelined(shards, lambda s: _load_rows(ctx, s, True), compute, write, on_done,
                     prefetch)


# ------------------------------------------------------------ aggregate / normalize


def _record_after(_stored: Any, store_path: str, run_dir: str, stage: str, shard: Shard,
                  digest: str) -> int:
    faults.point(f"{stage}:after-write")
    mark_done(run_dir, store_path, stage, shard, digest)
    faults.point(f"{stage}:after-record")
    return shard.size


def _faulty(stage: str, fn: Callable[[np.ndarray], np.ndarray]
            ) -> Callable[[np.ndarray], np.ndarray]:
    def block(x: np.ndarray) -> np.ndarray:
        out = fn(x)
        if x.size:  # dask also calls with empty meta arrays; those are not writes
            faults.point(f"{stage}:before-write")
        return out

    block.__name__ = f"{stage}_block"
    return block


def postprocess_tasks(stage: str, store_path: Path, run_dir: Path, shards: Sequence[Shard],
                      digest: str) -> list[Any]:
    """Dask tasks for ``aggregate`` or ``normalize``: one block per shard, then its record.

    The source is read with ``da.from_zarr`` (all methods x one shard per block) and each
    shard's block is stored into the existing target array's region; the record task depends
    on that store, so it is written only after the data.
    """
    import dask.array as da
    from dask import delayed

    from pipeline.postprocess import aggregate_block, normalize_block

    group = open_store(store_path)
    src_name, dst_name = {"aggregate": ("raw", "aggregated"),
                          "normalize": ("aggregated", "normalized")}[stage]
    src_arr, dst = array(group, src_name), array(group, dst_name)
    shard_len = src_arr.chunks[1]
    src = da.from_zarr(src_arr).rechunk({0: -1, 1: shard_len})
    block_fn = _faulty(stage, aggregate_block if stage == "aggregate" else normalize_block)
    if stage == "aggregate":
        out = src.map_blocks(block_fn, drop_axis=2, dtype=np.float32)
    else:
        out = src.map_blocks(block_fn, dtype=np.float32)
    tasks = []
    for shard in shards:
        region = (slice(None), slice(shard.start, shard.stop))
        stored = da.store(out[:, shard.start:shard.stop], dst, regions=region, lock=False,
                          compute=False)
        tasks.append(delayed(_record_after, pure=False)(
            stored, str(store_path), str(run_dir), stage, shard, digest,
            dask_key_name=f"record-{stage}-{shard.index}-{digest}"))
    return tasks


# --------------------------------------------------------------------------- render


def sheet_path(run_dir: Path, index: int) -> Path:
    return run_dir / "sheets" / f"sheet-{index:04d}.png"


def render_sheet(store_path: str, run_dir: str, sheet: Shard, methods: list[str],
                 class_names: list[str], colormap: str, dpi: int, banner: str | None,
                 digest: str) -> int:
    """Render one contact sheet (images ``[start, stop)``) atomically and record it."""
    from pipeline.render import SheetRow, contact_sheet, save_figure_atomic

    group = open_store(store_path)
    sl = slice(sheet.start, sheet.stop)
    ids = array(group, "image")[sl]
    status = array(group, "status")[sl]
    pixels = array(group, "pixels")[sl]
    pred = array(group, "pred")[sl]
    prob = array(group, "prob")[sl]
    label = array(group, "label")[sl]
    maps = array(group, "normalized")[:, sl]
    rows = []
    for k in range(sheet.size):
        p, t = int(pred[k]), int(label[k])
        rows.append(SheetRow(
            image_id=str(ids[k]), pixels=pixels[k], maps=maps[:, k], status=str(status[k]),
            pred_name=class_names[p] if p >= 0 else "?", prob=float(prob[k]),
            true_name=class_names[t] if t >= 0 else None))
    title = f"images {sheet.start + 1}-{sheet.stop}"
    fig = contact_sheet(rows, methods, colormap=colormap, banner=banner, title=title)
    path = sheet_path(Path(run_dir), sheet.index)
    faults.point("render:before-write")
    with disk_errors(path):
        save_figure_atomic(fig, path, dpi=dpi,
                           before_rename=lambda: faults.point("render:mid-write"))
    faults.point("render:after-write")
    Records(Path(run_dir)).mark_done("render", sheet.index, digest, images=sheet.size,
                                     file=path.name, checksum=file_checksum(path))
    faults.point("render:after-record")
    return sheet.size


def remove_stale_sheets(run_dir: Path, valid: set[int]) -> int:
    """Delete sheet files without a current record (e.g. after images_per_sheet changed)."""
    removed = 0
    folder = run_dir / "sheets"
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
