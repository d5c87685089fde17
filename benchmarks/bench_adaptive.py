"""Quadrature benchmark: gradient evaluations and time each IG rule needs per image to come
within 1% and 5% (relative L2) of a converged reference.

Rules: the fixed ones (``linspace_mean``, ``trapezoid``, ``gausslegendre``) on a grid of step
counts, and ``adaptive`` on a grid of tolerances. For each image the cheapest setting that reaches
the threshold counts (the same oracle for every rule); the median and the 90th percentile
over images are reported. The reference is Gauss-Legendre with ``ref_steps`` points in
float64, and its own distance from ``ref_steps // 2`` points is reported.

Models: ResNet18 with seeded random weights (both heads) and the trained ``evidence`` model
(softmax and logits). Run alone with ``python -m benchmarks.bench_adaptive``; ``xai bench``
runs a small case.

The oracle section (:func:`oracle_bounds`) asks how much any placement of path points could
save: it evaluates each image's path on a dense uniform grid once, then, knowing the answer,
counts the points three placements need: the uniform trapezoid (the exact smallest ``n``, not
a grid of step counts), greedy bisection on each interval's true error (the best that the
bisection the adaptive rule does can do), and uniform points on the best window of the path
plus its two ends (the best "find the band, then sample it evenly" can do).
"""

from __future__ import annotations

import copy
import inspect
import itertools
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

RULES = ("linspace_mean", "trapezoid", "gausslegendre")
#: The adaptive variants measured: name -> stopping criterion.
ADAPTIVE = {"adaptive": "completeness", "adaptive-map": "map"}
#: Fixed-rule step counts, about 10% apart, so that the per-image count a rule needs is not
#: rounded up by more than that (a coarse grid flatters whichever rule is not on it).
STEP_GRID = (8, 9, 10, 11, 12, 13, 14, 16, 18, 20, 22, 24, 26, 29, 32, 35, 38, 42, 46, 51,
             56, 62, 68, 75, 82, 90, 99, 109, 120, 132, 145, 160, 176, 194, 213, 234, 256,
             282, 310, 341, 375, 412, 453, 498, 512)
TOLERANCES = (0.2, 0.15, 0.1, 0.07, 0.05, 0.04, 0.03, 0.025, 0.02, 0.015, 0.01, 0.007, 0.005,
              0.003, 0.002, 0.001)
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
    """Median and 90th percentile over images, and each image's value (None: not reached);
    an image that never got there counts as infinitely costly (a statistic it decides is
    None: "beyond the grid")."""
    w = np.where(np.isfinite(v), v, np.inf)
    with np.errstate(invalid="ignore"):  # inf - inf between the middle two: NaN, beyond
        med = float(np.percentile(w, 50, method="lower" if w.size % 2 else "linear"))
        p90 = float(np.percentile(w, 90, method="higher"))
    return {"median": med if np.isfinite(med) else None,
            "p90": p90 if np.isfinite(p90) else None,
            "reached": int(np.isfinite(v).sum()),
            "per_image": [float(e) if np.isfinite(e) else None for e in v]}


