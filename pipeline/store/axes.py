"""The store's run-dependent axes: the explainer axis follows the configured methods, the
class axis the model's classes.

A method added to a run gets a new slot of every array split by explainer; a removed one's
slot goes, the others' data staying where it is or moving with :func:`copy_slot`. The
coordinate is written last, so a crash part-way leaves the old one and the next run redoes
the change.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import zarr

from pipeline.store.access import explainers
from pipeline.store.arrays import array
from pipeline.store.schema import CLASS_NAME, EXPLAINER, SCHEMA, Schema


def split_arrays(group: zarr.Group, schema: Schema = SCHEMA) -> list[str]:
    """The store's arrays split by explainer (their slots move with the methods)."""
    return [name for name in schema.arrays(group)
            if (fam := schema.family_of(name)) is not None and fam.split_explainer]


def resize_explainers(group: zarr.Group, names: Sequence[str], schema: Schema = SCHEMA
                      ) -> None:
    """Make the explainer axis hold exactly ``names``, keeping the data of existing slots.

    The arrays split by explainer are resized along it (new slots read as their fill); the
    coordinate is written last, so a crash part-way leaves the old coordinate (the next call
    redoes it). Arrays written per shard across every explainer (the report's strategies)
    are remade by their stage, whose hash changes with the methods. Moving slots is the
    caller's job (:func:`copy_slot`).
    """
    m = len(names)
    for name in split_arrays(group, schema):
        arr = array(group, name)
        before = arr.shape[0]
        if m < before and (arr.shards or arr.chunks)[0] > 1:
            # A file of several slots (a sharded array) keeps a removed slot's chunks beyond
            # a shrunk axis: clear them first, so a later method never reads them as its own.
            arr[m:before] = arr.fill_value
        if before != m:
            arr.resize((m, *arr.shape[1:]))
        if m > before and arr.chunks[0] > 1:
            # A chunk of several slots keeps what a removed slot held beyond a shrunk axis:
            # the new slots read as the fill, not as an old method's values.
            arr[before:m] = arr.fill_value
    if explainers(group) != list(names):
        coord = schema.create(group, EXPLAINER, {EXPLAINER: m}, 1)
        if m:
            coord[:] = np.asarray(list(names), dtype=object)


def write_classes(group: zarr.Group, names: Sequence[str], schema: Schema = SCHEMA) -> None:
    """The ``class_name`` coordinate: the model's class names (rewritten when they change;
    ``logits`` is remade by its stage when the count does)."""
    names = list(names)
    if CLASS_NAME in group and \
            [str(v) for v in np.asarray(array(group, CLASS_NAME)[:]).tolist()] == names:
        return
    coord = schema.create(group, CLASS_NAME, {CLASS_NAME: len(names)}, 1)
    if names:
        coord[:] = np.asarray(names, dtype=object)


def copy_slot(group: zarr.Group, src: int, dst: int, shard_size: int,
              schema: Schema = SCHEMA) -> None:
    """Copy every explainer-split array's slot ``src`` to slot ``dst``, a shard at a time."""
    for name in split_arrays(group, schema):
        arr = array(group, name)
        for start in range(0, arr.shape[1], shard_size):
            rows = slice(start, start + shard_size)
            arr[dst, rows] = arr[src, rows]
