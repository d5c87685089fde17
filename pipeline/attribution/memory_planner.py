"""Memory-planned batch sizes: how many samples go through one forward/backward.

A *sample* is one network input: one image at one path step or noise draw. The planner
measures the activation memory one sample needs (forward hooks on a one-sample probe) and
divides a memory budget by it: on CUDA the free device memory, on CPU a configurable budget.
Peak memory then depends on the budget, never on ``n_steps`` or ``nt_samples``.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator

import torch
from torch import nn

#: CPU budget for one forward/backward when none is configured (bytes).
DEFAULT_CPU_BUDGET: int = 1 << 30
#: Beyond this many samples per pass the CPU gains nothing; GPUs keep scaling further.
CPU_CAP: int = 64
#: Fewer samples per pass than this leave a CPU waiting on per-pass overhead: the 1 GiB budget
#: planned 2 for ResNet50 and ConvNeXt-T at 224 px, where IG then ran at 0.86-0.88x Captum's
#: speed; with 4 it ran at 1.12x (docs/performance.md). Planned whenever 4 samples fit in
#: :data:`CPU_FLOOR_SHARE` of the machine's memory.
CPU_FLOOR: int = 4
CPU_FLOOR_SHARE: float = 0.125
CUDA_CAP: int = 1024
#: Saved activations + their gradients + allocator slack, relative to forward outputs.
BACKWARD_FACTOR: float = 3.0
#: Share of free CUDA memory a pass may use (the rest: weights, workspaces, other streams).
CUDA_FRACTION: float = 0.6

_cache: weakref.WeakKeyDictionary[nn.Module, dict[tuple[object, ...], int]] = (
    weakref.WeakKeyDictionary()
)


def _leaves(model: nn.Module) -> Iterator[nn.Module]:
    for module in model.modules():
        if next(module.children(), None) is None:
            yield module


def bytes_per_sample(model: nn.Module, sample_shape: tuple[int, ...], device: torch.device,
                     dtype: torch.dtype = torch.float32) -> int:
    """Forward activation bytes for one sample of shape ``(3, H, W)``, measured with hooks."""
    total = 0

    def hook(_m: nn.Module, _i: object, out: object) -> None:
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * out.element_size()

    handles = [leaf.register_forward_hook(hook) for leaf in _leaves(model)]
    try:
        with torch.no_grad():
            model(torch.zeros((1, *sample_shape), device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    input_bytes = int(torch.Size(sample_shape).numel()) * torch.finfo(dtype).bits // 8
    return max(total, 1) + input_bytes


def cpu_budget() -> int:
    """The CPU budget: ``XAI_CPU_MEMORY_BUDGET`` (bytes, or with a ``G``/``M`` suffix) or 1 GiB."""
    raw = os.environ.get("XAI_CPU_MEMORY_BUDGET", "").strip().upper()
    if not raw:
        return DEFAULT_CPU_BUDGET
    scale = {"G": 1 << 30, "M": 1 << 20, "K": 1 << 10}.get(raw[-1], 1)
    number = raw[:-1] if raw[-1] in "GMK" else raw
    try:
        return max(int(float(number) * scale), 1 << 20)
    except ValueError as exc:
        raise ValueError(
            f"Expected XAI_CPU_MEMORY_BUDGET like '2G' or '512M', got {raw!r}."
        ) from exc


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine (None where it cannot be read)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def device_budget(device: torch.device, budget_bytes: int | None = None) -> int:
    """Bytes one forward/backward may use on ``device``."""
    if budget_bytes is not None:
        return budget_bytes
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FRACTION)
    return cpu_budget()


def plan_max_batch(
    model: nn.Module,
    sample_shape: tuple[int, ...],
    device: torch.device | str,
    *,
    budget_bytes: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> int:
    """Samples per forward/backward that fit the memory budget.

    Parameters
    ----------
    model
        The network (its activations are measured once per input shape and cached).
    sample_shape
        ``(3, H, W)``.
    device
        Where the passes run.
    budget_bytes
        Override the budget (CPU default: 1 GiB or ``XAI_CPU_MEMORY_BUDGET``; CUDA: 60% of
        free memory).

    Returns
    -------
    int
        At least 1, at most 64 on CPU and 1024 on CUDA. On CPU with the default budget, at
        least 4 when 4 samples fit in an eighth of the machine's memory.
    """
    dev = torch.device(device)
    key = (tuple(sample_shape), str(dev), dtype)
    per_model = _cache.setdefault(model, {})
    if key not in per_model:
        per_model[key] = bytes_per_sample(model, tuple(sample_shape), dev, dtype)
    per_sample = per_model[key] * BACKWARD_FACTOR
    cap = CUDA_CAP if dev.type == "cuda" else CPU_CAP
    planned = int(max(1, min(cap, device_budget(dev, budget_bytes) // per_sample)))
    if dev.type == "cpu" and budget_bytes is None and planned < CPU_FLOOR and \
            not os.environ.get("XAI_CPU_MEMORY_BUDGET"):
        total = physical_memory()
        if total is not None and CPU_FLOOR * per_sample <= total * CPU_FLOOR_SHARE:
            planned = CPU_FLOOR
    return planned


#: Pass sizes the CPU planner times (those the memory plan allows, at least the floor).
CPU_CANDIDATES: tuple[int, ...] = (4, 8, 16, 32)


def measure_pass_size(run_pass: Callable[[int], object], candidates: tuple[int, ...], *,
                      rounds: int = 2) -> tuple[int, dict[int, float]]:
    """The pass size that costs least per sample, timed.

    On a CPU the per-sample cost of a pass does not follow its memory: ConvNeXt-T ran IG at
    0.92x Captum's speed with 4 samples a pass and 1.09x with 8, ViT-B/16 0.6x and 1.07x with
    16, ResNet50 best with 4 (docs/performance.md), and some sizes hit slow kernels. So each
    candidate runs ``run_pass(size)`` (one pass of that many samples) in ``rounds``
    interleaved rounds after a warm-up; the best of each counts.

    Parameters
    ----------
    run_pass
        Runs one pass of ``size`` samples (e.g. the engine's IG with ``n_steps = size``).
    candidates
        Pass sizes to time, ascending.

    Returns
    -------
    tuple
        The fastest size per sample, and seconds per sample for each candidate.
    """
    import time

    run_pass(candidates[0])  # warm-up: first-call allocations and kernel choices
    best = {c: float("inf") for c in candidates}
    for _ in range(rounds):
        for size in candidates:
            t0 = time.perf_counter()
            run_pass(size)
            best[size] = min(best[size], (time.perf_counter() - t0) / size)
    return min(candidates, key=lambda c: best[c]), best


def cpu_candidates(model: nn.Module, sample_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The :data:`CPU_CANDIDATES` whose pass fits :data:`CPU_FLOOR_SHARE` of this machine's
    memory (at least the memory plan), or the memory plan alone when no more is known."""
    planned = plan_max_batch(model, sample_shape, "cpu")
    total = physical_memory()
    if total is None:
        return (planned,)
    per_sample = _cache[model][(tuple(sample_shape), "cpu", torch.float32)] * BACKWARD_FACTOR
    limit = max(planned, int(total * CPU_FLOOR_SHARE // per_sample))
    fits = tuple(c for c in CPU_CANDIDATES if c <= limit)
    return fits or (planned,)
