"""Speed options for the attribution engine, each with a clean fallback.

``channels_last``
    NHWC memory format for the convolutions (measured on 2 CPU cores: +15% for IG; on GPUs it
    enables the tensor-core kernels). The wrapper converts the input, so gradients still flow
    back to an ordinary NCHW tensor and every method (Captum's too) works unchanged.
``fuse_bn``
    Fold each eval-mode BatchNorm into the preceding convolution (``torch.fx`` fusion): fewer
    ops forward and backward, same function up to float rounding.
``compile``
    ``torch.compile``; if compiling or the first call fails, the eager model is used and a
    warning says why. Off by default: on 2 CPU cores IG ran 20% slower compiled (inductor,
    ``dynamic=True``) after a 20 s compile; meant for GPUs, not yet measured there.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from pipeline.attribution.precision import set_tf32


class ChannelsLast(nn.Module):
    """Runs ``inner`` (converted to channels_last) on channels_last copies of its input."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.contiguous(memory_format=torch.channels_last))


class CompiledWithFallback(nn.Module):
    """``torch.compile(inner)``; falls back to ``inner`` for good on the first failure."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.failed: str | None = None
        compiled: Any = None
        try:
            compiled = torch.compile(inner, dynamic=True)
        except Exception as exc:  # compile can fail for platform reasons; eager still works
            self.failed = f"{type(exc).__name__}: {exc}"
        # A plain attribute, not a child module: the weights are registered once, via inner.
        object.__setattr__(self, "compiled", compiled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compiled: Any = self.__dict__["compiled"]
        if compiled is not None and self.failed is None:
            try:
                return compiled(x)
            except Exception as exc:
                self.failed = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                warnings.warn(f"torch.compile failed, running eagerly: {self.failed}",
                              RuntimeWarning, stacklevel=2)
        return self.inner(x)


def fuse_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with eval-mode conv+BN pairs folded; the original if untraceable."""
    from torch.fx.experimental.optimization import fuse

    try:
        fused = fuse(copy.deepcopy(model), inplace=True)
    except Exception as exc:
        warnings.warn(f"BatchNorm folding skipped ({type(exc).__name__}: {exc})",
                      RuntimeWarning, stacklevel=2)
        return model
    fused.eval()
    for param in fused.parameters():
        param.requires_grad_(False)
    return fused


def optimize(model: nn.Module, device: torch.device | str, *, channels_last: bool = True,
             fuse_bn: bool = False, compile: bool = False) -> nn.Module:
    """A copy of ``model`` with the chosen speed options; the function it computes is unchanged.

    ``model`` itself is never modified (``Module.to`` works in place, so this copies first).

    Parameters
    ----------
    model
        Eval-mode classifier ``(N, 3, H, W) -> (N, C)``.
    channels_last, fuse_bn, compile
        See the module docstring.
    """
    out = copy.deepcopy(model).to(device)
    if fuse_bn:
        out = fuse_batchnorm(out)
    if channels_last:
        out = ChannelsLast(out)
    if compile:
        out = CompiledWithFallback(out)
    return out.eval()


def _tf32_from_here(grad: torch.Tensor) -> None:
    set_tf32(True)  # the backward pass starts at the output: TF32 from here on


class TF32Backward(torch.nn.Module):
    """Runs ``inner`` with TF32 off for the forward pass and on for its backward pass.

    The flags are process-wide: the forward switches them off before it runs, and a hook on
    the output switches them on when the gradient reaches it. Use inside
    ``precision_mode("fp32-fwd")``, which restores the caller's flags afterwards.
    """

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        set_tf32(False)
        out: torch.Tensor = self.inner(x)
        if out.requires_grad:
            out.register_hook(_tf32_from_here)
        return out


def for_precision(model: torch.nn.Module, mode: str, device: torch.device | str
                  ) -> torch.nn.Module:
    """``model`` wrapped as ``mode`` needs: :class:`TF32Backward` for ``fp32-fwd`` on CUDA."""
    if mode == "fp32-fwd" and torch.device(device).type == "cuda":
        return TF32Backward(model)
    return model


def compile_state(model: nn.Module) -> str:
    """``torch.compile`` of an optimized model in words: on, or fallen back to eager (why)."""
    for module in model.modules():
        if isinstance(module, CompiledWithFallback):
            return f"fell back to eager ({module.failed})" if module.failed else "on"
    return "off"


def network_path(model: nn.Module) -> str:
    """The module name of the network inside the engine's wrappers (``""``: ``model`` is it).

    The wrappers are :class:`ChannelsLast`, :class:`CompiledWithFallback`,
    :class:`TF32Backward` (``.inner``) and the softmax head ``Sequential(network, Softmax)``
    (``0``): ``"inner.0"`` for a channels_last softmax model.
    """
    path: list[str] = []
    while True:
        if isinstance(model, ChannelsLast | CompiledWithFallback | TF32Backward):
            path.append("inner")
            model = model.inner
        elif (isinstance(model, nn.Sequential) and len(model) == 2
              and isinstance(model[1], nn.Softmax)):
            path.append("0")
            model = model[0]
        else:
            return ".".join(path)


def network(model: nn.Module) -> nn.Module:
    """The network inside the engine's wrappers (see :func:`network_path`): its module names
    are the ones a user's config gives (``layer4``, ``features.7``)."""
    path = network_path(model)
    return model.get_submodule(path) if path else model
