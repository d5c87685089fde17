"""Numerical precision modes for attribution.

``fp32`` is strict float32: TF32 is switched off, because on NVIDIA GPUs PyTorch's default
TF32 convolutions moved Integrated Gradients about 5% (relative L2) from a float64 reference.
``tf32`` allows TF32 matmuls and convolutions; ``bf16`` runs the forward/backward under bfloat16
autocast (CPU and CUDA). Faster modes are opt-in and their error is measured by the benchmark.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16")


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
