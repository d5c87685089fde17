"""Reading a run's rows by image index (two runs may hold the same images in other orders)."""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from pipeline.store.encoding import decode_maps
from pipeline.store.view import StoreView


def read_rows(arr: zarr.Array, rows: np.ndarray, slot: int | None = None) -> np.ndarray:
    """Rows ``rows`` of an array along its image axis (after the explainer axis when
    ``slot`` is given): one slice where the rows are contiguous."""
    if len(rows) and np.all(np.diff(rows) == 1):
        sel: Any = slice(int(rows[0]), int(rows[-1]) + 1)
        return np.asarray(arr[sel] if slot is None else arr[slot, sel])
    if slot is None:
        return np.asarray(arr.get_orthogonal_selection(rows))
    return np.asarray(arr.get_orthogonal_selection((slot, rows)))


def read_maps(view: StoreView, slot: int, rows: np.ndarray) -> np.ndarray:
    """Explainer ``slot``'s normalized maps of ``rows`` as float32 ``(n, H, W)``, whatever
    ``[store] normalized`` keeps."""
    arr = view.array("normalized")
    stored = read_rows(arr, rows, slot)
    choice = str(arr.attrs.get("encoding", "float32"))
    if choice == "float32":
        return stored.astype(np.float32, copy=False)
    scale = (read_rows(view.array(str(arr.attrs["scale"])), rows, slot)
             if choice == "float16" else None)
    return decode_maps(stored, choice, scale)
