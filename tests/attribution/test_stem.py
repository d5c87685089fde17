from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pipeline.attribution.accel import CompiledWithFallback, optimize
from pipeline.attribution.gradient import predicted_class
from pipeline.attribution.path_engine import integrated_gradients
from pipeline.attribution.quadrature import QUADRATURE_RULES
from pipeline.attribution.stem import affine_stem
from pipeline.data.images import black_baseline
from tests.conftest import rel_err


def _variants(model: nn.Module) -> dict[str, nn.Module]:
    return {
        "plain": model,
        "channels_last": optimize(model, "cpu", channels_last=True),
        "fuse_bn": optimize(model, "cpu", channels_last=True, fuse_bn=True),
    }


@pytest.mark.parametrize("variant", ["plain", "channels_last", "fuse_bn"])
def test_split_computes_the_same_function(model, images, variant):
    m = _variants(model)[variant]
    split = affine_stem(m)
    assert split is not None
    with torch.no_grad():
        assert torch.equal(split.rest(split.stem(images)), m(images))


def test_split_looks_through_the_compile_wrapper(model):
    split = affine_stem(CompiledWithFallback(model))
    assert split is not None
    assert isinstance(split.rest, CompiledWithFallback)


def test_rest_never_overwrites_its_input(model, images):
    split = affine_stem(model)
    assert split is not None
    z = split.stem(images)
    before = z.clone()
    split.rest(z)  # ResNet's first op after bn1 is an in-place ReLU
    assert torch.equal(z, before)


def test_vjp_is_the_input_gradient_of_the_stem(model, images):
    split = affine_stem(model)
    assert split is not None
    x = images.clone().requires_grad_(True)
    out = split.stem(x)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (expected,) = torch.autograd.grad(out, x, g)
    assert rel_err(split.vjp(g, tuple(images.shape)), expected) < 1e-6


class _NoStem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(torch.relu(x)).mean((2, 3)))


class _InPlaceOnStemOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mul_(2.0).mean((2, 3)))


def test_models_without_an_affine_stem_are_not_split(model):
    training = copy.deepcopy(model).train()
    assert affine_stem(_NoStem().eval()) is None
    assert affine_stem(_InPlaceOnStemOutput().eval()) is None
    # Training-mode BatchNorm normalizes by the batch, so it is not part of the stem.
    split = affine_stem(training)
    assert split is not None
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in split.stem.modules())


def test_models_without_a_stem_still_get_integrated_gradients(images):
    m = _InPlaceOnStemOutput().eval()
    target = torch.zeros(images.shape[0], dtype=torch.long)
    base = black_baseline(images)
    a = integrated_gradients(m, images, target, base, 6, max_batch=4)
    b = integrated_gradients(m, images, target, base, 6, max_batch=4, factor_stem=False)
    assert torch.equal(a, b)


@pytest.mark.parametrize("rule", QUADRATURE_RULES)
@pytest.mark.parametrize("variant", ["plain", "channels_last"])
def test_factored_stem_is_the_same_integral_in_float64(model, images, rule, variant):
    """In float64 the two engines agree to rounding; in float32 they differ only where a
    max-pool window holds near-equal maxima that rounding reorders."""
    m = copy.deepcopy(_variants(model)[variant]).double()  # .double() works in place
    x = images.double()
    target = predicted_class(m, x)
    base = black_baseline(x)
    # 7 samples per chunk and 5 points per row: chunks span rows and rows span chunks.
    plain = integrated_gradients(m, x, target, base, 5, rule=rule, max_batch=7,
                                 factor_stem=False)
    factored = integrated_gradients(m, x, target, base, 5, rule=rule, max_batch=7)
    assert affine_stem(m) is not None
    assert rel_err(factored, plain) < 1e-12


@pytest.mark.parametrize("max_batch", [1, 3, 64])
def test_rest_sees_the_float64_path_rounded_once(model, images, max_batch):
    """The points fed to the rest are (S(b) + a_k (S(x) - S(b))) in float64, rounded once."""
    target = predicted_class(model, images)
    base = black_baseline(images)
    split = affine_stem(model)
    assert split is not None
    seen: list[torch.Tensor] = []
    handle = split.rest.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].detach()))
    try:
        integrated_gradients(model, images, target, base, 4, rule="trapezoid",
                             max_batch=max_batch)
    finally:
        handle.remove()
    stem64 = copy.deepcopy(split.stem).double()
    with torch.no_grad():
        zb, zx = stem64(base.double()), stem64(images.double())
    alphas = torch.linspace(0, 1, 4, dtype=torch.float64).view(1, 4, 1, 1, 1)
    expected = (zb[:, None] + alphas * (zx - zb)[:, None]).flatten(0, 1).float()
    assert torch.equal(torch.cat(seen), expected)


class _ReadsItsSize(nn.Module):
    """An input that reaches its first layer only after its size is read, once per
    dimension (as an exported program does)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        scale = x.size(1) + x.size(2) + x.size(3)
        return self.fc(x.mean((2, 3))) / scale


def test_why_no_stem_was_found_names_each_op_once():
    from pipeline.attribution.stem import describe_stem

    assert describe_stem(_ReadsItsSize().eval()) == (
        "not found: the input does not go through Conv2d / eval BatchNorm layers first (it "
        "goes to size (call method), mean (call method))")
