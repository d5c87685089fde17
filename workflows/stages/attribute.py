"""``attribute``: one method on every usable image of a shard: raw maps, completeness errors
and the output gaps they are relative to. The target is the prediction or the label."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from workflows.config.run_config import Config
from workflows.runner import fault_injection as faults
from workflows.runner import worker
from workflows.runner.disk_writes import disk_errors
from workflows.runner.stage_api import (
    Context,
    Stage,
    Task,
    done,
    explained,
    open_view,
    register_stage,
    to_input,
    unit_rows,
)


@register_stage
class Attribute(Stage):
    name = "attribute"
    reads = ("pixels", "status", "pred", "label", "explainer")
    writes = ("raw", "raw_scale", "delta", "gap", "steps", "residual")
    per_method = True
    device = True
    record_facts = ("completeness",)
    doc = ("one method for each image's predicted class (or label): raw maps, completeness "
           "errors and output gaps")

    def depends(self, cfg: Config, method: str | None, weights_id: str) -> Any:
        from pipeline.attribution.method_registry import METHODS

        assert method is not None
        spec = METHODS[method]
        return {"head": cfg.model.head, "params": dict(cfg.methods[method]),
                "target": cfg.run.target,
                "seed": cfg.run.seed if spec.stochastic or "baseline" in spec.params else None}

    def run(self, task: Task) -> dict[str, Any]:
        import torch

        from pipeline.attribution.method_registry import METHODS, attribute, image_seed
        from pipeline.attribution.precision import precision_mode

        assert task.model is not None and task.unit.method is not None
        eng = worker.model_for(task.model)
        u, name, cfg = task.unit, task.unit.method, task.cfg
        faults.delay("attribute")
        store = open_view(task)
        data = store.rows(unit_rows(task), "pixels", "status", "pred", "label")
        crop = data["pixels"].shape[1]
        ok, classes = explained(data, cfg.run.target)
        out = {k: np.full(u.size, np.nan, dtype=np.float32)
               for k in ("delta", "gap", "steps", "residual")}
        out["raw"] = np.full((u.size, 3, crop, crop), np.nan, dtype=np.float32)
        zero_gap = 0
        compute = 0.0
        if ok.size:
            with worker.device_lock(eng.device):
                t0 = time.perf_counter()
                norm = cfg.normalization()
                x = to_input(data["pixels"][ok], eng.device, norm)
                target = torch.as_tensor(classes[ok].astype(np.int64), device=eng.device)
                seeds = [image_seed(cfg.run.seed, u.start + int(k)) for k in ok]
                info: dict[str, Any] = {}
                with precision_mode(cfg.run.precision, eng.device):
                    spec = METHODS[name]
                    attr, d, g = attribute(spec, eng.for_method(spec.hooks), x, target,
                                           cfg.methods[name], eng.max_batch, seeds, info=info,
                                           norm=norm)
                out["raw"][ok] = attr.cpu().numpy()
                out["delta"][ok] = d.cpu().numpy()
                out["gap"][ok] = g.cpu().numpy()
                if "steps" in info:  # rule = "adaptive"
                    out["steps"][ok] = info["steps"]
                    out["residual"][ok] = info["residual"]
                    zero_gap = int(np.sum(info["zero_gap"]))
                compute = time.perf_counter() - t0
        faults.point("attribute:before-write")
        slot = store.slot(name)
        with disk_errors(task.store_path):
            storage_error = store.write_maps("raw", slot, slice(u.start, u.stop), out["raw"])
            faults.point("attribute:mid-write")
            for key in ("delta", "gap", "steps", "residual"):
                store.write(key, slice(u.start, u.stop), out[key], slot)
        facts = per_image_facts(out) if METHODS[name].has_delta else {}
        return done(task, store, eng.device, compute_seconds=compute, max_batch=eng.max_batch,
                    zero_gap=zero_gap, engine=eng.facts, **facts,
                    **({} if storage_error is None else {"storage_error": storage_error}))

    def finalize(self, ctx: Context) -> dict[str, Any] | None:
        return record_storage_error(ctx, self.name, "raw")


def per_image_facts(out: dict[str, np.ndarray]) -> dict[str, Any]:
    """For a method with a completeness property: each image's relative completeness error
    (and an adaptive rule's steps and residual), in shard order, NaN as None. The record
    keeps them, so that ``xai status`` summarises completeness without reading the store."""
    from pipeline.attribution.method_registry import relative_completeness_error

    def listed(values: np.ndarray) -> list[float | None]:
        return [float(v) if np.isfinite(v) else None for v in np.asarray(values, np.float64)]

    facts: dict[str, Any] = {"relative_error": listed(
        relative_completeness_error(out["delta"], out["gap"]))}
    if np.isfinite(out["steps"]).any():
        facts["steps"], facts["residual"] = listed(out["steps"]), listed(out["residual"])
    return {"per_image": facts}


def record_storage_error(ctx: Context, stage: str, array_name: str) -> dict[str, Any] | None:
    """In a store that keeps ``array_name`` in 16 bits (``[store] attributions`` or
    ``[store] normalized``), the store attribute ``<setting>_error[array_name]``: per method,
    the relative L2 error of the stored maps against the float32 ones, measured on the run's
    first shard (its record's ``storage_error``); None where it is kept in float32."""
    from pipeline.store.schema import stored_choice

    setting = ctx.registry.schema[array_name].encoding
    choice = stored_choice(ctx.group, setting)
    if choice == "float32":
        return None
    first: dict[str, Any] = {}
    for unit in sorted(ctx.planned.get(stage, []), key=lambda u: u.start):
        if unit.method not in first and (rec := ctx.records.get(unit.key)) \
                and "storage_error" in rec:
            first[str(unit.method)] = float(rec["storage_error"])
    errors = dict(ctx.group.attrs.get(f"{setting}_error", {}))
    errors[array_name] = {**errors.get(array_name, {}), **first}
    ctx.group.update_attributes({f"{setting}_error": errors})
    return {setting: choice, "rel_l2_vs_float32 (first shard)": first}