def reference(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor,
              base: torch.Tensor, ref_steps: int, max_batch: int,
              cache: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Legendre IG in float64 with ``ref_steps`` and ``ref_steps // 2`` points
    ``(N, 3, H, W)`` each, the reference and its check.

    With ``cache`` (a folder), the pair is kept in a file named by a hash of the model's
    parameters, the inputs and ``ref_steps``, and read back on the next run with the same
    ones (on this CPU the reference is most of the benchmark's time).
    """
    import hashlib
    import io
    from pathlib import Path

    from pipeline.attribution.path_engine import integrated_gradients
    from pipeline.file_io import write_atomic

    path = None
    if cache is not None:
        h = hashlib.sha256(str(ref_steps).encode())
        for t in (*model.state_dict().values(), x, target, base):
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        path = Path(cache) / f"reference-{h.hexdigest()[:16]}.pt"
        if path.is_file():
            saved = torch.load(path, map_location=x.device)
            return saved["ref"], saved["half"]
    m64 = copy.deepcopy(model).double()
    x64, b64 = x.double(), base.double()
    ref = integrated_gradients(m64, x64, target, b64, ref_steps, rule="gausslegendre",
                               max_batch=max_batch)
    half = integrated_gradients(m64, x64, target, b64, ref_steps // 2, rule="gausslegendre",
                                max_batch=max_batch)
    if path is not None:  # atomic: an interrupted run leaves no half-written reference
        buf = io.BytesIO()
        torch.save({"ref": ref.cpu(), "half": half.cpu()}, buf)
        write_atomic(path, buf.getvalue())
    return ref, half


def measure_model(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor,
                  base: torch.Tensor, *, max_batch: int, ref_steps: int = 2048,
                  start: int = 9, grid: Sequence[int] = STEP_GRID,
                  tolerances: Sequence[float] = TOLERANCES,
                  ref_cache: str | None = None,
                  reporter: Any = print) -> dict[str, Any]:
    """Per rule and threshold: evaluations and seconds per image to get there (median, p90)."""
    from pipeline.attribution.adaptive import adaptive_integrated_gradients
    from pipeline.attribution.path_engine import integrated_gradients

    device = x.device
    ref, half = reference(model, x, target, base, ref_steps, max_batch, ref_cache)
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
        per_tolerance = []
        for tol in tolerances:
            res, seconds = _timed(lambda tol=tol, c=criterion: adaptive_integrated_gradients(
                model, x, target, base, start, tolerance=tol, max_steps=max(grid[-1], start),
                max_batch=max_batch, criterion=c), device)
            errs.append(_errors(res.attributions, ref))
            evals.append(res.steps.astype(np.float64))
            secs.append(seconds * res.steps / max(res.steps.sum(), 1))
            # what one tolerance, the same for every image, gives (no oracle)
            per_tolerance.append({
                "tolerance": tol, "steps_median": float(np.median(res.steps)),
                "steps_max": int(res.steps.max()),
                "error_median": float(np.median(errs[-1])),
                "error_p90": float(np.percentile(errs[-1], 90)),
                "error_max": float(errs[-1].max())})
            if errs[-1].max() <= min(THRESHOLDS):
                break
        out["rules"][name] = _summarise(np.stack(errs), np.stack(evals), np.stack(secs))
        out["rules"][name]["per_tolerance"] = per_tolerance
        reporter(f"    {name:13s} " + _line(out["rules"][name]))
        for row in per_tolerance:
            reporter(f"      tolerance {row['tolerance']}: steps median {row['steps_median']:.0f}"
                     f" (max {row['steps_max']}); L2 error median {row['error_median']:.4f}, "
                     f"p90 {row['error_p90']:.4f}, max {row['error_max']:.4f}")
    return out


def _summarise(errs: np.ndarray, evals: np.ndarray, secs: np.ndarray) -> dict[str, Any]:
    return {f"{int(100 * t)}%": {"evaluations": _stats(_first_reaching(errs, evals, t)),
                                 "seconds": _stats(_first_reaching(errs, secs, t))}
            for t in THRESHOLDS}


def _line(entry: dict[str, Any]) -> str:
    parts = []
    for t in (f"{int(100 * t)}%" for t in THRESHOLDS):
        e = entry[t]
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


def dense_path(model: torch.nn.Module, image: torch.Tensor, target: torch.Tensor,
               baseline: torch.Tensor, points: int, max_batch: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """One image's path on ``points + 1`` uniform nodes ``alpha_k = k / points``.

    Parameters
    ----------
    image, baseline
        ``(1, 3, H, W)``.
    target
        ``(1,)``.

    Returns
    -------
    ``D[k] = grad F(alpha_k) * (x - x_bar)`` flattened, ``(points + 1, 3 * H * W)`` float32,
    and ``F(alpha_k)``, ``(points + 1,)`` float64.
    """
    from pipeline.attribution.adaptive import values_and_gradients

    diff = image - baseline
    alphas = torch.arange(points + 1, dtype=torch.float64) / points
    rows, values = [], []
    for lo in range(0, points + 1, max_batch):
        a = alphas[lo:lo + max_batch].to(image.dtype).to(image.device).view(-1, 1, 1, 1)
        pts = torch.where(a == 1.0, image, baseline + a * diff)
        f, g = values_and_gradients(model, pts, target.expand(a.shape[0]))
        rows.append((g * diff).flatten(1).float().cpu().numpy())
        values.append(f.double().cpu().numpy())
    return np.concatenate(rows), np.concatenate(values)


class DensePath:
    """A path known on a dense uniform grid; node sets are indices into it.

    The reference is the trapezoid rule on every node; an interval's error is what the
    trapezoid on its two ends misses of the dense rule inside it (a vector over the map).
    """

    def __init__(self, d: np.ndarray) -> None:
        self.d = d
        self.k = d.shape[0] - 1
        prefix = np.zeros(d.shape, dtype=np.float64)
        np.add(d[:-1], d[1:], out=prefix[1:], dtype=np.float64)
        prefix[1:] /= 2 * self.k
        np.cumsum(prefix, axis=0, out=prefix)
        self.prefix = prefix
        self.ref = prefix[-1]
        self.norm = float(np.linalg.norm(self.ref))

    def interval_error(self, p: int, q: int) -> np.ndarray:
        """Trapezoid on ``[p, q]`` minus the dense rule there ``(3 * H * W,)``."""
        return ((q - p) / (2 * self.k) * (self.d[p].astype(np.float64) + self.d[q])
                - (self.prefix[q] - self.prefix[p]))

    def error(self, nodes: np.ndarray) -> float:
        """Relative L2 distance of the trapezoid rule on ``nodes`` (sorted, with both ends)
        from the reference."""
        from pipeline.attribution.adaptive import trapezoid_weights

        w = trapezoid_weights((nodes / self.k).tolist())
        return float(np.linalg.norm(w @ self.d[nodes].astype(np.float64) - self.ref)) / self.norm

    def uniform(self, n: int) -> np.ndarray:
        return np.unique(np.round(np.linspace(0.0, 1.0, n) * self.k).astype(np.int64))


def uniform_needed(path: DensePath, threshold: float, n_max: int) -> int | None:
    """The fewest uniform trapezoid nodes within ``threshold`` (None: not within ``n_max``)."""
    return next((n for n in range(2, n_max + 1) if path.error(path.uniform(n)) <= threshold),
                None)


def bisection_needed(path: DensePath, threshold: float, start: int, n_max: int) -> int | None:
    """Nodes that greedy bisection needs when it knows each interval's true error: start on
    ``start`` uniform nodes, always bisect the interval with the largest error (L2 norm)."""
    import heapq

    nodes = [int(v) for v in path.uniform(start)]
    total = sum(path.interval_error(p, q) for p, q in itertools.pairwise(nodes))
    heap = [(-float(np.linalg.norm(path.interval_error(p, q))), p, q)
            for p, q in itertools.pairwise(nodes)]
    heapq.heapify(heap)
    n = len(nodes)
    while n <= n_max:
        if float(np.linalg.norm(total)) / path.norm <= threshold:
            return n
        if not heap:
            return None
        _, p, q = heapq.heappop(heap)
        if q - p < 2:
            continue  # exact at the dense grid's resolution
        m = (p + q) // 2
        left, right = path.interval_error(p, m), path.interval_error(m, q)
        total = total - path.interval_error(p, q) + left + right
        heapq.heappush(heap, (-float(np.linalg.norm(left)), p, m))
        heapq.heappush(heap, (-float(np.linalg.norm(right)), m, q))
        n += 1
    return None


def window_needed(path: DensePath, threshold: float, n_max: int, parts: int = 32
                  ) -> int | None:
    """Nodes needed by the best window: both ends of the path plus uniform nodes on
    ``[a, b]``, the window (on a grid of ``parts``) chosen per node count knowing the answer.
    The window ``[0, 1]`` is the uniform rule, so this never needs more than it."""
    windows = [(a, b) for a in range(parts) for b in range(a + 1, parts + 1)]
    for n in range(3, n_max + 1):
        for a, b in windows:
            inner = n - (a > 0) - (b < parts)
            if inner < 2:
                continue
            nodes = np.unique(np.concatenate([
                [0], np.round(np.linspace(a / parts, b / parts, inner) * path.k), [path.k]]
            ).astype(np.int64))
            if len(nodes) == n and path.error(nodes) <= threshold:
                return n
    return None


def density_bound(path: DensePath, blocks: int = 128) -> float:
    """The most any placement can save over uniform spacing when every rule is first order.

    With ReLU boundaries dense along the path, the trapezoid's error on an interval of width
    ``h`` at ``alpha`` has a variance of about ``c(alpha) h^3``. Uniform spacing with ``n``
    points then misses by ``sqrt(int c) / n``; the best spacing, ``h ~ c^(-1/2)``, by
    ``int sqrt(c) / n``. Their ratio, ``sqrt(mean c) / mean(sqrt c)``, is how many times
    fewer points the best placement needs for the same error. ``c`` is measured per block of
    the dense grid (``blocks`` equal blocks) from the block's own trapezoid error. The
    model ignores the cost of resolving where the mass starts and ends, so it flatters
    placement."""
    step = path.k // blocks
    e = np.asarray([np.linalg.norm(path.interval_error(b * step, (b + 1) * step))
                    for b in range(blocks)])
    return float(np.sqrt(np.mean(e ** 2)) / np.mean(e)) if e.any() else 1.0


def oracle_bounds(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor,
                  base: torch.Tensor, *, points: int = 2048, start: int = 9,
                  n_max: int = 512, max_batch: int = 32, reporter: Any = print
                  ) -> dict[str, Any]:
    """Per threshold, the path points each oracle placement needs (median, p90 and per
    image) and the most any placement of these kinds saves over the uniform rule at the
    median image. The dense grid's own distance from half its nodes is reported."""
    found: dict[str, dict[str, list[float]]] = {
        f"{int(100 * t)}%": {"uniform": [], "bisection": [], "window": []} for t in THRESHOLDS}
    dense_err, density = [], []
    for i in range(x.shape[0]):
        d, _ = dense_path(model, x[i:i + 1], target[i:i + 1], base[i:i + 1], points, max_batch)
        path = DensePath(d)
        dense_err.append(path.error(np.arange(0, path.k + 1, 2)))
        density.append(density_bound(path, min(128, path.k // 2)))
        for t in THRESHOLDS:
            row = found[f"{int(100 * t)}%"]
            u = uniform_needed(path, t, n_max)
            b = bisection_needed(path, t, start, n_max)
            w = window_needed(path, t, u) if u is not None else None
            for key, v in (("uniform", u), ("bisection", b), ("window", w)):
                row[key].append(float(v) if v is not None else float("nan"))
        one = {k: v[-1] for k, v in found["1%"].items()}
        reporter(f"    oracle, image {i}: to 1%: uniform {one['uniform']:.0f}, bisection "
                 f"{one['bisection']:.0f}, window {one['window']:.0f}; first-order density "
                 f"bound {density[-1]:.2f}x")
    out: dict[str, Any] = {"points": points, "dense_half_median": float(np.median(dense_err)),
                           "dense_half_max": float(np.max(dense_err)),
                           "density_bound": density,
                           "density_bound_median": float(np.median(density))}
    reporter(f"    oracle: the first-order density bound (the most fewer points any placement "
             f"needs): median {out['density_bound_median']:.2f}x, max {max(density):.2f}x")
    reporter(f"    oracle dense grid: {points} steps; distance from {points // 2}: median "
             f"{out['dense_half_median']:.1e}, max {out['dense_half_max']:.1e}")
    for label, row in found.items():
        stats = {k: _stats(np.asarray(v)) for k, v in row.items()}
        best = min(stats["bisection"]["median"] or np.inf, stats["window"]["median"] or np.inf)
        ratio = (stats["uniform"]["median"] / best
                 if stats["uniform"]["median"] is not None and np.isfinite(best) else None)
        out[label] = {"per_image": row, **stats, "best_median_ratio": ratio}
        reporter(f"    oracle to {label}: " + ", ".join(
            f"{k} median {s['median']}, p90 {s['p90']}" for k, s in stats.items())
            + (f"; at most {ratio:.2f}x fewer than uniform at the median" if ratio else ""))
    return out


def measure(images: int = 8, size: int = 64, ref_steps: int = 2048, device: str = "cpu",
            start: int = 9, quick: bool = False, reporter: Any = print, grid_max: int = 512,
            cases: Sequence[str] = ("random/softmax", "random/logits", "evidence/softmax",
                                    "evidence/logits"),
            oracle: int = 0, oracle_points: int = 2048,
            ref_cache: str | None = None) -> dict[str, Any]:
    """Random-weight ResNet18 (both heads, ``size`` px) and the evidence model (its own size,
    both heads): the numbers of :func:`measure_model` per case and the savings, and with
    ``oracle`` > 0 :func:`oracle_bounds` on that many of the images (``oracle_points`` dense
    steps). ``ref_cache``: a folder that keeps the float64 references (:func:`reference`)."""
    from pipeline.data.evidence_dataset import TrainSettings, evidence_batch
    from pipeline.data.images import black_baseline
    from pipeline.models.classifier import load_model
    from pipeline.models.sources.evidence_training import _inputs

    dev = torch.device(device)
    grid = STEP_GRID[:4] if quick else tuple(m for m in STEP_GRID if m <= grid_max)
    tols = TOLERANCES[:3] if quick else TOLERANCES
    out: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(0)
    x_rand = torch.rand(images, 3, size, size, generator=gen)
    from pipeline.data.images import normalize

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
                              ref_cache=ref_cache, reporter=reporter)
            r["savings"] = {name: savings(r, name=name) for name in ADAPTIVE}
            for name, s in r["savings"].items():
                if s["median_ratio"] is not None:
                    reporter(f"    {name} vs {s['best_fixed']}: {s['median_ratio']:.2f}x fewer "
                             f"evaluations to 1% at the median image; p90 no worse: "
                             f"{s['p90_no_worse']}")
            if oracle > 0:
                r["oracle"] = oracle_bounds(model, x[:oracle], target[:oracle],
                                            black_baseline(x[:oracle]), points=oracle_points,
                                            start=start, n_max=grid[-1], reporter=reporter)
            out[f"{weights}/{head}"] = r
    return out


def parse_args(argv: list[str]) -> dict[str, Any]:
    """``key=value`` arguments for :func:`measure`, converted to its parameters' types; an
    unknown key or a value of the wrong type is a ``ValueError`` that names it."""
    params = [k for k in inspect.signature(measure).parameters if k != "reporter"]
    out: dict[str, Any] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ValueError(f"Expected key=value, got {arg!r}.")
        if key not in params:
            raise ValueError(f"Expected a key in {', '.join(params)}, got {key!r}.")
        if key == "cases":
            out[key] = tuple(value.split(","))
        elif key in ("device", "ref_cache"):
            out[key] = value
        else:
            try:
                out[key] = bool(int(value)) if key == "quick" else int(value)
            except ValueError:
                raise ValueError(f"Expected an integer for {key}, got {value!r}.") from None
    return out


if __name__ == "__main__":
    import json

    try:
        kwargs = parse_args(sys.argv[1:])
    except ValueError as err:
        sys.exit(f"bench_adaptive: {err}")
    print(json.dumps(measure(**kwargs), indent=1))
