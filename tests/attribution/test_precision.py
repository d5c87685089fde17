"""Precision modes: fp32-fwd's forward is strict, its backward TF32; on a CPU it is fp32."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import nn

from pipeline.attribution.accel import TF32Backward, for_precision
from pipeline.attribution.precision import PRECISIONS, precision_mode


def _flags() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


class _Spy(torch.autograd.Function):
    seen: ClassVar[dict[str, tuple[bool, bool]]] = {}

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        _Spy.seen["forward"] = _flags()
        return x * 2

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        _Spy.seen["backward"] = _flags()
        return grad * 2


class _Net(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Spy.apply(x).sum(dim=1)


@pytest.mark.parametrize("mode", PRECISIONS)
def test_every_listed_mode_runs_and_an_unlisted_one_is_refused(mode):
    with precision_mode(mode, "cpu"):
        pass
    with pytest.raises(ValueError, match="Expected precision in fp32, fp32-fwd"), \
            precision_mode(mode.upper() + "x", "cpu"):
        pass


def test_forward_is_strict_and_backward_tf32_then_flags_are_restored():
    before = _flags()
    x = torch.randn(2, 3, requires_grad=True)
    with precision_mode("fp32-fwd", "cpu"):
        out = TF32Backward(_Net())(x)
        assert _Spy.seen["forward"] == (False, False)
        torch.autograd.grad(out.sum(), x)
        assert _Spy.seen["backward"] == (True, True)
        TF32Backward(_Net())(x)  # the next forward is strict again
        assert _Spy.seen["forward"] == (False, False)
    assert _flags() == before


def test_on_cpu_fp32_fwd_is_the_model_itself(model):
    assert for_precision(model, "fp32-fwd", "cpu") is model
    assert for_precision(model, "fp32", "cuda") is model
    assert isinstance(for_precision(model, "fp32-fwd", "cuda"), TF32Backward)


def test_the_affine_stem_is_found_through_the_wrapper(model, images):
    from pipeline.attribution.stem import affine_stem

    wrapped = TF32Backward(model)
    split = affine_stem(wrapped)
    assert split is not None and isinstance(split.rest, TF32Backward)
    with torch.no_grad():
        torch.testing.assert_close(split.rest(split.stem(images)), model(images))
