"""The Zarr v3 store: its schema (a contract), its creation, and opening it for analysis.

Every array the store can hold is declared once, in :data:`SCHEMA`: its dimensions, dtype,
fill value, the stage that writes it and what it means. The stages create their arrays from
it, ``xai verify`` and the records' checksums read regions by its dimensions, the crash tests
compare what it lists, and the README's store table is generated from it.

Every array carries ``dimension_names`` so ``xarray.open_zarr(path, consolidated=False)``
yields one Dataset with named dimensions. The big arrays (crops, logits, maps) are chunked
by shard and explainer: a shard task writes whole chunks, one file each (with
``[store] layout = "shard"``, one file per shard holds every method's maps, and their
writers lock it, :attr:`ArrayFamily.packed`). The small ones
(per-image scalars and curves, :attr:`ArrayFamily.pooled`) keep many shards and every
explainer in one chunk, so the store's file count does not grow with the arrays times the
methods; their writers take the chunk's lock (:mod:`pipeline.store.locks`), as Zarr rewrites a
chunk whole.
"""

from __future__ import annotations

import contextlib
import json
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from pipeline.errors import StoreError
from pipeline.store.encoding import (
    SCALE_SUFFIX,
    STORE_DEFAULTS,
    STORE_LAYOUTS,
    STORED_DTYPES,
    STORED_FILL,
    decode_maps,
    encode_maps,
    rel_l2,
)
from pipeline.store.locks import chunk_lock

#: 3: ``gap`` (per explainer) and ``mask`` (per image) were added. 4: ``steps`` and
#: ``residual`` (per explainer: adaptive Integrated Gradients). 5: ``logits`` has a
#: ``class_name`` axis with the model's class names as its coordinate.
SCHEMA_VERSION = 5
#: The coordinate of the class axis: ``ds.logits.sel(class_name="tabby")``.
CLASS_NAME = "class_name"
#: The coordinate of the attribution-method axis. Not ``method``: that name collides with
#: xarray's ``sel(method=...)`` argument, so ``ds.delta.sel(method="x")`` silently returned
#: every method in schema 1.
EXPLAINER = "explainer"


def attribution_codecs() -> list[Any]:
    """The codec of the attribution arrays: blosc zstd with bit shuffle, 2-8% smaller than
    Zarr's default zstd on every dtype and as fast to decode (docs/benchmarks.md, "Storing
    attributions")."""
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")]


def attributions_dtype(group: Any) -> str:
    """The store's ``[store] attributions`` choice (float32 for stores made before it)."""
    return stored_choice(group, "attributions")


def stored_choice(group: Any, setting: str) -> str:
    """The store's ``[store] <setting>`` choice (``attributions``, ``normalized``,
    ``layout``), kept in its attributes when the store is made; for a store made before the
    setting, what it was then (:data:`pipeline.store.encoding.STORE_DEFAULTS`)."""
    attrs = group.attrs if not isinstance(group, StoreView) else group.group.attrs
    return str(attrs.get(setting, STORE_DEFAULTS.get(setting, "float32")))


