"""The method registry (:mod:`pipeline.attribution.method_registry`): every registered method, run
directly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.attribution.gradient import input_gradient, predicted_class
from pipeline.attribution.method_registry import (
    DEFAULT_METHODS,
    METHODS,
    MethodSpec,
    attribute,
    image_seed,
)
from pipeline.attribution.smoothgrad import noisy_chunks
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


def test_the_registry_order_is_the_documented_one():
    """CLI choices, messages and the docs list the methods in this order."""
    assert list(METHODS) == [
        "gradient", "integrated_gradients", "smoothgrad", "custom_gradient",
        "custom_integrated_gradients", "input_x_gradient", "grad_cam", "guided_grad_cam",
        "guided_backprop", "deeplift"]


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
        any_method.fn(model, images, target, any_method.canonical(tiny_params(any_method)),
                      max_batch, seeds_for(range(3)))
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
    """``(row, sample) -> noisy input`` from :func:`noisy_chunks`, checking chunk sizes."""
    seen: dict[tuple[int, int], torch.Tensor] = {}
    count = [0] * images.shape[0]
    for noisy, rows in noisy_chunks(images, seeds, 4, 0.3, max_batch):
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


# --- one spelling per parameter; stores and stage hashes keep theirs ------------------------

_HEAD = ('[dataset]\nlayout = "synthetic"\ncount = 4\nresize = 32\ncrop = 32\n'
         '[model]\nweights = "random"\n')
_FIVE = ("gradient", "integrated_gradients", "smoothgrad", "custom_gradient",
         "custom_integrated_gradients")

#: ``config body -> the config's attribute stage hash per method``, for configs written with
#: the stored spellings, the one spellings, or none (defaults). The literal hashes were
#: computed by the code at commit 6338a7c, which knew only the stored spellings: a run it
#: made must rerun with nothing to do.
_DEFAULT_HASHES = {"gradient": "63ff5bdfff50b44e", "integrated_gradients": "25c59abebfef400f",
                   "smoothgrad": "4ad65caeeccbb93c", "custom_gradient": "7138e58d0396e0d3",
                   "custom_integrated_gradients": "81f544f1e77d772a"}
_CHANGED_HASHES = {"gradient": "d28ede5d93bda06d", "integrated_gradients": "a25d33d2cac76004",
                   "smoothgrad": "5c22e293ff93bd8f", "custom_gradient": "2d9c69f3d6503526",
                   "custom_integrated_gradients": "598036fef253a6d1"}
_SPELLINGS = [
    ("defaults", "".join(f"[methods.{m}]\n" for m in _FIVE), _DEFAULT_HASHES),
    ("stored spellings, default values",
     '[methods.gradient]\nabs = true\n[methods.integrated_gradients]\nmethod = "gausslegendre"\n'
     '[methods.smoothgrad]\nabs = true\n[methods.custom_gradient]\nabsolute = false\n'
     '[methods.custom_integrated_gradients]\nrule = "seed"\n', _DEFAULT_HASHES),
    ("one spellings, default values",
     '[methods.gradient]\nabsolute = true\n[methods.integrated_gradients]\n'
     'rule = "gausslegendre"\n[methods.smoothgrad]\nabsolute = true\n'
     '[methods.custom_gradient]\nabsolute = false\n'
     '[methods.custom_integrated_gradients]\nrule = "linspace_mean"\n', _DEFAULT_HASHES),
    ("stored spellings, other values",
     '[methods.gradient]\nabs = false\n[methods.integrated_gradients]\n'
     'method = "riemann_trapezoid"\n[methods.smoothgrad]\nabs = false\n'
     '[methods.custom_gradient]\nabsolute = true\n'
     '[methods.custom_integrated_gradients]\nrule = "trapezoid"\n', _CHANGED_HASHES),
    ("one spellings, other values",
     '[methods.gradient]\nabsolute = false\n[methods.integrated_gradients]\n'
     'rule = "riemann_trapezoid"\n[methods.smoothgrad]\nabsolute = false\n'
     '[methods.custom_gradient]\nabsolute = true\n'
     '[methods.custom_integrated_gradients]\nrule = "trapezoid"\n', _CHANGED_HASHES),
]


def _attribute_hashes(tmp_path, body: str, overrides: tuple[str, ...] = ()):
    from workflows.config.loading import load_config
    from workflows.stages import REGISTRY

    path = tmp_path / "config.toml"
    path.write_text(_HEAD + body)
    cfg = load_config(path, overrides, env={}, out=tmp_path / "runs")
    hashes = REGISTRY.hashes(cfg, "random-resnet18")
    return cfg, {m: hashes[("attribute", m)] for m in cfg.methods}


@pytest.mark.parametrize("body,expected", [(b, e) for _, b, e in _SPELLINGS],
                         ids=[name for name, _, _ in _SPELLINGS])
def test_either_spelling_gives_the_attribute_hashes_of_existing_runs(tmp_path, body, expected):
    _, hashes = _attribute_hashes(tmp_path, body)
    assert hashes == expected


@pytest.mark.parametrize("override", ["methods.gradient.abs=false",
                                      "methods.gradient.absolute=false"])
def test_either_spelling_under_set_gives_the_hash_of_existing_runs(tmp_path, override):
    _, hashes = _attribute_hashes(tmp_path, "[methods.gradient]\n", (override,))
    assert hashes == {"gradient": _CHANGED_HASHES["gradient"]}


def test_the_stored_parameters_are_those_existing_runs_hold(tmp_path):
    """What the store's ``config`` attribute and ``config.resolved.json`` hold, as the code
    at commit 6338a7c wrote them (key order included)."""
    cfg, _ = _attribute_hashes(tmp_path, _SPELLINGS[2][1])
    stored = {m: list(p.items()) for m, p in cfg.methods.items()}
    ig = [("baseline", "black"), ("baseline_sigma", 10.0)]
    assert stored == {
        "gradient": [("abs", True)],
        "integrated_gradients": [("n_steps", 50), ("method", "gausslegendre"), *ig],
        "smoothgrad": [("nt_samples", 10), ("stdevs", 0.3), ("abs", True)],
        "custom_gradient": [("absolute", False)],
        "custom_integrated_gradients": [
            ("n_steps", 50), ("rule", "seed"), ("tolerance", 0.01), ("max_steps", 512),
            ("criterion", "completeness"), *ig],
    }


def test_a_parameter_given_in_both_spellings_is_an_error():
    with pytest.raises(ValueError, match=r"expected one of abs and absolute .*got both"):
        METHODS["gradient"].resolve({"abs": True, "absolute": False})


def test_canonical_and_stored_forms_are_inverse():
    for spec in METHODS.values():
        stored = spec.resolve({})
        assert spec.resolve(spec.canonical(stored)) == stored
        assert spec.stored(spec.canonical(stored)) == stored
    ig = METHODS["custom_integrated_gradients"]
    assert ig.canonical({"rule": "seed"})["rule"] == "linspace_mean"
    assert METHODS["integrated_gradients"].canonical({"method": "riemann_left"})["rule"] \
        == "riemann_left"


def test_attribute_runs_the_same_maps_for_either_spelling(model, images):
    target = predicted_class(model, images)
    spec = METHODS["gradient"]
    stored, _, _ = attribute(spec, model, images, target, {"abs": False}, 8)
    named, _, _ = attribute(spec, model, images, target, {"absolute": False}, 8)
    assert torch.equal(stored, named)
    assert (stored < 0).any(), "abs = false keeps the sign"


def test_bounds_keep_every_value_they_accepted():
    """Closed where the registry said minimum, open where it said between."""
    ig = METHODS["custom_integrated_gradients"]
    assert ig.params["n_steps"].check("n_steps", 2) is None
    assert ig.params["n_steps"].check("n_steps", 1) == "expected n_steps >= 2, got 1"
    assert ig.params["baseline_sigma"].check("baseline_sigma", 0.1) is None
    assert ig.params["tolerance"].check("tolerance", 1e-9) is None
    assert ig.params["tolerance"].check("tolerance", 0.999) is None
    for edge in (0.0, 1.0):
        assert ig.params["tolerance"].check("tolerance", edge) == \
            f"expected 0 < tolerance < 1, got {edge!r}"
    sg = METHODS["smoothgrad"]
    assert sg.params["stdevs"].check("stdevs", 0) is None
    assert sg.params["nt_samples"].check("nt_samples", 1) is None
    assert sg.params["stdevs"].check("stdevs", float("nan")) == \
        "expected stdevs to be a finite number, got nan"
    assert sg.params["stdevs"].check("stdevs", "big") == "expected stdevs to be float, got 'big'"


def test_the_registry_is_read_without_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom pipeline.attribution.method_registry import METHODS\n"
            "assert len(METHODS) == 10\n"
            "print(sorted(m for m in ('torch', 'captum', 'matplotlib') if m in sys.modules))")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


def hint_problems(spec: MethodSpec, hint: str) -> list[str]:
    """What in a completeness hint ``hint`` does not fit method ``spec``: a hint on a method
    without a delta; a parameter of any method that ``spec`` does not have (``its n_steps``,
    ``rule = "..."`` or the bare name); a suggested value the parameter does not allow, or
    that is already its default."""
    import re

    if not spec.has_delta:
        return [f"{spec.name} has no completeness delta, got a hint {hint!r}"] if hint else []
    known = {key for other in METHODS.values()
             for name, p in other.params.items() for key in (name, p.stored_as) if key}
    problems = [f"names {word}, not a parameter of {spec.name}"
                for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", hint)
                if word in known and spec.param_name(word) is None]
    problems += [f"says 'its {word}', not a parameter of {spec.name}"
                 for word in re.findall(r"\bits ([A-Za-z_][A-Za-z0-9_]*)", hint)
                 if spec.param_name(word) is None]
    for key, quoted, bare in re.findall(r'([A-Za-z_]\w*) = (?:"([^"]*)"|([\w.+-]+))', hint):
        param = spec.param(key)
        if param is None:
            problems.append(f"sets {key}, not a parameter of {spec.name}")
            continue
        value = quoted if quoted else param.type(bare)
        problem = param.check(key, value)
        if problem:
            problems.append(f"suggests {key} = {value!r}: {problem}")
        elif param.canonical_value(value) == param.default:
            problems.append(f"suggests {key} = {value!r}, already its default")
    return problems


@pytest.mark.parametrize("name", list(METHODS))
def test_each_completeness_hint_names_only_the_methods_own_parameters(name):
    spec = METHODS[name]
    assert hint_problems(spec, spec.incomplete_hint) == []
    assert bool(spec.incomplete_hint) == spec.has_delta


def test_a_hint_that_names_a_default_or_a_missing_parameter_is_caught():
    """The hint every method carried before hints came from the registry: Captum's
    integrated_gradients already uses Gauss-Legendre, and DeepLift has no n_steps."""
    old = 'raise its n_steps, or use rule = "gausslegendre" (docs/methods.md, Completeness)'
    assert hint_problems(METHODS["integrated_gradients"], old) == [
        "suggests rule = 'gausslegendre', already its default"]
    assert hint_problems(METHODS["deeplift"], old) == [
        "names n_steps, not a parameter of deeplift", "names rule, not a parameter of deeplift",
        "says 'its n_steps', not a parameter of deeplift",
        "sets rule, not a parameter of deeplift"]
    assert hint_problems(METHODS["custom_integrated_gradients"], 'use rule = "simpson"') == [
        "suggests rule = 'simpson': expected rule to be one of linspace_mean, trapezoid, "
        "gausslegendre, adaptive, got 'simpson'"]
    assert hint_problems(METHODS["gradient"], old) != []
