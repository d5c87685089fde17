"""``ingest``: decode, resize and centre-crop each image; the uint8 crop, or why it cannot be
used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.store.encoding import STORE_DEFAULTS
from workflows.config.run_config import Config
from workflows.config.sections import GENERATED_LAYOUTS
from workflows.runner import fault_injection as faults
from workflows.runner.disk_writes import disk_errors
from workflows.runner.stage_api import Stage, Task, done, open_view, register_stage


@register_stage
class Ingest(Stage):
    name = "ingest"
    record_facts = ("skipped",)
    reads = ("image",)
    writes = ("pixels", "mask", "status")
    doc = "decode, resize, centre-crop; the uint8 crop or why the file cannot be used"

    def depends(self, cfg: Config, method: str | None, weights_id: str) -> Any:
        d = cfg.dataset
        return {"layout": d.layout, "labels_csv": d.labels_csv, "limit": d.limit,
                "per_class": d.per_class, "count": d.count, "resize": d.resize,
                "crop": d.crop, "max_pixels": d.max_pixels, "shard_size": cfg.run.shard_size,
                "synthetic_seed": cfg.run.seed if d.layout in GENERATED_LAYOUTS else None,
                "classes": cfg.model_classes(),
                **({"shortcut": [d.shortcut, d.shortcut_fraction]} if d.shortcut else {}),
                # Said only where it differs from the default, so older stores stay current.
                **({"interpolation": cfg.model.interpolation}
                   if cfg.model.interpolation != "bilinear" else {}),
                **({"resize_mode": mode}
                   if (mode := cfg.resize_mode()) != "short-side" else {}),
                # The store's [store] choices (its arrays' dtypes and files): fixed when it
                # is made; said where they differ from the default, so older stores stay current.
                **{setting: choice for setting, choice in cfg.store_choices().items()
                   if choice != STORE_DEFAULTS[setting]}}

    def run(self, task: Task) -> dict[str, Any]:
        from pipeline.data.images import preprocess_transform

        u, d = task.unit, task.cfg.dataset
        store = open_view(task)
        ids = store.array("image")[u.start:u.stop]
        transform = preprocess_transform(d.resize, d.crop, task.cfg.model.interpolation,
                                         task.cfg.resize_mode())
        pixels = np.zeros((u.size, d.crop, d.crop, 3), dtype=np.uint8)
        mask = np.zeros((u.size, d.crop, d.crop), dtype=bool)
        status = np.empty(u.size, dtype=object)
        for k, image_id in enumerate(ids):
            status[k] = _one(task.cfg, u.start + k, str(image_id), transform, pixels[k],
                             mask[k])
        faults.point("ingest:before-write")
        with disk_errors(task.store_path):
            rows = slice(u.start, u.stop)
            store.write("pixels", rows, pixels)
            store.write("mask", rows, mask)
            faults.point("ingest:mid-write")
            store.write("status", rows, status)
        # What `xai status` lists, kept in the record so that it reads no image arrays.
        labels = np.asarray(store.array("label")[u.start:u.stop])
        skipped = {str(i): str(s) for i, s in zip(ids, status, strict=True) if s != "ok"}
        return done(task, store, skipped=skipped, unlabelled=int((labels < 0).sum()))


def _one(cfg: Config, index: int, image_id: str, transform: Any, pixels: np.ndarray,
         mask: np.ndarray) -> str:
    """Fill ``pixels`` (and ``mask``) for image ``index``; return its status."""
    from pipeline.data.images import ImageDecodeError, load_image, to_uint8_hwc
    from pipeline.data.layouts import synthetic_image

    d, seed = cfg.dataset, cfg.run.seed
    try:
        if d.layout == "evidence":
            from pipeline.data.evidence_dataset import evidence_image

            made = evidence_image(index, seed, d.crop, str(d.root or "."), "test",
                                  cfg.shortcut())
            pixels[:], mask[:] = made.pixels, made.mask
            return "ok"
        if d.layout == "synthetic":
            from PIL import Image

            img = Image.fromarray(synthetic_image(index, d.resize, seed))
        else:
            img = load_image(Path(d.root or ".") / image_id, max_pixels=d.max_pixels)
        pixels[:] = to_uint8_hwc(transform(img))
        return "ok"
    except ImageDecodeError as exc:
        return str(exc)
    except Exception as exc:  # one bad file must never stop a 50,000-image run
        return f"cannot preprocess: {type(exc).__name__}: {exc}"
