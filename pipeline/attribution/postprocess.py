"""Aggregate and normalize maps: the one normaliser, used by the aggregate and normalize stages
(one method and shard at a time) and by the original function API
(:func:`pipeline.explainers.normalize_attribution`).

Blocks keep the store's axis order: ``raw`` blocks are ``(method, image, channel, y, x)``,
``aggregated`` and ``normalized`` blocks ``(method, image, y, x)``. A map that is NaN (an
image that was not explained) stays NaN: never zeros that look like a result.

Torch-free: a torch tensor given to :func:`normalize_per_image` is normalized through numpy.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

#: A numpy array or a torch tensor (torch is imported only when one is given).
ArrayT = TypeVar("ArrayT")


def aggregate_block(raw: np.ndarray) -> np.ndarray:
    """Channel sum: ``(M, S, 3, Y, X)`` -> ``(M, S, Y, X)`` float32."""
    if raw.ndim != 5:
        raise ValueError(f"Expected a (method, image, channel, y, x) block, got {raw.shape}.")
    return raw.sum(axis=2, dtype=np.float64).astype(np.float32)


def normalize_rows(rows: np.ndarray) -> np.ndarray:
    """Per row: ``|A|``, minus its minimum, divided by the new maximum, in ``[0, 1]``.

    Parameters
    ----------
    rows
        ``(R, K)``: one flattened map per row.

    Returns
    -------
    np.ndarray
        ``(R, K)`` float64. A constant row gives zeros; NaN entries stay NaN (the minimum and
        maximum are taken over the others), so an all-NaN row stays all-NaN.
    """
    flat = np.abs(np.asarray(rows, dtype=np.float64))
    out = np.full_like(flat, np.nan)
    ok = ~np.isnan(flat).all(axis=1)
    if ok.any():
        kept = flat[ok]
        shifted = kept - np.nanmin(kept, axis=1, keepdims=True)
        peak = np.nanmax(shifted, axis=1, keepdims=True)
        safe = np.where(peak > 0, peak, 1.0)
        out[ok] = np.where(peak > 0, shifted / safe, 0.0)
    return out


def normalize_block(aggregated: np.ndarray) -> np.ndarray:
    """Each ``(Y, X)`` map normalized (:func:`normalize_rows`): ``(M, S, Y, X)`` -> same,
    float32."""
    if aggregated.ndim != 4:
        raise ValueError(f"Expected a (method, image, y, x) block, got {aggregated.shape}.")
    m, s, y, x = aggregated.shape
    return normalize_rows(aggregated.reshape(m * s, y * x)).reshape(m, s, y, x) \
        .astype(np.float32)


def normalize_per_image(attribution: ArrayT) -> ArrayT:
    """:func:`normalize_rows` on a numpy array or a torch tensor, one image at a time.

    A 2-D array ``(H, W)`` is one map; for 3-D and 4-D arrays (``(N, H, W)``,
    ``(N, C, H, W)``) each entry of the first axis is normalized on its own, over all its
    other axes.

    Returns
    -------
    The same shape and type (a tensor on its device), in the input's floating dtype
    (float64 for an integer input).
    """
    if isinstance(attribution, np.ndarray):
        return _normalize_array(attribution)  # type: ignore[return-value]
    import torch

    assert isinstance(attribution, torch.Tensor)
    t = attribution.detach().cpu()
    # numpy has no bfloat16: such maps go through float32 and come back.
    out = torch.from_numpy(_normalize_array((t.float() if t.dtype == torch.bfloat16 else t)
                                            .numpy()))
    dtype = attribution.dtype if attribution.is_floating_point() else torch.float64
    return out.to(device=attribution.device, dtype=dtype)  # type: ignore[return-value]


def _normalize_array(arr: np.ndarray) -> np.ndarray:
    if arr.ndim < 2:
        raise ValueError(
            f"Expected a map of shape (H, W) or a stack (N, ...), got {tuple(arr.shape)}."
        )
    rows = arr.reshape(arr.shape[0], -1) if arr.ndim > 2 else arr.reshape(1, -1)
    dtype: Any = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float64
    return normalize_rows(rows).reshape(arr.shape).astype(dtype, copy=False)
