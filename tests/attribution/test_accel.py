from __future__ import annotations

import pytest
import torch

from pipeline.attribution.accel import CompiledWithFallback, optimize
from pipeline.attribution.method_registry import METHODS, attribute
from pipeline.custom_explainers import get_custom_gradient, get_custom_integrated_gradients
from tests.conftest import rel_err


@pytest.mark.parametrize("opts,tol", [
    ({"channels_last": True}, 1e-5),
    ({"channels_last": False, "fuse_bn": True}, 1e-3),
    ({"channels_last": True, "fuse_bn": True}, 1e-3),
])
def test_optimized_model_computes_the_same_attributions(model, images, opts, tol):
    fast = optimize(model, "cpu", **opts)
    assert torch.allclose(fast(images), model(images), rtol=1e-4, atol=1e-7)
    assert rel_err(get_custom_gradient(fast, images), get_custom_gradient(model, images)) < tol
    ig_fast = get_custom_integrated_gradients(fast, images, 8, max_batch=8)
    ig = get_custom_integrated_gradients(model, images, 8, max_batch=8)
    assert rel_err(ig_fast, ig) < tol


def test_gradients_reach_an_ordinary_input(model, images):
    fast = optimize(model, "cpu", channels_last=True)
    x = images.clone().requires_grad_(True)
    fast(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.shape == images.shape


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_runs_on_the_optimized_model(model, images, name):
    spec = METHODS[name]
    params = spec.resolve({})
    if "n_steps" in params:
        params["n_steps"] = 4
    if "nt_samples" in params:
        params["nt_samples"] = 2
    target = model(images).argmax(1)
    fast = optimize(model, "cpu", channels_last=True)
    a, _, _ = attribute(spec, fast, images, target, params, 8, [1, 2, 3])
    b, _, _ = attribute(spec, model, images, target, params, 8, [1, 2, 3])
    assert rel_err(a, b) < 1e-4


def test_compile_falls_back_to_eager(model, images, monkeypatch):
    def broken(*_a, **_k):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    wrapped = CompiledWithFallback(model)
    assert wrapped.failed and "no compiler" in wrapped.failed
    assert torch.equal(wrapped(images), model(images))


def test_compile_failure_at_first_call_falls_back(model, images):
    wrapped = CompiledWithFallback(model)

    def explode(_x):
        raise RuntimeError("backend exploded")

    wrapped.compiled = explode
    with pytest.warns(RuntimeWarning, match="backend exploded"):
        out = wrapped(images)
    assert torch.equal(out, model(images))
    assert torch.equal(wrapped(images), model(images))


def test_optimize_leaves_the_original_model_alone(model, images):
    weight = model[0].conv1.weight
    before = model(images)
    optimize(model, "cpu", channels_last=True, fuse_bn=True)
    assert model[0].conv1.weight is weight
    assert weight.is_contiguous()
    assert torch.equal(model(images), before)
