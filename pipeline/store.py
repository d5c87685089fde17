"""The Zarr v3 store schema (a contract), its creation, and opening it for analysis.

Every array carries ``dimension_names`` so ``xarray.open_zarr(path, consolidated=False)``
yields one Dataset with named dimensions. The image axis is chunked by shard: one chunk per
shard on every array, so a shard task writes whole chunks and no two tasks share one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from pipeline.errors import StoreError

SCHEMA_VERSION = 1
N_CLASSES = 1000
#: Arrays that have a method axis; recreated when the set of methods changes.
METHOD_ARRAYS: tuple[str, ...] = ("method", "raw", "delta", "aggregated", "normalized")


def _array(group: zarr.Group, name: str, shape: tuple[int, ...], chunks: tuple[int, ...],
           dtype: Any, dims: tuple[str, ...], fill: Any) -> zarr.Array:
    return group.create_array(
        name, shape=shape, chunks=tuple(max(1, c) for c in chunks), dtype=dtype,
        fill_value=fill, dimension_names=dims, overwrite=True,
    )


def create_store(path: Path, ids: Sequence[str], labels: Sequence[int], shard_size: int,
                 crop: int, attrs: Mapping[str, Any]) -> zarr.Group:
    """Create (or overwrite) the store with every per-image array, filled with "missing".

    Parameters
    ----------
    ids
        Dataset-relative image ids, in run order.
    labels
        Ground-truth class per image, -1 unknown.
    shard_size
        Images per shard = chunk length on the image axis.
    crop
        Side of the square crop (224 for the real model).
    """
    n = len(ids)
    s = min(shard_size, max(n, 1))
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    image = _array(group, "image", (n,), (s,), str, ("image",), "")
    image[:] = np.asarray(list(ids), dtype=object)
    label = _array(group, "label", (n,), (s,), "int16", ("image",), -1)
    label[:] = np.asarray(labels, dtype=np.int16)
    _array(group, "status", (n,), (s,), str, ("image",), "")
    _array(group, "pixels", (n, crop, crop, 3), (s, crop, crop, 3), "uint8",
           ("image", "y", "x", "rgb"), 0)
    _array(group, "logits", (n, N_CLASSES), (s, N_CLASSES), "float32", ("image", "class"),
           np.nan)
    _array(group, "pred", (n,), (s,), "int16", ("image",), -1)
    _array(group, "prob", (n,), (s,), "float32", ("image",), np.nan)
    group.attrs.update({"schema_version": SCHEMA_VERSION, **attrs})
    return group


def array(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of the store; a :class:`StoreError` if it is missing or a group."""
    try:
        node = group[name]
    except KeyError:
        raise StoreError(
            f"Expected array {name!r} in the store at {group.store}, but it is missing. "
            "Run `xai run` again to recreate it."
        ) from None
    if not isinstance(node, zarr.Array):
        raise StoreError(f"Expected {name!r} to be an array in the store, got a group.")
    return node


def ensure_method_arrays(group: zarr.Group, methods: Sequence[str], shard_size: int,
                         crop: int) -> bool:
    """Make sure the method-axis arrays exist for exactly ``methods``, in order.

    Returns True when they were (re)created (their content is then all missing).
    """
    if "method" in group and list(array(group, "method")[:]) == list(methods):  # type: ignore[arg-type]
        return False
    image = array(group, "image")
    n = image.shape[0]
    m = len(methods)
    s = image.chunks[0]
    method = _array(group, "method", (m,), (m,), str, ("method",), "")
    method[:] = np.asarray(list(methods), dtype=object)
    _array(group, "raw", (m, n, 3, crop, crop), (1, s, 3, crop, crop), "float32",
           ("method", "image", "channel", "y", "x"), np.nan)
    _array(group, "delta", (m, n), (1, s), "float32", ("method", "image"), np.nan)
    for name in ("aggregated", "normalized"):
        _array(group, name, (m, n, crop, crop), (1, s, crop, crop), "float32",
               ("method", "image", "y", "x"), np.nan)
    return True


def open_store(path: Path | str, mode: str = "r+") -> zarr.Group:
    """Open an existing store; a clear error when there is none."""
    p = Path(path)
    if not (p / "zarr.json").is_file():
        raise StoreError(
            f"Expected a Zarr store at {p}, but there is none. Run `xai run` (or `make run`) "
            "first."
        )
    try:
        return zarr.open_group(str(p), mode=mode, zarr_format=3)  # type: ignore[arg-type]
    except Exception as exc:
        raise StoreError(f"Cannot open the Zarr store at {p}: {exc}") from exc


def open_dataset(path: Path | str) -> Any:
    """The store as an ``xarray.Dataset`` (lazy, dask-backed) for analysis.

    Equivalent to ``xarray.open_zarr(path, consolidated=False)``.
    """
    import xarray as xr

    open_store(path, mode="r")
    return xr.open_zarr(str(path), consolidated=False)
