"""``xai bench --arch NAME``: IG and Grad-CAM on any architecture, against Captum, in one
process, on the same images.

Rows:

- Captum ``IntegratedGradients`` called per image (as a hand-written loop does) with each
  ``internal_batch_size`` in (8, 16, 50): the best of them is the baseline;
- ours, as the attribute stage runs it: the engine's model (channels_last), the planned batch,
  with the linspace_mean rule (``custom_integrated_gradients``: the affine stem factored where
  found) and with Gauss-Legendre (Captum's rule: the same numbers to compare);
- the bare forward + input-gradient passes the engine cannot skip (the network after the
  factored stem, channels_last, the planned batch, as many samples as the IG rows): how fast
  any IG of these path points can be here, so the ceiling of the ratio to Captum;
- the gradient and Grad-CAM on the same batch (the Grad-CAM overhead).

The variants run in rounds (each once per round, best of the rounds), so that a shared CPU's
drift falls on all of them alike.

Errors are relative L2 against the same method in float64 on the plain model (first image).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.bench import _measure, _rel

IBS = (8, 16, 50)


def _bare_passes(net: torch.nn.Module, x: torch.Tensor, split: Any, samples: int, mb: int
                 ) -> Callable[[], torch.Tensor]:
    """``samples`` forward + input-gradient passes of ``net`` in passes of ``mb`` and nothing
    else: the work any IG of this many path points must do once the stem is factored out
    (``net`` is then the network after it). Its speed is the engine's ceiling."""
    with torch.no_grad():
        z = (split.stem(x[:1]) if split is not None else x[:1])
    z = z.repeat(mb, 1, 1, 1).contiguous(memory_format=torch.channels_last)
    # Exactly the engine's passes: full ones of ``mb`` and the remainder (50 points in passes
    # of 8 are six of 8 and one of 2, not six).
    sizes = [mb] * (samples // mb) + ([samples % mb] if samples % mb else [])

    def run() -> torch.Tensor:
        for size in sizes:
            zz = z[:size].detach().requires_grad_(True)
            (g,) = torch.autograd.grad(net(zz)[:, 0].sum(), zz)
        return g

    return run


def _pass_size(model: torch.nn.Module, shape: tuple[int, ...], dev: torch.device) -> int:
    """The attribute stage's pass size on this device: timed on a CPU (as a run's workers
    do, :func:`workflows.runner.worker.planned_pass`, without its cache), else planned from
    memory."""
    from pipeline.attribution.memory_planner import (
        cpu_candidates,
        measure_pass_size,
        plan_max_batch,
    )
    from workflows.runner.worker import _ig_pass

    if dev.type != "cpu":
        return plan_max_batch(model, shape, dev)
    candidates = cpu_candidates(model, shape)
    if len(candidates) < 2:
        return candidates[0]
    return measure_pass_size(_ig_pass(model, shape, dev), candidates)[0]


def hf_weights(arch: str) -> str:
    """The ``--weights`` of ``--arch hf:DIR`` (the folder) or ``hf:ORG/NAME`` (as it is);
    empty for any other architecture."""
    if not arch.startswith("hf:"):
        return ""
    folder = Path(arch.removeprefix("hf:")).expanduser()
    return str(folder) if folder.is_dir() else arch


def measure_arch(arch: str, device: str = "cpu", images: int = 4, size: int = 224,
                 n_steps: int = 50, quick: bool = False, head: str = "logits",
                 reporter: Callable[[str], None] = print, rounds: int = 3) -> dict[str, Any]:
    """Measure IG (ours against Captum's best ``internal_batch_size``) and Grad-CAM against
    the gradient on ``arch`` with random weights; return the rows, the ratios and what the
    engine did on the model."""
    from captum.attr import IntegratedGradients

    from pipeline.attribution.accel import optimize
    from pipeline.attribution.cam import find_layer
    from pipeline.attribution.method_registry import METHODS, attribute
    from pipeline.attribution.path_engine import integrated_gradients
    from pipeline.attribution.precision import precision_mode
    from pipeline.attribution.stem import affine_stem, describe_stem
    from pipeline.data.images import black_baseline, normalize
    from pipeline.data.layouts import synthetic_image
    from pipeline.models.architectures import default_preprocessing
    from pipeline.models.classifier import load_model
    from pipeline.models.preprocessing import Preprocessing
    from pipeline.models.sources import check_arch

    weights = hf_weights(arch)
    problem = None if weights else check_arch(arch)
    if problem:
        from pipeline.errors import ConfigError

        raise ConfigError(problem)
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require")
    dev = torch.device(device)
    if weights:  # a Hugging Face model: its own weights and preprocessing, its own size
        from pipeline.models.sources import preprocessing_for
        from pipeline.models.torchvision_table import DEFAULT_ARCH

        own = preprocessing_for(DEFAULT_ARCH, weights)
        size = own.crop
        prep = own
        plain = load_model(weights, head, device=dev, preprocessing=prep).model
    else:
        own = default_preprocessing(arch)
        prep = Preprocessing(size, size, own.mean, own.std, own.interpolation)
        plain = load_model("random", head, seed=0, device=dev, arch=arch,
                           preprocessing=prep).model
    fast = optimize(plain, dev, channels_last=True)
    pix = np.stack([synthetic_image(i, size, 0) for i in range(images)])
    x = normalize(torch.from_numpy(pix).permute(0, 3, 1, 2).float() / 255.0,
                  prep.normalization).to(dev)
    base = black_baseline(x, prep.normalization)
    with torch.no_grad():
        target = plain(x).argmax(1)
    mb = _pass_size(fast, (3, size, size), dev)
    repeats = 1 if quick else rounds
    rows: list[dict[str, Any]] = []
    plain64 = copy.deepcopy(plain).double()
    x64, b64, t1 = x[:1].double(), base[:1].double(), target[:1]
    ref_gl = IntegratedGradients(plain64).attribute(x64, b64, target=t1, n_steps=n_steps)
    ref_riemann = integrated_gradients(plain64, x64, t1, b64, n_steps, max_batch=mb)

    variants: dict[str, tuple[str, Callable[[], torch.Tensor], torch.Tensor | None]] = {}

    def add(section: str, name: str, fn: Callable[[], torch.Tensor],
            ref: torch.Tensor | None) -> str:
        variants[name] = (section, fn, ref)
        return name

    ig = IntegratedGradients(plain)
    split = affine_stem(fast)
    captum = [add("ig", f"captum IG, internal_batch_size={ibs} (per image)",
                  lambda ibs=ibs: torch.cat([
                      ig.attribute(x[i:i + 1], base[i:i + 1], target=target[i:i + 1],
                                   n_steps=n_steps, internal_batch_size=ibs)
                      for i in range(images)]), ref_gl)
              for ibs in (IBS[:1] if quick else IBS)]
    riemann = add("ig", "ours, linspace_mean rule (attribute stage)",
               lambda: integrated_gradients(fast, x, target, base, n_steps, max_batch=mb),
               ref_riemann)
    gl = add("ig", "ours, gausslegendre (= Captum's rule)",
             lambda: integrated_gradients(fast, x, target, base, n_steps,
                                          rule="gausslegendre", max_batch=mb), ref_gl)
    floor = add("floor", "bare passes the engine cannot skip", _bare_passes(
        split.rest if split is not None else fast, x, split, images * n_steps, mb), None)
    grad = add("cam", "gradient (Captum Saliency, batched)",
               lambda: attribute(METHODS["gradient"], fast, x, target, {"abs": True}, mb)[0],
               None)
    layer, grid = find_layer(fast, x[:1])
    cam = add("cam", f"grad_cam at {layer} ({grid[0]}x{grid[1]})",
              lambda: attribute(METHODS["grad_cam"], fast, x, target, {"layer": layer},
                                mb)[0], None)
    seconds = {name: float("inf") for name in variants}
    outputs: dict[str, torch.Tensor] = {}
    with precision_mode("fp32", dev):
        integrated_gradients(fast, x[:1], target[:1], base[:1], 2, max_batch=mb)  # warm-up
        ig.attribute(x[:1], base[:1], target=target[:1], n_steps=2)
        # Rounds over every variant, best of each: a shared CPU drifts by 20% within minutes,
        # and interleaving puts the drift on every row alike.
        for _ in range(repeats):
            for name, (_section, fn, _ref) in variants.items():
                out, took = _measure(dev, fn, 1)
                outputs[name], seconds[name] = out, min(seconds[name], took)
    for name, (section, _fn, ref) in variants.items():
        row = {"section": section, "name": name, "img_per_s": images / seconds[name],
               "seconds": seconds[name],
               "rel_err": None if ref is None else _rel(outputs[name][:1], ref)}
        rows.append(row)
        err = "" if row["rel_err"] is None else f"  err {row['rel_err']:.1e}"
        reporter(f"  {arch:20s} {name:44s} {row['img_per_s']:8.3f} img/s{err}")
    by = {r["name"]: r for r in rows}
    captum = [by[c] for c in captum]
    riemann, gl, floor, grad, cam = by[riemann], by[gl], by[floor], by[grad], by[cam]
    best = max(captum, key=lambda r: r["img_per_s"])
    return {
        "arch": arch, "device": str(dev), "images": images, "size": size, "n_steps": n_steps,
        "max_batch": mb, "head": head, "affine stem": describe_stem(fast), "rows": rows,
        "best captum": best["name"],
        "ratio linspace_mean vs best captum": riemann["img_per_s"] / best["img_per_s"],
        "ratio gausslegendre vs best captum": gl["img_per_s"] / best["img_per_s"],
        "ceiling vs best captum": floor["img_per_s"] / best["img_per_s"],
        "grad_cam vs gradient": cam["img_per_s"] / grad["img_per_s"],
        "grad_cam ms per image over gradient": 1e3 * (cam["seconds"] - grad["seconds"])
        / images,
    }


def to_markdown(results: list[dict[str, Any]], command: str) -> str:
    """One table for all measured architectures."""
    lines = [f"`{command}`", "",
             "| arch | affine stem | max_batch | best Captum IG img/s | "
             "ours linspace_mean img/s (x) | ours GL img/s (x) | ceiling (x) | "
             "err linspace_mean / GL vs fp64 | gradient img/s | "
             "Grad-CAM img/s (x) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rows = {row["name"]: row for row in r["rows"]}
        best = rows[r["best captum"]]
        riemann = rows["ours, linspace_mean rule (attribute stage)"]
        gl = rows["ours, gausslegendre (= Captum's rule)"]
        grad = rows["gradient (Captum Saliency, batched)"]
        cam = next(row for name, row in rows.items() if name.startswith("grad_cam"))
        floor = rows["bare passes the engine cannot skip"]
        lines.append(
            f"| {r['arch']} | {r['affine stem'].split(' (')[0]} | {r['max_batch']} | "
            f"{best['img_per_s']:.3f} "
            f"({r['best captum'].split('=')[1].split(' ')[0]}) | {riemann['img_per_s']:.3f} "
            f"({r['ratio linspace_mean vs best captum']:.2f}x) | {gl['img_per_s']:.3f} "
            f"({r['ratio gausslegendre vs best captum']:.2f}x) | {floor['img_per_s']:.3f} "
            f"({r['ceiling vs best captum']:.2f}x) | {riemann['rel_err']:.1e} / "
            f"{gl['rel_err']:.1e} | {grad['img_per_s']:.2f} | {cam['img_per_s']:.2f} "
            f"({r['grad_cam vs gradient']:.2f}x) |")
    return "\n".join(lines)
