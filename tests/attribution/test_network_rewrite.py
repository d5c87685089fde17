"""DeepLift's softmax rule (``pipeline.attribution.network_rewrite``): multipliers that sum to
exactly zero, so that the maps add up at logits of 1e6, and a rule that adds up where the
softmax saturates along the path."""

from __future__ import annotations

import torch
from captum.attr import DeepLift
from torch import nn

from pipeline.attribution import network_rewrite
from pipeline.attribution.propagation import deeplift
from pipeline.models.classifier import freeze

#: A logit offset of about 1e6 that float32 holds exactly together with steps of 1/8.
OFFSET = 2.0 ** 20


class SharedOffset(nn.Module):
    """Logits ``x + OFFSET * sum(x)``: every class moves by the same ~1e6 with the input. On
    inputs in steps of 1/8 every logit is exact in float32 (the spacing below 2^21 is 1/8),
    and so is the backward pass, so the only rounding left is the rule's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + OFFSET * x.sum(1, keepdim=True)


def _offset_case() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (3, 5), generator=gen).float() / 8  # sum(x) < 2: logits < 2^21
    model = freeze(nn.Sequential(SharedOffset(), nn.Softmax(dim=1)).eval())
    with torch.no_grad():
        targets = model(x).argmax(1)
    return model, x, torch.zeros_like(x), targets


def _miss(model: nn.Module, attr: torch.Tensor, x: torch.Tensor, base: torch.Tensor,
          targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``|sum(A) - gap|`` per row, float64, and float32's rounding of the gap: 4 units in the
    last place of the larger of ``F(x)`` and ``F(baseline)``."""
    with torch.no_grad():
        rows = torch.arange(len(x))
        out, out_base = model(x)[rows, targets].double(), model(base)[rows, targets].double()
    rounding = 4 * torch.finfo(torch.float32).eps * torch.maximum(out.abs(), out_base.abs())
    return (attr.detach().double().sum(1) - (out - out_base)).abs(), rounding


def test_softmax_multipliers_sum_to_exactly_zero(monkeypatch):
    """Softmax ignores a shift shared by all its inputs, so its multipliers must sum to zero
    over the classes; rounded one by one to float32 they summed to about 1e-9."""
    sums: list[torch.Tensor] = []
    backward = network_rewrite._SoftmaxPathRule.backward

    def spy(ctx, grad):
        out = backward(ctx, grad)
        sums.append(out[0].sum(-1))
        return out

    monkeypatch.setattr(network_rewrite._SoftmaxPathRule, "backward", staticmethod(spy))
    model, x, base, targets = _offset_case()
    deeplift(model, x, targets, {}, 8, baselines=base)
    (total,) = sums
    assert total.dtype == torch.float32
    assert torch.equal(total, torch.zeros_like(total)), total


def test_deeplift_adds_up_at_logits_of_1e6_better_than_captums():
    """Logits of about 1e6 that share their offset: the maps add up to float32 rounding of
    the gap (before the multipliers summed to zero they missed by 6.8e-3 of gaps of 0.04),
    within Captum's DeepLift completeness tolerance (3e-3), and closer than Captum's own
    DeepLift on the same rows (one image a pass: its rule mixes the rows of a pass)."""
    model, x, base, targets = _offset_case()
    with torch.no_grad():
        assert model[0](x).abs().max() > 5e5
    ours, rounding = _miss(model, deeplift(model, x, targets, {}, 8, baselines=base), x, base,
                           targets)
    assert (ours <= rounding).all(), (ours, rounding)
    for row in range(len(x)):
        s = slice(row, row + 1)
        theirs, _ = _miss(model, DeepLift(model).attribute(x[s], baselines=base[s],
                                                           target=targets[s]),
                          x[s], base[s], targets[s])
        assert ours[row] < 3e-3
        assert ours[row] <= theirs[0]


def test_deeplift_adds_up_where_the_softmax_saturates_along_the_path():
    """Logit gaps of about 1e5: the softmax switches from the baseline's class to the image's
    within 1e-5 of the path, between two of the rule's nodes; the maps still add up."""
    torch.manual_seed(0)
    head = nn.Linear(10, 10)
    with torch.no_grad():
        head.weight.mul_(1e5)
    model = freeze(nn.Sequential(head, nn.Softmax(dim=1)).eval())
    x, base = torch.rand(3, 10), torch.zeros(3, 10)
    with torch.no_grad():
        targets = model(x).argmax(1)
    with torch.no_grad():
        gap = (model(x) - model(base))[torch.arange(3), targets]
    miss, _ = _miss(model, deeplift(model, x, targets, {}, 8, baselines=base), x, base,
                    targets)
    assert (gap > 0.5).all()  # before the rule put back what its nodes miss: 0.11 to 0.92
    assert (miss < 1e-6).all(), miss
