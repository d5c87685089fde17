"""Quadrature benchmark: gradient evaluations and time each IG rule needs per image to come
within 1% and 5% (relative L2) of a converged reference.

Rules: the fixed ones (``seed``, ``trapezoid``, ``gausslegendre``) on a grid of step counts,
and ``adaptive`` on a grid of tolerances. For each image the cheapest setting that reaches
the threshold counts (the same oracle for every rule); the median and the 90th percentile
over images are reported. The reference is Gauss-Legendre with ``ref_steps`` points in
float64, and its own distance from ``ref_steps // 2`` points is reported.

Models: ResNet18 with seeded random weights (both heads) and the trained ``evidence`` model
(softmax and logits). Run alone with ``python -m workflows.bench_adaptive``; ``xai bench``
runs a small case.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

RULES = ("seed", "trapezoid", "gausslegendre")
#: The adaptive variants measured: name -> stopping criterion.
ADAPTIVE = {"adaptive": "completeness", "adaptive-map": "map"}
STEP_GRID = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
TOLERANCES = (0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005, 0.003, 0.001)
THRESHOLDS = (0.01, 0.05)


def _errors(out: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    d = (out.double() - ref).flatten(1).norm(dim=1)
    return (d / ref.flatten(1).norm(dim=1)).cpu().numpy()


def _timed(fn: Any, device: torch.device) -> tuple[Any, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def _first_reaching(errors: np.ndarray, costs: np.ndarray, threshold: float) -> np.ndarray:
    """Per image (columns), the cost of the first setting (rows, cheapest first) whose error is
    within ``threshold``; NaN where none is."""
    out = np.full(errors.shape[1], np.nan)
    for i in range(errors.shape[1]):
        hit = np.flatnonzero(errors[:, i] <= threshold)
        if hit.size:
            out[i] = costs[hit[0], i]
    return out


def _stats(v: np.ndarray) -> dict[str, float | None]:
    """Median and 90th percentile over images; an image that never got there counts as
    infinitely costly (a statistic it decides is None: "beyond the grid")."""
    w = np.where(np.isfinite(v), v, np.inf)
    med = float(np.percentile(w, 50, method="lower" if w.size % 2 else "linear"))
    p90 = float(np.percentile(w, 90, method="higher"))
    return {"median": med if np.isfinite(med) else None,
            "p90": p90 if np.isfinite(p90) else None,
            "reached": int(np.isfinite(v).sum())}


def measure_model(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor,
                  base: torch.Tensor, *, max_batch: int, ref_steps: int = 2048,
                  start: int = 9, grid: Sequence[int] = STEP_GRID,
                  tolerances: Sequence[float] = TOLERANCES,
                  reporter: Any = print) -> dict[str, Any]:
    """Per rule and threshold: evaluations and seconds per image to get there (median, p90)."""
    from pipeline.adaptive import adaptive_integrated_gradients
    from pipeline.custom_explainers import integrated_gradients

    device = x.device
    m64 = copy.deepcopy(model).double()
    x64, b64 = x.double(), base.double()
    ref = integrated_gradients(m64, x64, target, b64, ref_steps, rule="gausslegendre",
                               max_batch=max_batch)
    half = integrated_gradients(m64, x64, target, b64, ref_steps // 2, rule="gausslegendre",
                                max_batch=max_batch)
    ref_err = _errors(half, ref)
    reporter(f"    reference: gausslegendre {ref_steps} steps, float64; distance from "
             f"{ref_steps // 2} steps: median {np.median(ref_err):.1e}, max {ref_err.max():.1e}")
    n = x.shape[0]
    out: dict[str, Any] = {"reference": {"steps": ref_steps, "half_median": float(
        np.median(ref_err)), "half_max": float(ref_err.max())}, "rules": {}}
    for rule in RULES:
        errs, evals, secs = [], [], []
        for m in grid:
            attr, seconds = _timed(lambda m=m, rule=rule: integrated_gradients(
                model, x, target, base, m, rule=rule, max_batch=max_batch), device)
            errs.append(_errors(attr, ref))
            evals.append(np.full(n, m, dtype=np.float64))
            secs.append(np.full(n, seconds / n))
            if errs[-1].max() <= min(THRESHOLDS):
                break  # every image is within the tightest threshold
        out["rules"][rule] = _summarise(np.stack(errs), np.stack(evals), np.stack(secs))
        reporter(f"    {rule:13s} " + _line(out["rules"][rule]))
    for name, criterion in ADAPTIVE.items():
        errs, evals, secs = [], [], []
        for tol in tolerances:
            res, seconds = _timed(lambda tol=tol, c=criterion: adaptive_integrated_gradients(
                model, x, target, base, start, tolerance=tol, max_steps=max(grid[-1], start),
                max_batch=max_batch, criterion=c), device)
            errs.append(_errors(res.attributions, ref))
            evals.append(res.steps.astype(np.float64))
            secs.append(seconds * res.steps / max(res.steps.sum(), 1))
            if errs[-1].max() <= min(THRESHOLDS):
                break
        out["rules"][name] = _summarise(np.stack(errs), np.stack(evals), np.stack(secs))
        reporter(f"    {name:13s} " + _line(out["rules"][name]))
    return out


def _summarise(errs: np.ndarray, evals: np.ndarray, secs: np.ndarray) -> dict[str, Any]:
    return {f"{int(100 * t)}%": {"evaluations": _stats(_first_reaching(errs, evals, t)),
                                 "seconds": _stats(_first_reaching(errs, secs, t))}
            for t in THRESHOLDS}


def _line(entry: dict[str, Any]) -> str:
    parts = []
    for t, e in entry.items():
        ev = e["evaluations"]
        parts.append(f"to {t}: {ev['median'] if ev['median'] is not None else '>grid'} evals "
                     f"median, p90 {ev['p90'] if ev['p90'] is not None else '>grid'}")
    return "; ".join(parts)


def savings(result: dict[str, Any], threshold: str = "1%", name: str = "adaptive"
            ) -> dict[str, Any]:
    """An adaptive variant against the best fixed rule at ``threshold``: the ratio of median
    evaluations and whether the adaptive 90th percentile is no worse."""
    rules = result["rules"]
    fixed = {r: rules[r][threshold]["evaluations"] for r in RULES}
    ok = {r: v for r, v in fixed.items() if v["median"] is not None}
    ad = rules[name][threshold]["evaluations"]
    if not ok or ad["median"] is None:
        return {"best_fixed": None, "median_ratio": None, "p90_no_worse": None}
    best = min(ok, key=lambda r: ok[r]["median"])
    return {"best_fixed": best, "median_ratio": ok[best]["median"] / ad["median"],
            "p90_no_worse": bool(ad["p90"] is not None and ok[best]["p90"] is not None
                                 and ad["p90"] <= ok[best]["p90"])}


def measure(images: int = 8, size: int = 64, ref_steps: int = 2048, device: str = "cpu",
            start: int = 9, quick: bool = False, reporter: Any = print, grid_max: int = 512,
            cases: Sequence[str] = ("random/softmax", "random/logits", "evidence/softmax",
                                    "evidence/logits")) -> dict[str, Any]:
    """Random-weight ResNet18 (both heads, ``size`` px) and the evidence model (its own size,
    both heads): the numbers of :func:`measure_model` per case and the savings."""
    from pipeline.data import black_baseline
    from pipeline.evidence import TrainSettings, evidence_batch
    from pipeline.evidence_model import _inputs
    from pipeline.model import load_model

    dev = torch.device(device)
    grid = STEP_GRID[:4] if quick else tuple(m for m in STEP_GRID if m <= grid_max)
    tols = TOLERANCES[:3] if quick else TOLERANCES
    out: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(0)
    x_rand = torch.rand(images, 3, size, size, generator=gen)
    from pipeline.data import normalize

    x_rand = normalize(x_rand).to(dev)
    settings = TrainSettings()
    pix, _, _ = evidence_batch(range(images), 0, settings.size, settings.backgrounds, "test")
    x_ev = _inputs(pix).contiguous().to(dev)
    for weights, x in (("random", x_rand), ("evidence", x_ev)):
        for head in ("softmax", "logits"):
            if f"{weights}/{head}" not in cases:
                continue
            loaded = load_model(weights, head, seed=0, device=dev,
                                evidence=settings if weights == "evidence" else None)
            model = loaded.model.eval()
            with torch.no_grad():
                target = model(x).argmax(1)
            reporter(f"  {weights} weights, {head} head, {images} images of "
                     f"{x.shape[-1]} px")
            r = measure_model(model, x, target, black_baseline(x), max_batch=32,
                              ref_steps=ref_steps, start=start, grid=grid, tolerances=tols,
                              reporter=reporter)
            r["savings"] = {name: savings(r, name=name) for name in ADAPTIVE}
            for name, s in r["savings"].items():
                if s["median_ratio"] is not None:
                    reporter(f"    {name} vs {s['best_fixed']}: {s['median_ratio']:.2f}x fewer "
                             f"evaluations to 1% at the median image; p90 no worse: "
                             f"{s['p90_no_worse']}")
            out[f"{weights}/{head}"] = r
    return out


if __name__ == "__main__":
    import json

    args = dict(a.split("=", 1) for a in sys.argv[1:])
    result = measure(images=int(args.get("images", 8)), size=int(args.get("size", 64)),
                     ref_steps=int(args.get("ref_steps", 2048)),
                     device=args.get("device", "cpu"), start=int(args.get("start", 9)),
                     grid_max=int(args.get("grid_max", 512)),
                     cases=tuple(args["cases"].split(",")) if "cases" in args else (
                         "random/softmax", "random/logits", "evidence/softmax",
                         "evidence/logits"))
    print(json.dumps(result, indent=1))
