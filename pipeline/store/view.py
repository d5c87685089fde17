"""One task's handle on the store: :class:`StoreView`, with the chunk-locked write.

Every Zarr call is a round trip to its I/O thread (about a millisecond); a handle opens the
store once and keeps each array's metadata, so a shard task's reads and writes cost only their
data.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from pipeline.errors import StoreError
from pipeline.store.access import checksum, explainers, open_store
from pipeline.store.arrays import array, array_names, dims, resolve
from pipeline.store.encoding import decode_maps, encode_maps, rel_l2
from pipeline.store.locks import chunk_lock
from pipeline.store.schema import EXPLAINER


class StoreView:
    """One task's handle on the store: opened once, each array's metadata and the explainer
    coordinate read once, the list of arrays listed once.

    Every Zarr call is a round trip to its I/O thread (about a millisecond); a shard task that
    reopened the store and its arrays for each read and write spent more time in those trips
    than in computing on a small shard. Data is always read from the store itself: nothing
    but metadata is kept.
    """

    def __init__(self, path: Path | str, mode: str = "r+", cache_pooled: int = 0) -> None:
        self.path = Path(path)
        self.group = open_store(path, mode=mode)
        self._arrays: dict[str, zarr.Array] = {}
        self._names: list[str] | None = None
        self._keys: set[str] | None = None
        #: ``cache_pooled`` > 0 (a reader of many units, ``xai verify``): the last that many
        #: chunks of pooled arrays read by :meth:`region` are kept decoded, so that the units
        #: of one chunk's 256 shards decode it once, not once each.
        self._cache_size = cache_pooled
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()

    @property
    def attrs(self) -> Any:
        """The store's root attributes (as ``zarr.Group.attrs``)."""
        return self.group.attrs

    def array(self, name: str) -> zarr.Array:
        if name not in self._arrays:
            self._arrays[name] = array(self.group, name)
        return self._arrays[name]

    @property
    def keys(self) -> set[str]:
        """The names of the store's arrays."""
        if self._keys is None:
            self._keys = array_names(self.group)
        return self._keys

    def __contains__(self, name: object) -> bool:
        """Whether the store has array ``name`` (``raw`` also under its 16-bit name,
        ``raw_float16``)."""
        return isinstance(name, str) and resolve(self.keys, name) in self.keys

    @property
    def explainers(self) -> list[str]:
        if self._names is None:
            self._names = explainers(self.group) if EXPLAINER in self.keys else []
        return self._names

    def slot(self, name: str) -> int:
        """The slot of explainer ``name``; a :class:`StoreError` if absent."""
        if name not in self.explainers:
            raise StoreError(
                f"Expected explainer {name!r} in the store at {self.path}, got "
                f"{self.explainers}. Run `xai run` again: it adds the configured methods to "
                "the store.")
        return self.explainers.index(name)

    def rows(self, rows: slice, *names: str) -> dict[str, np.ndarray]:
        """Images ``rows`` of the arrays ``names`` (``status`` as Python strings)."""
        out = {name: np.asarray(self.array(name)[rows]) for name in names}
        if "status" in out:
            out["status"] = np.asarray(out["status"], dtype=object)
        return out

    def region(self, name: str, rows: slice, slot: int | None) -> np.ndarray:
        """See :func:`pipeline.store.access.region`."""
        arr = self.array(name)
        split = dims(arr)[:1] == (EXPLAINER,)
        block = self._pooled_block(name, arr, rows, split)
        if block is not None:
            arr, rows = block  # type: ignore[assignment]
        if split:
            return np.asarray(arr[slot, rows] if slot is not None else arr[:, rows])
        return np.asarray(arr[rows])

    def _pooled_block(self, name: str, arr: zarr.Array, rows: slice, split: bool
                      ) -> tuple[np.ndarray, slice] | None:
        """The cached chunk row (every explainer) that holds ``rows`` of a pooled array, and
        ``rows`` within it; None when not caching, or ``rows`` is a chunk or more."""
        axis = 1 if split else 0
        chunk = arr.chunks[axis]
        start, stop, _ = rows.indices(arr.shape[axis])
        first = start // chunk
        if not self._cache_size or stop - start >= chunk or stop > (first + 1) * chunk:
            return None
        key = (name, first)
        if key in self._cache:
            self._cache.move_to_end(key)
        else:
            whole = slice(first * chunk, min((first + 1) * chunk, arr.shape[axis]))
            self._cache[key] = np.asarray(arr[:, whole] if split else arr[whole])
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return self._cache[key], slice(start - first * chunk, stop - first * chunk)

    def read_maps(self, name: str, slot: int, rows: slice) -> np.ndarray:
        """Explainer ``slot``'s maps of images ``rows`` in attribution array ``name``, as
        float32 whatever the store's ``[store] attributions`` (see
        :func:`pipeline.store.encoding.decode_maps`)."""
        arr = self.array(name)
        stored = np.asarray(arr[slot, rows])
        choice = str(arr.attrs.get("encoding", "float32"))
        if choice == "float32":
            return stored
        scale = (np.asarray(self.array(str(arr.attrs["scale"]))[slot, rows])
                 if choice == "float16" else None)
        return decode_maps(stored, choice, scale)

    def write(self, name: str, rows: slice, values: Any, slot: int | None = None) -> None:
        """Write images ``rows`` of array ``name`` (of explainer ``slot``, if given): the
        region one unit owns. Where the region is part of a chunk (a pooled array, whose
        chunks other tasks write too), the write holds those chunks' locks
        (:func:`pipeline.store.locks.chunk_lock`): Zarr rewrites a chunk whole."""
        arr = self.array(name)
        key: tuple[Any, ...] = (rows,) if slot is None else (slot, rows)
        touched = _partial_chunks(arr, key)
        if not touched:
            arr[key] = values
            return
        with chunk_lock(self.path, name, touched):
            arr[key] = values

    def write_maps(self, name: str, slot: int, rows: slice, values: np.ndarray
                   ) -> float | None:
        """Write float32 ``values`` ``(rows, ...)`` to explainer ``slot`` of array ``name``
        as the store keeps them (the scale first: a crash between the two leaves a unit
        without its record, redone on the next run). Returns the relative L2 error of the
        16-bit encoding against ``values``, None for a float32 array."""
        arr = self.array(name)
        choice = str(arr.attrs.get("encoding", "float32"))
        stored, scale = encode_maps(values, choice)
        if scale is not None:
            self.write(str(arr.attrs["scale"]), rows, scale, slot)
        self.write(name, rows, stored, slot)
        return None if choice == "float32" else rel_l2(decode_maps(stored, choice, scale),
                                                       values)

    def checksum(self, names: Sequence[str], rows: slice, slot: int | None) -> str:
        """See :func:`pipeline.store.access.regions_checksum`."""
        crc = 0
        for name in names:
            crc = checksum(self.region(name, rows, slot), crc)
        return f"{crc:08x}"


def _partial_chunks(arr: zarr.Array, key: tuple[Any, ...]) -> list[tuple[int, ...]]:
    """The grid indices of the files (chunks, or shards of a sharded array) that ``arr[key]``
    (an int and/or slices, leading axes) writes only part of; empty when it writes whole
    files (no other writer can share them)."""
    spans = []
    partial = False
    unit = arr.shards or arr.chunks
    for k, (size, chunk) in enumerate(zip(arr.shape, unit, strict=True)):
        sel = key[k] if k < len(key) else slice(None)
        if isinstance(sel, slice):
            start, stop, _ = sel.indices(size)
        else:
            start, stop = int(sel), int(sel) + 1
        if stop <= start:
            return []
        first, last = start // chunk, (stop - 1) // chunk
        if start % chunk or (stop % chunk and stop != size):
            partial = True
        spans.append(range(first, last + 1))
    if not partial:
        return []
    return [tuple(c) for c in itertools.product(*spans)]