@dataclass(frozen=True)
class ArrayFamily:
    """One store array, or a family of arrays named ``<name><entry>`` (one per metric, say).

    Attributes
    ----------
    name
        The array's name, or the family's prefix (``prefix=True``), e.g. ``"metric_"``.
    dims
        Dimension names; their sizes come from the run (``image``: the images, ``explainer``:
        the methods, ``y``/``x``: the crop, ...), see :meth:`Schema.create`.
    dtype
        A numpy dtype name, or ``"str"`` for variable-length strings.
    fill
        What an unwritten element reads as: NaN, -1, ``""``, 0 or False, never data that
        looks real.
    writer
        The stage that writes it; None for the arrays written when the store is made or its
        methods change (``image``, ``label``, ``explainer``).
    meaning
        One line for the README's store table.
    prefix
        True: ``name`` is a prefix and the stage decides the entries (``entry`` names them in
        the docs, e.g. ``"<metric>"``).
    split_explainer
        True: chunked one explainer at a time, because its writer runs per method (two tasks
        never write one chunk). False: the whole explainer axis in one chunk, written per
        shard.
    """

    name: str
    dims: tuple[str, ...]
    dtype: str
    fill: Any
    writer: str | None
    meaning: str
    prefix: bool = False
    entry: str = ""
    split_explainer: bool = False
    #: The ``[store]`` setting that chooses this array's stored dtype (``"attributions"``:
    #: :data:`pipeline.store.encoding.ATTRIBUTION_DTYPES`, ``"normalized"``:
    #: :data:`pipeline.store.encoding.NORMALIZED_DTYPES`), "" for an array always stored as its
    #: ``dtype``. Read such an array through :meth:`StoreView.read_maps` or
    #: :func:`open_dataset`, which give float32 whatever the choice.
    encoding: str = ""
    #: The attribution array this one is the float16 scale of (it exists only in float16
    #: stores), else "".
    scale_of: str = ""
    #: True: its chunks hold many shards and :data:`POOL_EXPLAINERS` explainer slots, so
    #: the store's file count does not grow with the methods. For arrays of a few values per
    #: image (``delta``, ``pred``, a metric's scores or curves; dimensions among
    #: :data:`POOLED_DIMS`). Writing one rewrites a chunk other tasks write too: its writers
    #: must go through :meth:`StoreView.write`, which locks the chunk. False (the default,
    #: and what a plugin's array gets unless it says so): one chunk per shard (and explainer),
    #: which a unit may write directly.
    pooled: bool = False
    #: True: in a ``[store] layout = "shard"`` store, one file per shard holds its
    #: :data:`POOL_EXPLAINERS` explainer slots (Zarr's sharding codec; the chunks stay one
    #: shard of one explainer, so a read of one method's maps reads only them). Writing one
    #: rewrites the file other methods' tasks write too: its writers must go through
    #: :meth:`StoreView.write`, which locks the file. For the big per-method arrays (the
    #: maps); False elsewhere.
    packed: bool = False

    @property
    def encoded(self) -> bool:
        """Whether a ``[store]`` setting chooses how this array is stored."""
        return bool(self.encoding)

    @property
    def shown(self) -> str:
        """The name as the docs show it: ``metric_<metric>`` for a family."""
        return f"{self.name}{self.entry}" if self.prefix else self.name

    def matches(self, array_name: str) -> bool:
        return array_name.startswith(self.name) if self.prefix else array_name == self.name


#: Fixed sizes of the dimensions that do not depend on the run.
FIXED_SIZES: dict[str, int] = {"channel": 3, "rgb": 3}

#: The dimensions of a pooled array (:attr:`ArrayFamily.pooled`): along them an image holds
#: a few values at most. An array with any other dimension (pixels, classes) is chunked by
#: shard and explainer.
POOLED_DIMS = frozenset({"image", EXPLAINER, "step", "layer_group"})
#: A pooled chunk holds this many explainer slots (the axis grows with the methods, and a
#: chunk may be larger than the array)...
POOL_EXPLAINERS = 8
#: ... and as many whole shards as fit in about this many bytes, up to :data:`POOL_SHARDS`:
#: each write rewrites its chunk, so a chunk stays small (docs/design.md, "ImageNet scale").
POOL_BYTES = 256 * 1024
POOL_SHARDS = 256
#: Bytes per value of a string array, for sizing its chunks.
STRING_BYTES = 32


