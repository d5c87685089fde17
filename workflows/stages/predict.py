"""``predict``: logits, predicted class and its softmax probability for every usable image."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from workflows.config.run_config import Config
from workflows.runner import fault_injection as faults
from workflows.runner import worker
from workflows.runner.disk_writes import disk_errors
from workflows.runner.stage_api import (
    Stage,
    Task,
    done,
    open_view,
    register_stage,
    to_input,
    unit_rows,
)


@register_stage
class Predict(Stage):
    name = "predict"
    reads = ("pixels", "status")
    writes = ("logits", "pred", "prob")
    device = True
    doc = "logits, predicted class and its softmax probability"

    def depends(self, cfg: Config, method: str | None, weights_id: str) -> Any:
        from pipeline.models.preprocessing import IMAGENET_MEAN, IMAGENET_STD

        r, m = cfg.run, cfg.model
        imagenet = (tuple(m.mean), tuple(m.std)) == (IMAGENET_MEAN, IMAGENET_STD)
        return {"weights": weights_id, "precision": r.precision,
                "channels_last": r.channels_last, "fuse_bn": r.fuse_bn, "compile": r.compile,
                # Said only where it differs from ImageNet's, so older stores stay current.
                **({} if imagenet else {"mean": list(m.mean), "std": list(m.std)})}

    def run(self, task: Task) -> dict[str, Any]:
        import torch

        from pipeline.attribution.precision import precision_mode

        assert task.model is not None
        eng = worker.model_for(task.model)
        u = task.unit
        store = open_view(task)
        data = store.rows(unit_rows(task), "pixels", "status")
        batch = max(1, eng.max_batch * 4)  # no backward pass: four times the samples fit
        ok = np.flatnonzero(data["status"] == "ok")
        logits = np.full((u.size, len(eng.classes) or task.cfg.model_classes()), np.nan,
                         dtype=np.float32)
        pred = np.full(u.size, -1, dtype=np.int16)
        prob = np.full(u.size, np.nan, dtype=np.float32)
        compute = 0.0
        if ok.size:
            with worker.device_lock(eng.device):
                t0 = time.perf_counter()
                x = to_input(data["pixels"][ok], eng.device, task.cfg.normalization())
                with torch.no_grad(), precision_mode(task.cfg.run.precision, eng.device):
                    out = torch.cat([eng.backbone(x[i:i + batch]).float()
                                     for i in range(0, x.shape[0], batch)])
                soft = out.double().softmax(dim=1)
                top = soft.argmax(dim=1)
                logits[ok] = out.cpu().numpy()
                pred[ok] = top.cpu().numpy().astype(np.int16)
                prob[ok] = soft.gather(1, top.view(-1, 1)).squeeze(1).float().cpu().numpy()
                compute = time.perf_counter() - t0
        faults.point("predict:before-write")
        with disk_errors(task.store_path):
            rows = slice(u.start, u.stop)
            store.write("logits", rows, logits)
            faults.point("predict:mid-write")
            store.write("pred", rows, pred)
            store.write("prob", rows, prob)
        return done(task, store, eng.device, compute_seconds=compute,
                    max_batch=eng.max_batch)
