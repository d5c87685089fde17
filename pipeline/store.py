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

#: 3: ``gap`` (per explainer) and ``mask`` (per image) were added. 4: ``steps`` and
#: ``residual`` (per explainer: adaptive Integrated Gradients).
SCHEMA_VERSION = 4
N_CLASSES = 1000
#: The coordinate of the attribution-method axis. Not ``method``: that name collides with
#: xarray's ``sel(method=...)`` argument, so ``ds.delta.sel(method="x")`` silently returned
#: every method in schema 1.
EXPLAINER = "explainer"
#: Arrays with an explainer axis, their trailing dims (after explainer, image) and fill.
EXPLAINER_ARRAYS: dict[str, tuple[tuple[str, ...], Any]] = {
    "raw": (("channel", "y", "x"), np.nan),
    "delta": ((), np.nan),
    "gap": ((), np.nan),
    "aggregated": (("y", "x"), np.nan),
    "normalized": (("y", "x"), np.nan),
    "steps": ((), np.nan),
    "residual": ((), np.nan),
}


def _array(group: zarr.Group, name: str, shape: tuple[int, ...], chunks: tuple[int, ...],
           dtype: Any, dims: tuple[str, ...], fill: Any) -> zarr.Array:
    return group.create_array(
        name, shape=shape, chunks=tuple(max(1, c) for c in chunks), dtype=dtype,
        fill_value=fill, dimension_names=dims, overwrite=True,
    )


def create_store(path: Path, ids: Sequence[str], labels: Sequence[int], shard_size: int,
                 crop: int, attrs: Mapping[str, Any], n_classes: int = N_CLASSES
                 ) -> zarr.Group:
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
    n_classes
        Width of ``logits``: the model's classes (1000 for ImageNet).
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
    _array(group, "mask", (n, crop, crop), (s, crop, crop), "bool", ("image", "y", "x"), False)
    _array(group, "logits", (n, n_classes), (s, n_classes), "float32", ("image", "class"),
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


def _trailing_shape(dims: tuple[str, ...], crop: int) -> tuple[int, ...]:
    return tuple(3 if d == "channel" else crop for d in dims)


def explainers(group: zarr.Group) -> list[str]:
    """The store's explainer coordinate as plain Python strings (empty before any method)."""
    if EXPLAINER not in group:
        return []
    return [str(v) for v in array(group, EXPLAINER)[:].tolist()]  # type: ignore[union-attr]


def explainer_index(group: zarr.Group, name: str) -> int:
    """The slot of explainer ``name`` on the explainer axis; a :class:`StoreError` if absent."""
    names = explainers(group)
    if name not in names:
        raise StoreError(
            f"Expected explainer {name!r} in the store at {group.store}, got {names}. "
            "Run `xai run` again: it adds the configured methods to the store."
        )
    return names.index(name)


def resize_explainers(group: zarr.Group, names: Sequence[str], crop: int) -> None:
    """Make the explainer axis hold exactly ``names``, keeping the data of existing slots.

    Arrays are created if missing and resized along the explainer axis; the coordinate is
    written last, so a crash part-way leaves the old coordinate (the next call redoes it).
    New slots read as missing (NaN). Moving slots is the caller's job (:func:`copy_slot`).
    """
    image = array(group, "image")
    n, s = image.shape[0], image.chunks[0]
    m = len(names)
    for name, (trailing, fill) in EXPLAINER_ARRAYS.items():
        shape = (m, n, *_trailing_shape(trailing, crop))
        if name in group:
            arr = array(group, name)
            if arr.shape != shape:
                arr.resize(shape)
        else:
            _array(group, name, shape, (1, s, *shape[2:]), "float32",
                   (EXPLAINER, "image", *trailing), fill)
    if explainers(group) != list(names):
        coord = _array(group, EXPLAINER, (m,), (max(m, 1),), str, (EXPLAINER,), "")
        if m:
            coord[:] = np.asarray(list(names), dtype=object)


def copy_slot(group: zarr.Group, src: int, dst: int, shard_size: int) -> None:
    """Copy every explainer array's slot ``src`` to slot ``dst``, one shard at a time."""
    for name in EXPLAINER_ARRAYS:
        arr = array(group, name)
        for start in range(0, arr.shape[1], shard_size):
            region = slice(start, start + shard_size)
            arr[dst, region] = arr[src, region]


def schema_problem(group: zarr.Group) -> str | None:
    """Why this store cannot be read by this version, or None when it can."""
    version = group.attrs.get("schema_version")
    if version == SCHEMA_VERSION:
        return None
    old = (" (its attribution axis is called `method`, now `explainer`)" if "method" in group
           else " (it lacks the `gap` and `mask` arrays)" if version == 2
           else " (it lacks the `steps` and `residual` arrays)" if version == 3 else "")
    return (f"Expected a store of schema version {SCHEMA_VERSION}, got version {version}"
            f"{old}. It was written by an older xai-pipeline and would be misread. Remove it "
            "with `xai clean` (same --dataset/--config/--out) and run again.")


def open_store(path: Path | str, mode: str = "r+", check_schema: bool = True) -> zarr.Group:
    """Open an existing store; a clear error when there is none or it has an old schema."""
    p = Path(path)
    if not (p / "zarr.json").is_file():
        raise StoreError(
            f"Expected a Zarr store at {p}, but there is none. Run `xai run` (or `make run`) "
            "first."
        )
    try:
        group = zarr.open_group(str(p), mode=mode, zarr_format=3)  # type: ignore[arg-type]
    except Exception as exc:
        raise StoreError(f"Cannot open the Zarr store at {p}: {exc}") from exc
    if check_schema and (problem := schema_problem(group)):
        raise StoreError(f"{p}: {problem}")
    return group


def open_dataset(path: Path | str) -> Any:
    """The store as an ``xarray.Dataset`` (lazy, dask-backed) for analysis.

    Equivalent to ``xarray.open_zarr(path, consolidated=False)``, after checking the schema
    version. String arrays (``image``, ``status``, ``explainer``) come back as numpy's
    ``StringDType``: use ``.values.tolist()`` for Python strings.
    """
    import xarray as xr

    open_store(path, mode="r")
    return xr.open_zarr(str(path), consolidated=False)