class Schema:
    """Every array family of the store, in the order the docs list them.

    Parameters
    ----------
    families
        The families; names are unique, and no array name may match two families except a
        prefix inside a longer one (``random_`` and ``random_curve_``: the longest wins).
    """

    def __init__(self, families: Iterable[ArrayFamily]) -> None:
        self.families: dict[str, ArrayFamily] = {}
        for fam in families:
            if fam.name in self.families:
                raise ValueError(f"Expected each array family once in the schema, got "
                                 f"{fam.name!r} twice.")
            if fam.split_explainer and fam.dims[:1] != (EXPLAINER,):
                raise ValueError(f"Expected {fam.name!r}, split by explainer, to have "
                                 f"{EXPLAINER!r} as its first dimension, got {fam.dims}.")
            if fam.pooled and ("image" not in fam.dims or not set(fam.dims) <= POOLED_DIMS):
                raise ValueError(f"Expected {fam.name!r}, pooled, to have an image axis and "
                                 f"dimensions among {sorted(POOLED_DIMS)}, got {fam.dims}; "
                                 "pool only arrays of a few values per image.")
            if fam.packed and (fam.pooled or not fam.split_explainer):
                raise ValueError(f"Expected {fam.name!r}, packed, to be split by explainer "
                                 "and not pooled.")
            self.families[fam.name] = fam

    def __iter__(self) -> Any:
        return iter(self.families.values())

    def __contains__(self, name: object) -> bool:
        return name in self.families

    def __getitem__(self, name: str) -> ArrayFamily:
        return self.families[name]

    def extended(self, *families: ArrayFamily) -> Schema:
        """This schema plus ``families`` (a stage plugin from outside the project)."""
        return Schema([*self, *families])

    def family_of(self, array_name: str) -> ArrayFamily | None:
        """The family an array of the store belongs to (the longest matching prefix wins),
        or None for an array the schema does not know."""
        if array_name in self.families and not self.families[array_name].prefix:
            return self.families[array_name]
        found = [f for f in self if f.prefix and f.matches(array_name)]
        return max(found, key=lambda f: len(f.name)) if found else None

    def written_by(self, stage: str) -> tuple[ArrayFamily, ...]:
        """The families ``stage`` writes, in schema order."""
        return tuple(f for f in self if f.writer == stage)

    def instances(self, group: zarr.Group | StoreView, families: Iterable[ArrayFamily]
                  ) -> list[str]:
        """The arrays of the store that belong to ``families``: the fixed ones in schema
        order, then the members of prefix families, sorted (the order checksums read)."""
        wanted = list(families)
        keys = group.keys if isinstance(group, StoreView) else array_names(group)
        fixed = [f.name for f in wanted if not f.prefix and f.name in keys]
        prefixed = {f.name for f in wanted if f.prefix}
        members = sorted(k for k in keys
                         if (fam := self.family_of(k)) is not None and fam.name in prefixed)
        return fixed + members

    def arrays(self, group: zarr.Group) -> list[str]:
        """Every array of the store that the schema declares."""
        return self.instances(group, self)

    def shape(self, array_name: str, sizes: Mapping[str, int]) -> tuple[int, ...]:
        fam = self._family(array_name)
        return tuple(_size(d, sizes) for d in fam.dims)

    def create(self, group: zarr.Group, array_name: str, sizes: Mapping[str, int],
               shard: int) -> zarr.Array:
        """Make ``array_name`` with the shape ``sizes`` gives its dimensions, unless the store
        has it with that shape and chunking already (then it is left as it is, data and all).

        ``shard`` is the chunk length along ``image``; along ``explainer`` the chunk is one
        slot (``split_explainer``) or the whole axis. A pooled family's chunk holds
        :data:`POOL_EXPLAINERS` slots and many shards instead (:func:`chunk_shape`). An array
        chunked otherwise is made again, since its writer's tasks rely on the chunks, except
        a pooled one, whose writers lock the chunks they write whatever their shape (a store
        made before pooling keeps its chunks and its data).
        """
        fam = self._family(array_name)
        if fam.scale_of and attributions_dtype(group) != "float16":
            raise StoreError(f"Expected a float16 store for {array_name!r} (the scale of "
                             f"{fam.scale_of!r}), got a {attributions_dtype(group)} one.")
        choice = stored_choice(group, fam.encoding) if fam.encoded else "float32"
        dtype = ("str" if fam.dtype == "str" else STORED_DTYPES[choice] if fam.encoded
                 else fam.dtype)
        fill = STORED_FILL.get(choice, fam.fill) if fam.encoded else fam.fill
        shape = self.shape(array_name, sizes)
        chunking = chunk_shape(fam, shape, shard, np.dtype(object if dtype == "str" else dtype))
        sharding = shard_shape(fam, chunking, stored_choice(group, "layout"))
        if array_name in group:
            existing = array(group, array_name)
            if existing.shape == shape and (dtype == "str" or existing.dtype == np.dtype(dtype)) \
                    and (fam.pooled or (existing.chunks == chunking
                                        and existing.shards == sharding)):
                return existing
        attributes: dict[str, Any] = ({"encoding": choice,
                                       **({"scale": fam.name + SCALE_SUFFIX}
                                          if choice == "float16" else {})}
                                      if fam.encoded else {})
        return group.create_array(
            array_name, shape=shape, chunks=chunking,
            dtype=str if dtype == "str" else dtype, fill_value=fill,
            dimension_names=fam.dims, overwrite=True, attributes=attributes,
            compressors=attribution_codecs() if fam.encoded else "auto", shards=sharding)

    def wanted(self, group: zarr.Group, fam: ArrayFamily) -> bool:
        """Whether this store holds ``fam`` at all: the scale arrays exist only in float16
        stores."""
        return not fam.scale_of or attributions_dtype(group) == "float16"

    def markdown_rows(self) -> list[str]:
        """The README's store table: one row per family."""
        out = []
        for f in self:
            dims = "(" + ", ".join(f.dims) + ("," if len(f.dims) == 1 else "") + ")"
            dtype = "string" if f.dtype == "str" else f.dtype
            writer = f"`{f.writer}`" if f.writer else "the run (with the store)"
            out.append(f"| `{f.shown}` | {dims} | {dtype} | {writer} | {f.meaning} |")
        return out

    def _family(self, array_name: str) -> ArrayFamily:
        fam = self.family_of(array_name)
        if fam is None:
            raise StoreError(
                "Expected an array the schema declares (pipeline/store/zarr_store.py), got "
                f"{array_name!r}. Declare its family in the schema first.")
        return fam


