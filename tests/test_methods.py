"""The method registry (:mod:`pipeline.attribution.registry`): every registered method, run
directly."""

from __future__ import annotations

import pytest
import torch

from pipeline.attribution.registry import (
    DEFAULT_METHODS,
    METHODS,
    MethodSpec,
    _noisy_chunks,
    attribute,
    image_seed,
)
from pipeline.custom_explainers import input_gradient, predicted_class
from tests.conftest import rel_err

#: Small enough for a fast test, large enough that every method takes several passes.
TINY = {"n_steps": 4, "nt_samples": 2}
RUN_SEED = 11


def tiny_params(spec: MethodSpec) -> dict[str, object]:
    return spec.resolve({k: v for k, v in TINY.items() if k in spec.params})


def seeds_for(indices: range) -> list[int]:
    return [image_seed(RUN_SEED, i) for i in indices]


@pytest.fixture(scope="module")
def five() -> torch.Tensor:
    """Five seeded 32x32 normalized images ``(5, 3, 32, 32)`` (two shards: 2 + 3)."""
    return torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(99))


@pytest.fixture(scope="module")
def five_targets(model, five) -> torch.Tensor:
    return predicted_class(model, five)


# --- the registry ---------------------------------------------------------------------------


def test_default_methods_are_the_five_shipped_ones():
    assert DEFAULT_METHODS == ("gradient", "integrated_gradients", "smoothgrad",
                               "custom_gradient", "custom_integrated_gradients")
    assert set(DEFAULT_METHODS) <= set(METHODS)
    assert "input_x_gradient" in METHODS
    assert "input_x_gradient" not in DEFAULT_METHODS


def test_input_x_gradient_is_registered_as_captum_without_params_or_delta():
    spec = METHODS["input_x_gradient"]
    assert spec.name == "input_x_gradient"
    assert spec.implementation == "captum"
    assert dict(spec.params) == {}
    assert spec.resolve({}) == {}
    assert not spec.has_delta and not spec.stochastic
    with pytest.raises(ValueError, match="allowed: none"):
        spec.resolve({"abs": True})


# --- every registered method ----------------------------------------------------------------


def test_output_is_float32_finite_and_shaped_like_the_input(any_method, model, images):
    target = predicted_class(model, images)
    attr, delta, _ = attribute(any_method, model, images, target, tiny_params(any_method), 4,
                            seeds_for(range(3)))
    assert attr.shape == images.shape == (3, 3, 32, 32)
    assert attr.dtype == torch.float32
    assert torch.isfinite(attr).all()
    assert attr.abs().sum() > 0, "an all-zero map explains nothing"
    assert delta.shape == (3,) and delta.dtype == torch.float32


def test_delta_is_finite_exactly_when_the_method_has_one(any_method, model, images):
    target = predicted_class(model, images)
    _, delta, _ = attribute(any_method, model, images, target, tiny_params(any_method), 4,
                         seeds_for(range(3)))
    if any_method.has_delta:
        assert torch.isfinite(delta).all()
    else:
        assert torch.isnan(delta).all()


def test_batch_equals_concatenated_rows(any_method, model, images):
    """A row's numbers do not depend on the other rows of its batch (float32 rounding aside)."""
    target = predicted_class(model, images)
    params, seeds = tiny_params(any_method), seeds_for(range(3))
    batch, _, _ = attribute(any_method, model, images, target, params, 8, seeds)
    rows = torch.cat([
        attribute(any_method, model, images[i:i + 1], target[i:i + 1], params, 8,
                  seeds[i:i + 1])[0]
        for i in range(3)
    ])
    assert rel_err(batch, rows) < 1e-5


