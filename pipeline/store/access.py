"""Making and opening a store, its explainer coordinate, and one unit's region of it.

:func:`create_store` makes the group with its image axis; :func:`open_store` opens it for the
run (refusing a store of another schema version), :func:`open_dataset` as one lazy
``xarray.Dataset`` for analysis. :func:`region` and :func:`regions_checksum` read what one
unit wrote, for the checksums its record keeps.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from pipeline.errors import StoreError
from pipeline.store.arrays import array, dims
from pipeline.store.encoding import CF_KEYS, SCALE_SUFFIX, decode_maps
from pipeline.store.schema import EXPLAINER, SCHEMA, SCHEMA_VERSION, Schema


def create_store(path: Path, ids: Sequence[str], labels: Sequence[int], shard_size: int,
                 attrs: Mapping[str, Any], schema: Schema = SCHEMA) -> zarr.Group:
    """Create (or overwrite) the store with its image axis: ``image`` and ``label``.

    The stages create the arrays they write from the schema before they run
    (``Stage.prepare``); the explainer axis follows the configured methods.

    Parameters
    ----------
    ids
        Dataset-relative image ids, in run order.
    labels
        Ground-truth class per image, -1 unknown.
    shard_size
        Images per shard = chunk length on the image axis.
    """
    n = len(ids)
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    sizes = {"image": n}
    image = schema.create(group, "image", sizes, shard_size)
    image[:] = np.asarray(list(ids), dtype=object)
    label = schema.create(group, "label", sizes, shard_size)
    label[:] = np.asarray(labels, dtype=np.int16)
    # The shard size is an attribute: the image axis' own chunks hold many shards (pooled).
    group.update_attributes({"schema_version": SCHEMA_VERSION, "shard_size": int(shard_size),
                             **attrs})  # one write
    return group


def schema_problem(group: zarr.Group) -> str | None:
    """Why this store cannot be read by this version, or None when it can."""
    version = group.attrs.get("schema_version")
    if version == SCHEMA_VERSION:
        return None
    old = (" (its attribution axis is called `method`, now `explainer`)" if "method" in group
           else " (it lacks the `gap` and `mask` arrays)" if version == 2
           else " (it lacks the `steps` and `residual` arrays)" if version == 3
           else " (its `logits` axis is `class`, now `class_name` with the class names)"
           if version == 4 else "")
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


def shard_size(group: Any) -> int:
    """Images per shard of the store (``group``: a ``zarr.Group`` or a
    :class:`~pipeline.store.view.StoreView`): its ``shard_size`` attribute, or, in a store
    made before pooled chunks, the chunk length of ``image``."""
    if "shard_size" in group.attrs:
        return int(str(group.attrs["shard_size"]))
    image = array(group, "image") if isinstance(group, zarr.Group) else group.array("image")
    return int(image.chunks[0])


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


def region(group: zarr.Group, name: str, rows: slice, slot: int | None) -> np.ndarray:
    """The part of array ``name`` that one unit writes: images ``rows`` (of explainer
    ``slot`` for a per-method unit, of every explainer for a per-shard one)."""
    arr = array(group, name)
    if dims(arr)[:1] == (EXPLAINER,):
        return np.asarray(arr[slot, rows] if slot is not None else arr[:, rows])
    return np.asarray(arr[rows])


def checksum(values: np.ndarray, crc: int = 0) -> int:
    """CRC32 of an array's content (strings joined), continuing from ``crc``."""
    arr = np.asarray(values)
    if arr.dtype.kind in "OUT":
        return zlib.crc32("\x00".join(str(v) for v in arr.ravel()).encode(), crc)
    return zlib.crc32(np.ascontiguousarray(arr).view(np.uint8).ravel().data, crc)


def regions_checksum(group: zarr.Group, names: Sequence[str], rows: slice,
                     slot: int | None) -> str:
    """CRC32 (hex) of ``names``' regions, in that order (see :func:`region`)."""
    crc = 0
    for name in names:
        crc = checksum(region(group, name, rows, slot), crc)
    return f"{crc:08x}"


def open_dataset(path: Path | str, drop_variables: Iterable[str] = ()) -> Any:
    """The store as an ``xarray.Dataset`` for analysis, every array holding what its name
    says; also ``xarray.open_dataset(path, engine="xai")``.

    ``xarray.open_zarr(path, consolidated=False)`` after checking the schema version, with
    the maps decoded to float32 (lazily, dask-backed) whatever ``[store] attributions`` and
    ``[store] normalized`` keep: ``raw``, ``aggregated`` and ``normalized``, with the same
    dims, coordinates and values within the store's recorded ``attributions_error`` and
    ``normalized_error``. A new 16-bit store names its encoded arrays for their encoding
    (``raw_float16``; plain xarray has no ``raw`` there), a store made before keeps ``raw``:
    both read as ``raw`` here. The per-image arrays (``label``, ``status``, ``pred``,
    ``prob``, ``random_<metric>``) are loaded (a few bytes an image), so that they work as
    ``groupby`` keys and masks as they are. String arrays (``image``, ``status``,
    ``explainer``) come back as numpy's ``StringDType``: use ``.values.tolist()`` for Python
    strings.

    Parameters
    ----------
    drop_variables
        Arrays to leave out, by the names this function gives them (``raw``).
    """
    import xarray as xr

    group = open_store(path, mode="r")
    # Undecoded: the maps are decoded here, one way for every encoding and store age.
    ds = xr.open_zarr(str(path), consolidated=False, mask_and_scale=False)
    for name in [str(v) for v in ds.data_vars]:
        fam = SCHEMA.family_of(name)
        if fam is None or not fam.encoded:
            continue
        var = ds[name]
        choice = str(array(group, name).attrs.get("encoding", "float32"))
        if choice == "float32":
            decoded = var
        elif choice == "float16":
            decoded = var.astype(np.float32) * ds[fam.name + SCALE_SUFFIX]
        else:
            data = var.data.map_blocks(decode_maps, choice, None, dtype=np.float32)
            decoded = var.copy(data=data)
        attrs = {k: v for k, v in var.attrs.items() if k not in CF_KEYS}
        ds = ds.drop_vars(name)
        ds[fam.name] = decoded.transpose(*var.dims).assign_attrs(attrs)
    ds = ds.drop_vars([n for n in ds.data_vars if str(n).endswith(SCALE_SUFFIX)]
                      + [n for n in drop_variables if n in ds.variables])
    for name in [str(v) for v in ds.data_vars]:
        if ds[name].dims == ("image",):
            ds[name] = ds[name].load()
    return ds
