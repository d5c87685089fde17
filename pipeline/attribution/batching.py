"""Cutting a batch into passes: the one helper every method's chunking uses (torch-free)."""

from __future__ import annotations


def chunk_slices(n: int, size: int) -> list[slice]:
    """``n`` rows cut into slices of at most ``size`` (at least 1): one per pass."""
    size = max(1, size)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]