def test_batch_equals_rows_bitwise_with_one_sample_per_pass(any_method, model, images):
    """With ``max_batch=1`` every pass holds one sample either way, so the maps are equal bitwise.

    (Across other pass sizes they are not: oneDNN's CPU convolutions round a sample differently
    depending on how many samples share its pass.)
    """
    target = predicted_class(model, images)
    params, seeds = tiny_params(any_method), seeds_for(range(3))
    batch, _, _ = attribute(any_method, model, images, target, params, 1, seeds)
    rows = torch.cat([
        attribute(any_method, model, images[i:i + 1], target[i:i + 1], params, 1,
                  seeds[i:i + 1])[0]
        for i in range(3)
    ])
    assert torch.equal(batch, rows)


@pytest.mark.parametrize("max_batch", [1, 5])
def test_no_pass_holds_more_than_max_batch_samples(any_method, model, images, max_batch):
    """Seen at the classifier of any copy a method makes (the modified-gradient methods run on
    one with a module per nonlinearity use)."""
    from torch.nn.modules.module import register_module_forward_pre_hook

    target = predicted_class(model, images)
    sizes: list[int] = []

    def count(module, inp):
        if isinstance(module, torch.nn.Linear) and module.out_features == 1000:
            sizes.append(inp[0].shape[0])

    handle = register_module_forward_pre_hook(count)
    try:
        any_method.fn(model, images, target, tiny_params(any_method), max_batch,
                      seeds_for(range(3)))
    finally:
        handle.remove()
    assert sizes, "the hook saw no forward pass"
    assert max(sizes) <= max(max_batch, any_method.min_pass)


# --- input_x_gradient -----------------------------------------------------------------------


@pytest.mark.parametrize("max_batch", [1, 2, 64])
def test_input_x_gradient_is_input_times_custom_gradient(model, images, max_batch):
    spec = METHODS["input_x_gradient"]
    target = predicted_class(model, images)
    attr, delta, _ = attribute(spec, model, images, target, spec.resolve({}), max_batch)
    # One pass of 3 images against passes of max_batch: float rounding only (1.02e-6 seen on
    # a loaded machine); the exact check is against the same passes, below.
    assert rel_err(attr, images * input_gradient(model, images, target)) < 1e-5
    # Element by element against the same passes (the pass size moves the last float32 bit).
    same_passes = torch.cat([
        images[i:i + max_batch] * input_gradient(model, images[i:i + max_batch],
                                                 target[i:i + max_batch])
        for i in range(0, images.shape[0], max_batch)
    ])
    assert torch.allclose(attr, same_passes, rtol=1e-6, atol=0.0)
    assert torch.isnan(delta).all()


def test_input_x_gradient_follows_the_target(model, images):
    spec = METHODS["input_x_gradient"]
    target = predicted_class(model, images)
    attr, _, _ = attribute(spec, model, images, target, {}, 8)
    other, _, _ = attribute(spec, model, images, (target + 1) % 1000, {}, 8)
    assert rel_err(other, attr) > 1e-3


# --- SmoothGrad: per-image noise, independent of batching and shards ------------------------

SG_PARAMS = {"nt_samples": 4}


def _noise_per_sample(images: torch.Tensor, seeds: list[int], max_batch: int
                      ) -> dict[tuple[int, int], torch.Tensor]:
    """``(row, sample) -> noisy input`` from :func:`_noisy_chunks`, checking chunk sizes."""
    seen: dict[tuple[int, int], torch.Tensor] = {}
    count = [0] * images.shape[0]
    for noisy, rows in _noisy_chunks(images, seeds, 4, 0.3, max_batch):
        assert noisy.shape[0] == rows.shape[0] <= max_batch
        for x, r in zip(noisy, rows.tolist(), strict=True):
            seen[(r, count[r])] = x
            count[r] += 1
    assert count == [4] * images.shape[0]
    return seen


