"""Numerical precision modes for attribution.

``fp32`` is strict float32: TF32 is switched off, because on NVIDIA GPUs PyTorch's default
TF32 convolutions moved Integrated Gradients about 5% (relative L2) from a float64 reference.
``fp32-fwd`` runs the forward pass in strict float32 and the backward pass in TF32 (through
:class:`pipeline.attribution.accel.TF32Backward`): the forward decides the ReLU and max-pool
pattern, so that is where precision matters; measured on one H100, 1.3x faster at 1.4e-3
error. On a CPU, TF32 does not exist and ``fp32-fwd`` computes exactly what ``fp32`` does.
``tf32`` allows TF32 matmuls and convolutions; ``bf16`` runs the forward/backward under bfloat16
autocast (CPU and CUDA). Faster modes are opt-in and their error is measured by the benchmark.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads when a mode is entered, not when the names are read
    import torch

PRECISIONS: tuple[str, ...] = ("fp32", "fp32-fwd", "tf32", "bf16")


def set_tf32(allow: bool) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow


@contextlib.contextmanager
def precision_mode(mode: str, device: torch.device | str) -> Iterator[None]:
    """Run the enclosed attribution code in precision ``mode``, restoring global flags after."""
    import torch

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