def chunk_shape(fam: ArrayFamily, shape: tuple[int, ...], shard: int, dtype: np.dtype
                ) -> tuple[int, ...]:
    """The chunks of a new array of ``fam`` with ``shape`` in a store of ``shard`` images a
    shard: one shard along ``image`` (a pooled family: as many whole shards as fit in
    :data:`POOL_BYTES`, at most :data:`POOL_SHARDS`), one slot along ``explainer`` for a
    family split by explainer (pooled: :data:`POOL_EXPLAINERS`), the whole axis elsewhere."""
    chunks = []
    per_image = STRING_BYTES if dtype.kind == "O" else dtype.itemsize
    for dim, size in zip(fam.dims, shape, strict=True):
        if dim == EXPLAINER:
            per_image *= POOL_EXPLAINERS if fam.split_explainer else max(size, 1)
        elif dim != "image":
            per_image *= max(size, 1)
    shards = max(1, min(POOL_SHARDS, POOL_BYTES // max(1, shard * per_image)))
    for dim, size in zip(fam.dims, shape, strict=True):
        if dim == "image":
            rows = shard * shards if fam.pooled else shard
            chunks.append(min(rows, max(size, 1)) if not fam.pooled else rows)
        elif dim == EXPLAINER and fam.split_explainer:
            chunks.append(POOL_EXPLAINERS if fam.pooled else 1)
        else:
            chunks.append(size)
    return tuple(max(1, c) for c in chunks)


def shard_shape(fam: ArrayFamily, chunks: tuple[int, ...], layout: str
                ) -> tuple[int, ...] | None:
    """The shape of one file of a new array of ``fam`` chunked ``chunks``: with
    ``layout = "shard"``, a packed family's file holds :data:`POOL_EXPLAINERS` explainer
    slots of one shard (Zarr's sharding codec); None (a file per chunk) otherwise."""
    if layout not in STORE_LAYOUTS:
        raise StoreError(f"Expected a store layout in {STORE_LAYOUTS}, got {layout!r}. "
                         "Make the store again with `xai run --replace`.")
    if layout != "shard" or not fam.packed:
        return None
    return (POOL_EXPLAINERS, *chunks[1:])


def _size(dim: str, sizes: Mapping[str, int]) -> int:
    if dim in sizes:
        return int(sizes[dim])
    if dim in FIXED_SIZES:
        return FIXED_SIZES[dim]
    raise StoreError(f"Expected a size for dimension {dim!r}, got sizes for {sorted(sizes)}.")


NAN = float("nan")

#: The store's arrays. Rows whose ``status`` is not ``ok`` hold the fill value.
SCHEMA = Schema([
    ArrayFamily("image", ("image",), "str", "", None,
                "id: path relative to the dataset root (coordinate)", pooled=True),
    ArrayFamily("label", ("image",), "int16", -1, None,
                "ground-truth class index, −1 unknown", pooled=True),
    ArrayFamily("pixels", ("image", "y", "x", "rgb"), "uint8", 0, "ingest",
                "the preprocessed crop that was explained (0 where not `ok`)"),
    ArrayFamily("mask", ("image", "y", "x"), "bool", False, "ingest",
                "ground-truth evidence pixels (the `evidence` dataset); all False elsewhere"),
    ArrayFamily("status", ("image",), "str", "", "ingest",
                "`ok`, or why the image could not be used", pooled=True),
    ArrayFamily(CLASS_NAME, (CLASS_NAME,), "str", "", None,
                "the model's class names, in output order (coordinate)"),
    ArrayFamily("logits", ("image", CLASS_NAME), "float32", NAN, "predict",
                "model outputs before softmax"),
    ArrayFamily("pred", ("image",), "int16", -1, "predict", "predicted class", pooled=True),
    ArrayFamily("prob", ("image",), "float32", NAN, "predict",
                "softmax probability of the predicted class", pooled=True),
    ArrayFamily(EXPLAINER, (EXPLAINER,), "str", "", None,
                "attribution method names (coordinate)"),
    ArrayFamily("raw", (EXPLAINER, "image", "channel", "y", "x"), "float32", NAN,
                "attribute", "raw attributions w.r.t. the normalized input (stored as "
                "`[store] attributions`: read through `open_dataset`)",
                split_explainer=True, encoding="attributions", packed=True),
    ArrayFamily("raw_scale", (EXPLAINER, "image"), "float32", NAN, "attribute",
                "float16 stores only: the power of two each stored `raw` map is multiplied "
                "by on reading", split_explainer=True, scale_of="raw", pooled=True),
    ArrayFamily("delta", (EXPLAINER, "image"), "float32", NAN, "attribute",
                "completeness error sum(A) − (F(x) − F(baseline)), against the baseline "
                "actually used; NaN where undefined", split_explainer=True, pooled=True),
    ArrayFamily("gap", (EXPLAINER, "image"), "float32", NAN, "attribute",
                "F(x) − F(baseline): what the attributions must add up to; "
                "`abs(delta) / abs(gap)` is the relative completeness error",
                split_explainer=True, pooled=True),
    ArrayFamily("steps", (EXPLAINER, "image"), "float32", NAN, "attribute",
                "`rule = \"adaptive\"`: path points the image used; NaN for other methods",
                split_explainer=True, pooled=True),
    ArrayFamily("residual", (EXPLAINER, "image"), "float32", NAN, "attribute",
                "`rule = \"adaptive\"`: final summed completeness residual over "
                "\\|F(x) − F(baseline)\\|; NaN for other methods and where that gap is 0",
                split_explainer=True, pooled=True),
    ArrayFamily("aggregated", (EXPLAINER, "image", "y", "x"), "float32", NAN, "aggregate",
                "channel sum (stored as `[store] attributions`)", split_explainer=True,
                encoding="attributions", packed=True),
    ArrayFamily("aggregated_scale", (EXPLAINER, "image"), "float32", NAN, "aggregate",
                "float16 stores only: the scale of each stored `aggregated` map",
                split_explainer=True, scale_of="aggregated", pooled=True),
    ArrayFamily("normalized", (EXPLAINER, "image", "y", "x"), "float32", NAN, "normalize",
                "abs, minus min, over max: in [0, 1] (stored as `[store] normalized`)",
                split_explainer=True, encoding="normalized", packed=True),
    ArrayFamily("metric_", (EXPLAINER, "image"), "float32", NAN, "evaluate",
                "`[evaluate] metrics`: one score per map (NaN where undefined, e.g. "
                "localisation without a mask)", prefix=True, entry="<metric>",
                split_explainer=True, pooled=True),
    ArrayFamily("random_", ("image",), "float32", NAN, "evaluate",
                "the same metric on uniform random maps: the floor", prefix=True,
                entry="<metric>", pooled=True),
    ArrayFamily("curve_", (EXPLAINER, "image", "step"), "float32", NAN, "evaluate",
                "deletion / insertion: target-class probability after each step",
                prefix=True, entry="<metric>", split_explainer=True, pooled=True),
    ArrayFamily("random_curve_", ("image", "step"), "float32", NAN, "evaluate",
                "the same curve for the random maps", prefix=True, entry="<metric>",
                pooled=True),
    ArrayFamily("randomisation", (EXPLAINER, "image", "layer_group"), "float32", NAN,
                "evaluate", "Spearman correlation of each map with the map after cascading "
                "parameter randomisation down to each layer group (first "
                "`randomisation_images` images; NaN elsewhere)", split_explainer=True,
                pooled=True),
    ArrayFamily("strategy", (EXPLAINER, "image"), "int16", -1, "report",
                "the image's explanation strategy (SpRAy cluster of its class, 0 = the "
                "class's largest), −1 where not clustered", pooled=True),
])


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


def shard_size(group: Any) -> int:
    """Images per shard of the store: its ``shard_size`` attribute, or, in a store made
    before pooled chunks, the chunk length of ``image``."""
    attrs = group.attrs if not isinstance(group, StoreView) else group.group.attrs
    if "shard_size" in attrs:
        return int(str(attrs["shard_size"]))
    return int(array(group, "image").chunks[0])


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


def dims(arr: zarr.Array) -> tuple[str, ...]:
    """An array's dimension names."""
    return tuple(str(d) for d in (arr.metadata.dimension_names or ()))  # type: ignore[union-attr]


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
    are remade by their stage, whose hash changes with the methods. Moving slots is the caller's
    job (:func:`copy_slot`).
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
            region = slice(start, start + shard_size)
            arr[dst, region] = arr[src, region]


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
        return name in self.keys

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
        """See :func:`region`."""
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
        float32 whatever the store's ``[store] attributions`` (see :func:`decode_maps`)."""
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
        """See :func:`regions_checksum`."""
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
    import itertools

    return [tuple(c) for c in itertools.product(*spans)]


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


def open_dataset(path: Path | str) -> Any:
    """The store as an ``xarray.Dataset`` (lazy, dask-backed) for analysis.

    Equivalent to ``xarray.open_zarr(path, consolidated=False)``, after checking the schema
    version, with ``raw`` and ``aggregated`` (``[store] attributions``) and ``normalized``
    (``[store] normalized``) decoded to float32 (lazily) when the store keeps them in 16
    bits: the same dims, coordinates and values within the store's recorded
    ``attributions_error`` and ``normalized_error``. String arrays (``image``, ``status``,
    ``explainer``) come back as numpy's ``StringDType``: use ``.values.tolist()`` for Python
    strings.
    """
    import xarray as xr

    group = open_store(path, mode="r")
    ds = xr.open_zarr(str(path), consolidated=False)
    for name in [str(v) for v in ds.data_vars]:
        fam = SCHEMA.family_of(name)
        if fam is None or not fam.encoded:
            continue
        var = ds[name]
        choice = str(array(group, name).attrs.get("encoding", "float32"))
        if choice == "float32":
            continue
        if choice == "float16":
            decoded = var.astype(np.float32) * ds[name + SCALE_SUFFIX]
        else:
            data = var.data.map_blocks(decode_maps, choice, None, dtype=np.float32)
            decoded = var.copy(data=data)
        ds[name] = decoded.transpose(*var.dims).assign_attrs(var.attrs)
    return ds.drop_vars([n for n in ds.data_vars if str(n).endswith(SCALE_SUFFIX)])


if __name__ == "__main__":  # the README's store table: python -m pipeline.store.zarr_store
    print("| array | dims | dtype | written by | meaning |\n| --- | --- | --- | --- | --- |")
    print("\n".join(SCHEMA.markdown_rows()))
