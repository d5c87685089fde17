from __future__ import annotations

import copy

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency

from pipeline.attribution.gradient import predicted_class
from pipeline.attribution.path_engine import integrated_gradients
from pipeline.attribution.quadrature import QUADRATURE_RULES, quadrature
from pipeline.custom_explainers import (
    get_custom_gradient,
    get_custom_integrated_gradients,
    get_path,
)
from pipeline.data.images import black_baseline
from tests.conftest import rel_err


@pytest.mark.parametrize("absolute", [False, True])
def test_custom_gradient_equals_captum_saliency(model, images, absolute):
    target = predicted_class(model, images)
    ours = get_custom_gradient(model, images, absolute=absolute)
    theirs = Saliency(model).attribute(images.clone(), target=target, abs=absolute)
    assert ours.shape == images.shape
    assert rel_err(ours, theirs) < 1e-5
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-12)


def test_custom_gradient_uses_each_rows_own_prediction(model, images):
    target = predicted_class(model, images)
    other = (target + 1) % 1000
    assert rel_err(get_custom_gradient(model, images, target=other),
                   get_custom_gradient(model, images)) > 1e-3


def test_get_path_endpoints_are_exact_and_points_lie_on_the_line(images):
    x = images[0]
    base = black_baseline(x)
    path = get_path(x, base, 7)
    assert len(path) == 7
    assert torch.equal(path[0], base)
    assert torch.equal(path[-1], x)
    for k, point in enumerate(path):
        alpha = k / 6
        assert torch.allclose(point - base, alpha * (x - base), atol=1e-6)


@pytest.mark.parametrize("bad", [0, 1])
def test_get_path_needs_two_points(images, bad):
    with pytest.raises(ValueError, match="num_samples >= 2"):
        get_path(images[0], black_baseline(images[0]), bad)


def _reference_ig_float64(model, images, num_samples):
    """The original formula, literally, in float64: (x - x_bar) * mean of path gradients.

    The baseline is the float32 black image upcast, not -mean/std recomputed in float64: the
    black image is constant, so max-pool ties everywhere at alpha=0, and a 1e-8 change of the
    baseline re-routes those gradients (measured: 1.6e-3 relative on the mean gradient).
    """
    model64 = copy.deepcopy(model).double()
    x = images.double()
    base = black_baseline(images).double()
    target = predicted_class(model64, x)
    grads = []
    for point in get_path(x, base, num_samples):
        p = point.clone().requires_grad_(True)
        out = model64(p).gather(1, target.view(-1, 1)).sum()
        grads.append(torch.autograd.grad(out, p)[0])
    return (x - base) * torch.stack(grads).mean(0)


def test_custom_ig_equals_float64_reference(model, images):
    ours = get_custom_integrated_gradients(model, images, 16, max_batch=10)
    ref = _reference_ig_float64(model, images, 16)
    assert rel_err(ours, ref) < 1e-4


@pytest.mark.parametrize("max_batch", [1, 5, 16, 1000])
def test_custom_ig_is_independent_of_chunk_size(model, images, max_batch):
    whole = get_custom_integrated_gradients(model, images, 16, max_batch=48)
    chunked = get_custom_integrated_gradients(model, images, 16, max_batch=max_batch)
    assert rel_err(chunked, whole) < 1e-5


def _gap(model, images, attr):
    target = predicted_class(model, images)
    with torch.no_grad():
        rows = torch.arange(images.shape[0])
        fx = model(images)[rows, target].double()
        fb = model(black_baseline(images))[rows, target].double()
    return (attr.double().flatten(1).sum(1) - (fx - fb)).abs()


def test_completeness_gap_shrinks_with_more_samples(model, images):
    gaps = [_gap(model, images, get_custom_integrated_gradients(model, images, m, max_batch=64))
            for m in (4, 32, 256)]
    assert (gaps[1] < gaps[0]).all()
    assert (gaps[2] < gaps[1]).all()