@pytest.mark.parametrize("max_batch", [1, 3, 7, 1000])
def test_smoothgrad_noise_is_bitwise_independent_of_chunking_and_shards(five, max_batch):
    seeds = seeds_for(range(5))
    whole = _noise_per_sample(five, seeds, 1000)
    chunked = _noise_per_sample(five, seeds, max_batch)
    first = _noise_per_sample(five[:2], seeds[:2], max_batch)
    second = _noise_per_sample(five[2:], seeds[2:], max_batch)
    sharded = {**first, **{(r + 2, k): x for (r, k), x in second.items()}}
    assert whole.keys() == chunked.keys() == sharded.keys()
    for key, x in whole.items():
        assert torch.equal(chunked[key], x), key
        assert torch.equal(sharded[key], x), key


@pytest.fixture(scope="module")
def smoothgrad_whole(model, five, five_targets) -> torch.Tensor:
    spec = METHODS["smoothgrad"]
    return attribute(spec, model, five, five_targets, spec.resolve(SG_PARAMS), 1000,
                     seeds_for(range(5)))[0]


#: Across pass sizes SmoothGrad is equal only up to float32 rounding, which is not bitwise:
#: oneDNN's CPU convolutions round a sample differently depending on how many samples share
#: its pass (typically 5e-7 relative here), and now and then that rounding flips a ReLU or
#: max-pool decision in one noisy copy (image 0 with ``max_batch=1``: 3.5e-3). Any error in
#: the noise or its bookkeeping is far larger: other seeds 0.44, one of 4 copies missing 0.17.
SG_TOL = 1e-2


@pytest.mark.parametrize("max_batch", [1, 3, 7, 1000])
def test_smoothgrad_is_independent_of_max_batch(model, five, five_targets, smoothgrad_whole,
                                                max_batch):
    """Same noise, same mean, whatever the pass size (bitwise for the same passes)."""
    spec = METHODS["smoothgrad"]
    attr, _, _ = attribute(spec, model, five, five_targets, spec.resolve(SG_PARAMS), max_batch,
                        seeds_for(range(5)))
    assert rel_err(attr, smoothgrad_whole) < SG_TOL
    if max_batch == 1000:
        assert torch.equal(attr, smoothgrad_whole)


@pytest.mark.parametrize("max_batch", [1, 4, 7, 1000])
def test_smoothgrad_is_independent_of_shards(model, five, five_targets, smoothgrad_whole,
                                             max_batch):
    """Images [0:2] and [2:5] attributed apart, with their own seeds, equal all five at once.

    Bitwise when the passes are the same either way: one sample per pass (``max_batch=1``) or
    one image's ``nt_samples`` per pass (``max_batch=4``).
    """
    spec = METHODS["smoothgrad"]
    params, seeds = spec.resolve(SG_PARAMS), seeds_for(range(5))
    whole, _, _ = attribute(spec, model, five, five_targets, params, max_batch, seeds)
    sharded = torch.cat([
        attribute(spec, model, five[s], five_targets[s], params, max_batch, seeds[s])[0]
        for s in (slice(0, 2), slice(2, 5))
    ])
    assert rel_err(sharded, whole) < SG_TOL
    assert rel_err(sharded, smoothgrad_whole) < SG_TOL
    if max_batch in (1, SG_PARAMS["nt_samples"]):
        assert torch.equal(sharded, whole)


def test_smoothgrad_tolerance_catches_wrong_noise(model, five, five_targets, smoothgrad_whole):
    """Other seeds, or a noisy copy too few, move the map far beyond :data:`SG_TOL`."""
    spec = METHODS["smoothgrad"]
    other, _, _ = attribute(spec, model, five, five_targets, spec.resolve(SG_PARAMS), 1000,
                         [image_seed(RUN_SEED + 1, i) for i in range(5)])
    assert rel_err(other, smoothgrad_whole) > 10 * SG_TOL
    fewer, _, _ = attribute(spec, model, five, five_targets, spec.resolve({"nt_samples": 3}),
                         1000, seeds_for(range(5)))
    assert rel_err(fewer, smoothgrad_whole) > 10 * SG_TOL
    again, _, _ = attribute(spec, model, five, five_targets, spec.resolve(SG_PARAMS), 1000,
                         seeds_for(range(5)))
    assert torch.equal(again, smoothgrad_whole)
