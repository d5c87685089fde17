"""Finding a store's arrays: by name, listed, and their dimension names.

The lowest layer of the store package: plain Zarr lookups with the store's error messages,
knowing nothing of the schema.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import zarr

from pipeline.errors import StoreError
from pipeline.store.encoding import ENCODED_NAME_SUFFIX


def array(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of the store; a :class:`StoreError` if it is missing or a group."""
    try:
        node = group[resolve(group, name)]
    except KeyError:
        raise StoreError(
            f"Expected array {name!r} in the store at {group.store}, but it is missing. "
            "Run `xai run` again to recreate it."
        ) from None
    if not isinstance(node, zarr.Array):
        raise StoreError(f"Expected {name!r} to be an array in the store, got a group.")
    return node


def resolve(names: zarr.Group | set[str], name: str) -> str:
    """The one of ``name`` and its encoded names (``raw_float16``, ``raw_bfloat16``) that
    ``names`` (a group or a set of array names) holds; ``name`` when none is."""
    if name in names:
        return name
    for suffix in ENCODED_NAME_SUFFIX.values():
        if name + suffix in names:
            return name + suffix
    return name


def array_names(group: zarr.Group) -> set[str]:
    """The names of the group's arrays.

    On a local store, from the folder listing: ``group.array_keys()`` opens every array to
    find out (about a millisecond each through Zarr's I/O thread), and tasks ask often.
    """
    root = getattr(group.store, "root", None)
    if root is not None:
        folder = Path(root) / group.path
        found = set()
        with contextlib.suppress(FileNotFoundError):
            for child in folder.iterdir():
                meta = child / "zarr.json"
                if meta.is_file() and _node_type(meta) == "array":
                    found.add(child.name)
        return found
    return set(group.array_keys())


def _node_type(meta: Path) -> str | None:
    try:
        return json.loads(meta.read_text()).get("node_type")
    except (OSError, ValueError):
        return None


def dims(arr: zarr.Array) -> tuple[str, ...]:
    """An array's dimension names."""
    return tuple(str(d) for d in (arr.metadata.dimension_names or ()))  # type: ignore[union-attr]
