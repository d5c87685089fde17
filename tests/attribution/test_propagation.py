"""Modified-gradient methods (``pipeline.attribution.propagation``): one nonlinearity per use,
DeepLift's completeness, and guided backprop against an implementation of its own."""

from __future__ import annotations

import pytest
import torch
import torchvision
from captum.attr import DeepLift, GuidedBackprop
from torch import nn

from pipeline.attribution.accel import optimize
from pipeline.attribution.network_rewrite import unshared
from pipeline.attribution.propagation import deeplift, guided_backprop
from pipeline.models.classifier import freeze, with_head


def _resnet(head: str = "logits") -> nn.Module:
    torch.manual_seed(0)
    return with_head(freeze(torchvision.models.resnet18(num_classes=10).eval()), head)


def _small_cnn() -> nn.Module:
    """A CNN that uses each ReLU module once: Captum's own methods work on it as it is."""
    torch.manual_seed(1)
    return freeze(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 5)).eval())


def test_unshared_computes_the_same_function_with_one_relu_per_use():
    model = optimize(_resnet("softmax"), "cpu", channels_last=True)
    free, note = unshared(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(free(x), model(x))
    relus = [m for m in free.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == len({id(m) for m in relus}) == 17  # ResNet18: 1 + 8 blocks x 2
    assert not any(m.inplace for m in relus[1:])
    assert "given a module of their own" in note
    assert unshared(model)[0] is free  # made once per model


@pytest.mark.parametrize("head", ["logits", "softmax"])
def test_captums_deeplift_refuses_stock_resnet_and_ours_adds_up(head):
    """captum #378/#934: a ReLU module used twice breaks DeepLift. On the unshared network
    with rules that add up (overlapping max-pool windows, the softmax head), sum(A) =
    F(x) - F(black) to float rounding, on the logits and on the probabilities."""
    from pipeline.data.images import black_baseline

    model = _resnet(head)
    x = torch.randn(2, 3, 64, 64)
    base = black_baseline(x)
    t = torch.tensor([3, 8])
    with pytest.raises(RuntimeError, match="input/output attributes"):
        DeepLift(model).attribute(x, baselines=base, target=t)
    attr = deeplift(model, x, t, {}, max_batch=4, baselines=base)
    with torch.no_grad():
        gap = (model(x) - model(base))[torch.arange(2), t].double()
    rel = (attr.double().flatten(1).sum(1) - gap).abs() / gap.abs()
    assert rel.max() < 1e-4, rel


def test_max_pool_shares_add_up_where_captums_rule_loses_some():
    """Captum puts each window's share on its argmax input with max_unpool2d (which
    overwrites an input that two overlapping windows share); its maps miss completeness, ours
    add up."""
    torch.manual_seed(4)
    model = freeze(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(3, 2, 1),
                                 nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval())
    x, base = torch.randn(2, 3, 16, 16), torch.zeros(2, 3, 16, 16)
    t = torch.tensor([0, 2])
    with torch.no_grad():
        gap = (model(x) - model(base))[torch.arange(2), t].double()

    def miss(attr):
        return ((attr.double().flatten(1).sum(1) - gap).abs() / gap.abs()).max()

    assert miss(deeplift(model, x, t, {}, 4, baselines=base)) < 1e-5
    assert miss(DeepLift(model).attribute(x, baselines=base, target=t)) > 1e-3


def test_deeplift_equals_captums_where_its_rules_add_up():
    """On ReLU and average pooling Captum's rules are ours: the same maps. (Its max-pool and
    softmax rules are replaced: see the tests above and below.)"""
    torch.manual_seed(1)
    model = freeze(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 5)).eval())
    x, base = torch.randn(3, 3, 16, 16), torch.randn(3, 3, 16, 16) * 0.1
    t = torch.tensor([0, 2, 4])
    ours = deeplift(model, x, t, {}, max_batch=2, baselines=base)
    ref = DeepLift(model).attribute(x, baselines=base, target=t)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-8)


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes only positive gradients where the input was positive."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0).to(grad.dtype)


class _Guided(nn.Module):
    def forward(self, x):
        return _GuidedReLU.apply(x)


def _guided_by_hand(model: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    import copy

    copied = copy.deepcopy(model)
    for parent in copied.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, name, _Guided())  # stateless: a shared module is fine
    x = x.clone().requires_grad_()
    copied(x)[torch.arange(len(t)), t].sum().backward()
    return x.grad


def test_guided_backprop_equals_a_guided_relu_written_by_hand():
    model = _resnet("logits")
    x, t = torch.randn(2, 3, 64, 64), torch.tensor([1, 6])
    ours = guided_backprop(model, x, t, {}, max_batch=1)
    ref = _guided_by_hand(model, x, t)
    # One image a pass against two: the same numbers up to float rounding.
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5 * float(ref.detach().abs().max()))
    cnn = _small_cnn()
    xs, ts = torch.randn(2, 3, 16, 16), torch.tensor([0, 1])
    torch.testing.assert_close(guided_backprop(cnn, xs, ts, {}, 8),
                               GuidedBackprop(cnn).attribute(xs, target=ts))


def test_functional_relus_become_modules():
    """DenseNet-style ``F.relu`` calls would pass the plain gradient unseen by the hooks."""

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            x = torch.nn.functional.relu(self.conv(x))
            return self.fc(x.mean(dim=(2, 3)).relu())

    torch.manual_seed(2)
    model = freeze(Functional().eval())
    free, note = unshared(model)
    assert sum(isinstance(m, nn.ReLU) for m in free.modules()) == 2, note
    x, base, t = torch.randn(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), torch.tensor([0, 2])
    attr = deeplift(model, x, t, {}, 4, baselines=base)
    with torch.no_grad():
        gap = (model(x) - model(base))[torch.arange(2), t].double()
    assert torch.allclose(attr.double().flatten(1).sum(1), gap, rtol=1e-5, atol=1e-7)


def test_deeplifts_softmax_rule_keeps_rows_apart():
    """Captum's softmax rule subtracts a mean over the whole batch, so a row's map moves with
    the other rows of its pass; ours (the Jacobian averaged along each row's own logit path)
    does not."""
    model = _resnet("softmax")
    x, base = torch.randn(3, 3, 64, 64), torch.zeros(3, 3, 64, 64)
    t = torch.tensor([0, 4, 9])
    batch = deeplift(model, x, t, {}, max_batch=8, baselines=base)
    rows = torch.cat([deeplift(model, x[i:i + 1], t[i:i + 1], {}, 8, baselines=base[i:i + 1])
                      for i in range(3)])
    # Equal up to the batch-size dependence of the convolutions themselves (bit for bit on
    # Intel's MKL; 1.7e-9 of 2.2e-3 on an AMD EPYC, where the forward pass alone differs by
    # 1.5e-7 between a batch and its rows), far below Captum's mixing (about 0.2%).
    torch.testing.assert_close(batch, rows, rtol=1e-5, atol=1e-5 * float(batch.abs().max()))
    free = unshared(model)[0]
    theirs = DeepLift(free).attribute(x, baselines=base, target=t)
    alone = DeepLift(free).attribute(x[:1], baselines=base[:1], target=t[:1])
    assert not torch.allclose(theirs[:1], alone, rtol=1e-4)
