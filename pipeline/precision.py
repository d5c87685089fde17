"""Numerical precision modes for attribution.

``fp32`` is strict float32: TF32 is switched off, because on NVIDIA GPUs PyTorch's default
TF32 convolutions moved Integrated Gradients about 5% (relative L2) from a float64 reference.
``fp32-fwd`` runs the forward pass in strict float32 and the backward pass in TF32 (through
:class:`TF32Backward`): the forward decides the ReLU and max-pool pattern, so that is where
precision matters; measured on one H100, 1.3x faster at 1.4e-3 error. On a CPU, TF32 does
not exist and ``fp32-fwd`` computes exactly what ``fp32`` does.
``tf32`` allows TF32 matmuls and convolutions; ``bf16`` runs the forward/backward under bfloat16
autocast (CPU and CUDA). Faster modes are opt-in and their error is measured by the benchmark.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS: tuple[str, ...] = ("fp32", "fp32-fwd", "tf32", "bf16")


def _set_tf32(allow: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow


def _tf32_from_here(grad: torch.Tensor) -> None:
    _set_tf32(True)  # the backward pass starts at the output: TF32 from here on


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
        _set_tf32(False)
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


@contextlib.contextmanager
def precision_mode(mode: str, device: torch.device | str) -> Iterator[None]:
    """Run the enclosed attribution code in precision ``mode``, restoring global flags after."""
    if mode not in PRECISIONS:
        raise ValueError(f"Expected precision in {', '.join(PRECISIONS)}, got {mode!r}.")
    dev = torch.device(device)
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    allow = mode == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    torch.set_float32_matmul_precision("high" if allow else "highest")
    try:
        if mode == "bf16":
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16):
                yield
        else:
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved[0]
        torch.backends.cudnn.allow_tf32 = saved[1]
        torch.set_float32_matmul_precision(saved[2])
