"""Whole runs on other architectures: ingest -> report with every kind of method, each map in
the store checked against the method run on the plain (unoptimized) model, and the input
methods against plain Captum."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr
from captum.attr import IntegratedGradients, Saliency

from pipeline.attribution.method_registry import METHODS
from pipeline.data.images import black_baseline
from pipeline.models.classifier import load_model
from tests.workflow_helpers import cli, make_images, write_config
from workflows.config.loading import load_config

RUN_METHODS = ("gradient", "integrated_gradients", "custom_integrated_gradients", "grad_cam",
               "guided_grad_cam", "guided_backprop", "deeplift")
ARCHS = [
    pytest.param("mobilenet_v3_small"),
    pytest.param("resnet50", marks=pytest.mark.slow),
    pytest.param("efficientnet_b0", marks=pytest.mark.slow),
    pytest.param("convnext_tiny", marks=pytest.mark.slow),
    pytest.param("swin_t", marks=pytest.mark.slow),
    pytest.param("vit_b_16", marks=pytest.mark.slow),
    pytest.param("timm:deit_tiny_patch16_224", marks=[pytest.mark.slow, pytest.mark.skipif(
        importlib.util.find_spec("timm") is None, reason="timm not installed: make setup "
        "EXTRAS=timm")]),
]
#: Where the affine stem is factored out of the IG path, and where not (the engine says why).
STEM = {"mobilenet_v3_small": "factored out", "resnet50": "factored out",
        "efficientnet_b0": "factored out", "convnext_tiny": "factored out",
        "swin_t": "factored out", "vit_b_16": "not found",
        "timm:deit_tiny_patch16_224": "not found"}
#: DeepLift divides output by input differences, so the rounding of channels_last
#: convolutions moves its maps more than the others'.
TOLERANCE = {"deeplift": 1e-3}


def _run(tmp_path: Path, arch: str) -> tuple[Path, Any]:
    images = tmp_path / "images"
    make_images(images, 3, broken=False)
    cfg_path = write_config(
        tmp_path / "c.toml", images, tmp_path / "out", methods=RUN_METHODS, report=True,
        extra='\n[evaluate]\nmetrics = ["deletion", "sparseness"]\nsteps = 4\n'
              'randomisation_images = 1\n')
    text = cfg_path.read_text().replace('weights = "random"',
                                        f'weights = "random"\narch = "{arch}"')
    cfg_path.write_text(text)
    result = cli("run", "--config", str(cfg_path))
    assert result.exit_code == 0, result.output
    return cfg_path, result


def _reference(name: str, model, x, t, params, norm) -> torch.Tensor:
    """The method on the plain model: Captum itself for the input-gradient methods, our
    function (the engine left out) for the layer and modified-gradient ones."""
    if name == "gradient":
        return Saliency(model).attribute(x, target=t, abs=params["abs"])
    if name == "integrated_gradients":
        return IntegratedGradients(model).attribute(
            x, baselines=black_baseline(x, norm), target=t, n_steps=params["n_steps"],
            method=params["method"])
    if name == "custom_integrated_gradients":  # the plain engine: no stem factoring
        from pipeline.attribution.path_engine import integrated_gradients

        return integrated_gradients(model, x, t, black_baseline(x, norm), params["n_steps"],
                                    rule=params["rule"], max_batch=8, factor_stem=False)
    kwargs = {"baselines": black_baseline(x, norm)} if "baseline" in params else {}
    return METHODS[name].fn(model, x, t, params, 8, None, **kwargs)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.mark.parametrize("arch", ARCHS)
def test_a_whole_run_on_the_architecture_matches_the_plain_model(tmp_path, arch):
    cfg_path, result = _run(tmp_path, arch)
    cfg = load_config(cfg_path)
    group = zarr.open_group(str(cfg.run_dir / "store.zarr"), mode="r")
    names = [str(v) for v in group["explainer"][:]]
    assert names == list(RUN_METHODS)
    assert group.attrs["arch"] == arch
    spaces = group.attrs["map_space"]
    layer = group.attrs["config"]["methods"]["grad_cam"]["layer"]
    assert layer and spaces["grad_cam"].startswith(f"layer:{layer} (")
    assert spaces["gradient"] == "input"
    summary = json.loads((cfg.run_dir / "summary.json").read_text())
    assert summary["engine"]["arch"] == arch and "affine stem" in summary["engine"]
    assert summary["engine"]["affine stem"].startswith(STEM[arch]), summary["engine"]
    assert (cfg.run_dir / "report" / "index.html").is_file()
    assert f"engine ({arch})" in result.output and "affine stem" in result.output

    norm = cfg.normalization()
    loaded = load_model("random", cfg.model.head, seed=cfg.run.seed, arch=arch,
                        preprocessing=cfg.preprocessing())
    pixels = np.asarray(group["pixels"][:2])
    from workflows.runner.stage_api import to_input

    x = to_input(pixels, "cpu", norm)
    t = torch.as_tensor(np.asarray(group["pred"][:2]).astype(np.int64))
    with torch.no_grad():
        assert torch.equal(loaded.backbone(x).argmax(1), t)
    for i, name in enumerate(RUN_METHODS):
        stored = torch.as_tensor(np.asarray(group["raw"][i, :2]))
        ref = _reference(name, loaded.model, x, t, cfg.methods[name], norm).detach()
        assert torch.isfinite(stored).all() and stored.abs().sum() > 0, name
        assert _rel(stored, ref) < TOLERANCE.get(name, 1e-4), (name, _rel(stored, ref))
    # IG's completeness error, as stored, is sum(A) - (F(x) - F(black)) on the plain model.
    ig = names.index("integrated_gradients")
    with torch.no_grad():
        out = loaded.model(x)[range(2), t].double()
        base = loaded.model(black_baseline(x, norm))[range(2), t].double()
    gap = np.asarray(group["gap"][ig, :2], dtype=np.float64)
    delta = np.asarray(group["delta"][ig, :2], dtype=np.float64)
    raw_sum = np.asarray(group["raw"][ig, :2], dtype=np.float64).reshape(2, -1).sum(1)
    np.testing.assert_allclose(gap, (out - base).numpy(), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(delta, raw_sum - gap, rtol=1e-3, atol=1e-8)


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "convnext_tiny", "vit_b_16"])
def test_the_planner_and_bf16_work_on_the_architecture(arch):
    """The memory planner sizes passes from the model's own activations, and bf16 autocast
    runs on it with an error of bf16's size (not a wrong number) against fp32."""
    from pipeline.attribution.accel import optimize
    from pipeline.attribution.memory_planner import plan_max_batch
    from pipeline.attribution.path_engine import integrated_gradients
    from pipeline.attribution.precision import precision_mode
    from pipeline.models.architectures import default_preprocessing
    from pipeline.models.preprocessing import Preprocessing

    own = default_preprocessing(arch)
    prep = Preprocessing(40, 32, own.mean, own.std, own.interpolation)
    loaded = load_model("random", "logits", arch=arch, preprocessing=prep)
    fast = optimize(loaded.model, "cpu", channels_last=True)
    small = plan_max_batch(fast, (3, 32, 32), "cpu")
    assert 1 <= small <= 64
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    t = loaded.model(x).argmax(1)
    base = black_baseline(x, prep.normalization)
    ref = integrated_gradients(loaded.model, x, t, base, 8, max_batch=small, factor_stem=False)
    with precision_mode("bf16", "cpu"):
        low = integrated_gradients(fast, x, t, base, 8, max_batch=small)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert _rel(low, ref) < 0.1, _rel(low, ref)
