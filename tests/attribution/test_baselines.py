"""IG baselines: what each one is, and completeness measured against the one actually used."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.attribution.baselines import BASELINES, blur_kernel_size, describe, make_baseline
from pipeline.attribution.method_registry import METHODS, attribute, completeness_delta
from pipeline.data.images import IMAGENET_MEAN, black_baseline, denormalize

IG_METHODS = [name for name, spec in METHODS.items() if "baseline" in spec.params]
SEEDS = [11, 22, 33]


def test_every_ig_method_offers_every_baseline():
    assert IG_METHODS == ["integrated_gradients", "custom_integrated_gradients", "deeplift"]
    for name in IG_METHODS:
        assert METHODS[name].params["baseline"].allowed.choices == tuple(BASELINES)
        assert METHODS[name].params["baseline"].default == "black"


def test_black_and_mean_are_their_colours(images):
    assert torch.equal(make_baseline("black", images, {}), black_baseline(images))
    mean = denormalize(make_baseline("mean", images, {}))
    expected = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1).expand_as(mean)
    torch.testing.assert_close(mean, expected)


def test_blur_keeps_a_flat_image_and_smooths_detail(images):
    flat = torch.full_like(images, 0.7)
    params = {"baseline_sigma": 3.0}
    torch.testing.assert_close(make_baseline("blur", flat, params), flat)
    blurred = make_baseline("blur", images, params)
    assert blurred.shape == images.shape
    assert blurred.std() < 0.5 * images.std()  # the seeded noise images lose their detail
    # The per-channel mean survives a blur with reflected borders only approximately; the
    # total is what a colour-preserving baseline keeps.
    torch.testing.assert_close(blurred.mean((2, 3)), images.mean((2, 3)), atol=0.05, rtol=0)


def test_blur_kernel_is_odd_and_fits_the_image():
    assert blur_kernel_size(1.0, 224, 224) == 7
    assert blur_kernel_size(10.0, 224, 224) == 61
    assert blur_kernel_size(100.0, 32, 40) == 63  # (k - 1) / 2 < 32: reflection stays inside
    assert all(blur_kernel_size(s, 9, 9) % 2 == 1 for s in (0.1, 1.0, 5.0, 50.0))


def test_uniform_is_seeded_per_image_and_a_picture(images):
    a = make_baseline("uniform", images, {}, SEEDS)
    again = make_baseline("uniform", images[1:], {}, SEEDS[1:])
    torch.testing.assert_close(a[1:], again, rtol=0, atol=0)  # a row's noise ignores the batch
    assert not torch.equal(a[0], a[1])
    pixels = denormalize(a)
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6


def test_describe_names_the_blur_sigma():
    assert describe({"baseline": "blur", "baseline_sigma": 4.0}) == \
        "blur (Gaussian, sigma=4 px)"
    assert describe({"baseline": "uniform", "baseline_sigma": 4.0}) == "uniform"


def test_unknown_baseline_lists_the_choices(images):
    with pytest.raises(KeyError, match="black, blur, uniform, mean"):
        make_baseline("white", images, {})


@pytest.fixture(scope="module")
def linear() -> nn.Module:
    """``f(x) = W x + b``: Integrated Gradients is exact for it, from any baseline."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)).double()
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


@pytest.mark.parametrize("method", IG_METHODS)
@pytest.mark.parametrize("baseline", list(BASELINES))
def test_ig_is_exact_on_a_linear_model_and_delta_uses_the_baseline(linear, images, method,
                                                                  baseline):
    """Exact answer (IG and DeepLift alike): ``A = (x - x_bar) * w_c`` and
    ``sum(A) = F(x) - F(x_bar)``. A delta computed against the black image instead would be
    off by ``F(black) - F(x_bar)``."""
    x = images.double()
    target = torch.tensor([0, 3, 9])
    spec = METHODS[method]
    given = {"n_steps": 3, "baseline": baseline, "baseline_sigma": 2.0}
    params = spec.resolve({k: v for k, v in given.items() if k in spec.params})
    attr, delta, gap = attribute(spec, linear, x, target, params, 8, SEEDS)
    base = make_baseline(baseline, x, params, SEEDS)
    w = linear[1].weight[target].view(3, 3, 32, 32)
    torch.testing.assert_close(attr.double(), ((x - base) * w).float().double(),
                               rtol=1e-5, atol=1e-6)
    assert delta.abs().max() < 1e-3 * gap.abs().max()
    torch.testing.assert_close(gap.double(), (linear(x) - linear(base))[range(3), target],
                               rtol=1e-6, atol=1e-6)
    if baseline != "black":
        wrong = completeness_delta(linear, x, target, attr)  # against the black image
        assert (wrong - delta.double()).abs().min() > 1e-3