@pytest.mark.parametrize("n_images,max_batch", [(3, 5), (4, 3)])
def test_no_forward_pass_sees_more_than_max_batch(model, n_images, max_batch):
    x = torch.randn(n_images, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    sizes: dict[str, list[int]] = {}
    # Every layer, not just the model: the engine runs the stem and the rest separately.
    handles = [
        mod.register_forward_pre_hook(
            lambda _m, inp, name=name: sizes.setdefault(name, []).append(inp[0].shape[0]))
        for name, mod in model.named_modules()
    ]
    try:
        get_custom_integrated_gradients(model, x, 8, max_batch=max_batch)
    finally:
        for handle in handles:
            handle.remove()
    assert sizes, "the hooks saw no forward pass"
    assert max(max(s) for s in sizes.values()) <= max_batch
    # The head saw each row once for its prediction and each of the 8 path points once.
    assert sum(sizes["0.fc"]) == n_images * (1 + 8)


def test_default_max_batch_is_planned(model, images, monkeypatch):
    """Without ``max_batch`` the planner's answer cuts the passes (here a budget of 5 samples)."""
    import pipeline.attribution.memory_planner as planner

    # One 32x32 sample plans as ~1.9 MB (activations x BACKWARD_FACTOR): 10 MiB holds 5.
    monkeypatch.setenv("XAI_CPU_MEMORY_BUDGET", "10M")
    real_plan = planner.plan_max_batch
    planned: list[int] = []
    sizes: list[int] = []

    def spy(*args, **kwargs):
        before = len(sizes)
        planned.append(real_plan(*args, **kwargs))
        del sizes[before:]  # the planner's own one-sample probe (when not cached yet)
        return planned[-1]

    monkeypatch.setattr(planner, "plan_max_batch", spy)
    head = dict(model.named_modules())["0.fc"]
    handle = head.register_forward_pre_hook(lambda _m, inp: sizes.append(inp[0].shape[0]))
    try:
        auto = get_custom_integrated_gradients(model, images, 8)
    finally:
        handle.remove()
    assert planned == [5]
    # 3 predictions in one pass, then the 3 x 8 path points in passes of the planned 5.
    assert sizes == [3, 5, 5, 5, 5, 4]
    fixed = get_custom_integrated_gradients(model, images, 8, max_batch=5)
    assert torch.equal(auto, fixed)
    assert rel_err(auto, get_custom_integrated_gradients(model, images, 8, max_batch=24)) < 1e-5


def test_custom_ig_batch_equals_row_by_row(model, images):
    batch = get_custom_integrated_gradients(model, images, 8, max_batch=24)
    rows = torch.cat([get_custom_integrated_gradients(model, images[i:i + 1], 8, max_batch=24)
                      for i in range(images.shape[0])])
    assert rel_err(batch, rows) < 1e-5


def test_gausslegendre_rule_equals_captum_ig(model, images):
    """Same arithmetic as Captum without the stem factoring: equal to float32 rounding."""
    target = predicted_class(model, images)
    ours = integrated_gradients(model, images, target, black_baseline(images), 20,
                                rule="gausslegendre", max_batch=30, factor_stem=False)
    theirs = IntegratedGradients(model).attribute(
        images, baselines=black_baseline(images), target=target, n_steps=20,
        method="gausslegendre")
    assert rel_err(ours, theirs) < 1e-5


def test_gausslegendre_rule_equals_captum_ig_in_float64(model, images):
    """The default engine (stem factored, stem in float64) is the same integral as Captum's.

    In float32 the two differ by about 1e-3: a few max-pool windows hold near-equal maxima
    that the two roundings order differently (ours orders them as float64 does).
    """
    model64, x = copy.deepcopy(model).double(), images.double()
    target = predicted_class(model64, x)
    ours = get_custom_integrated_gradients(model64, x, 20, rule="gausslegendre", max_batch=30)
    theirs = IntegratedGradients(model64).attribute(
        x, baselines=black_baseline(x), target=target, n_steps=20, method="gausslegendre")
    assert rel_err(ours, theirs) < 1e-7  # float32 would be 1e-3 here


@pytest.mark.parametrize("rule", QUADRATURE_RULES)
def test_quadrature_weights_sum_to_one(rule):
    alphas, weights = quadrature(rule, 9)
    assert alphas.shape == weights.shape == (9,)
    assert abs(weights.sum() - 1.0) < 1e-12
    assert alphas.min() >= 0.0 and alphas.max() <= 1.0


def test_custom_ig_with_explicit_baseline(model, images):
    zero = torch.zeros_like(images[0])
    attr = get_custom_integrated_gradients(model, images, 8, baseline=zero, max_batch=24)
    assert torch.isfinite(attr).all()
    assert rel_err(attr, get_custom_integrated_gradients(model, images, 8, max_batch=24)) > 1e-3


def test_the_default_rule_is_linspace_mean_also_spelled_seed(model, images):
    x = images[:2]
    default = get_custom_integrated_gradients(model, x, 5, max_batch=4)
    assert torch.equal(default, get_custom_integrated_gradients(model, x, 5, max_batch=4,
                                                                rule="linspace_mean"))
    assert torch.equal(default, get_custom_integrated_gradients(model, x, 5, max_batch=4,
                                                                rule="seed"))
