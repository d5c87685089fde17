"""The store schema: every array the store can hold, declared once, and how each is chunked.

:data:`SCHEMA` is the contract of the Zarr v3 store: each array's dimensions, dtype, fill
value and meaning. The stages create their arrays from it (and say which ones they write: the
schema names arrays, never the stages), ``xai verify`` and the records' checksums read regions
by its dimensions, the crash tests compare what it lists, and ``docs/store-format.md`` is
generated from it. :data:`STORE_ATTRIBUTES` declares the store's root attributes.

Every array carries ``dimension_names`` so ``xarray.open_zarr(path, consolidated=False)``
yields one Dataset with named dimensions; no array it finds holds other numbers than its name
says (a map kept in float16 or bfloat16 is named for it, ``raw_float16``; fixed-point
``normalized`` has CF attributes), and ``xarray.open_dataset(path, engine="xai")`` decodes
them all (:func:`pipeline.store.access.open_dataset`).

The big arrays (crops, logits, maps) are chunked by shard and explainer: a shard task writes
whole chunks, one file each (with ``[store] layout = "shard"``, one file per shard holds
every method's maps, and their writers lock it, :attr:`ArrayFamily.packed`). The small ones
(per-image scalars and curves, :attr:`ArrayFamily.pooled`) keep many shards and every
explainer in one chunk, so the store's file count does not grow with the arrays times the
methods; their writers take the chunk's lock (:mod:`pipeline.store.locks`), as Zarr rewrites
a chunk whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from pipeline.errors import StoreError
from pipeline.store.arrays import array, array_names, resolve
from pipeline.store.encoding import (
    SCALE_SUFFIX,
    STORE_DEFAULTS,
    STORE_LAYOUTS,
    STORED_DTYPES,
    STORED_FILL,
    cf_attributes,
    logical_name,
    stored_name,
)

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
    Zarr's default zstd on every dtype and as fast to decode (docs/performance.md,
    "Storing maps in 16 bits")."""
    from zarr.codecs import BloscCodec

    return [BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")]


def attributions_dtype(group: Any) -> str:
    """The ``[store] attributions`` choice of ``group`` (a ``zarr.Group`` or a
    :class:`~pipeline.store.view.StoreView`; float32 for stores made before the choice)."""
    return stored_choice(group, "attributions")


def stored_choice(group: Any, setting: str) -> str:
    """The store's ``[store] <setting>`` choice (``attributions``, ``normalized``,
    ``layout``), kept in its attributes when the store is made; for a store made before the
    setting, what it was then (:data:`pipeline.store.encoding.STORE_DEFAULTS`). ``group`` is
    a ``zarr.Group`` or a :class:`~pipeline.store.view.StoreView`."""
    return str(group.attrs.get(setting, STORE_DEFAULTS.get(setting, "float32")))


@dataclass(frozen=True)
class ArrayFamily:
    """One store array, or a family of arrays named ``<name><entry>`` (one per metric, say).

    The family says what the array is, never who writes it: each stage declares the arrays
    it writes (``Stage.writes`` in ``workflows``), and the stage registry checks that every
    array has exactly one writer.

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
    meaning
        One line for the store format's table (``docs/store-format.md``).
    with_store
        True: written by the store's own functions, not by a stage: :func:`create_store
        <pipeline.store.access.create_store>` (``image``, ``label``), :func:`resize_explainers
        <pipeline.store.axes.resize_explainers>` (``explainer``) and :func:`write_classes
        <pipeline.store.axes.write_classes>` (``class_name``).
    prefix
        True: ``name`` is a prefix and the writer decides the entries (``entry`` names them in
        the docs, e.g. ``"<metric>"``).
    split_explainer
        True: chunked one explainer at a time, because its writer runs per method (two tasks
        never write one chunk). False: the whole explainer axis in one chunk, written per
        shard.
    encoding
        The ``[store]`` setting that chooses this array's stored dtype (``"attributions"``:
        :data:`pipeline.store.encoding.ATTRIBUTION_DTYPES`, ``"normalized"``:
        :data:`pipeline.store.encoding.NORMALIZED_DTYPES`), ``""`` for an array always stored
        as its ``dtype``. Read such an array through
        :meth:`pipeline.store.view.StoreView.read_maps` or
        :func:`pipeline.store.access.open_dataset`, which give float32 whatever the choice.
    scale_of
        The attribution array this one is the float16 scale of (it exists only in float16
        stores), else ``""``.
    pooled
        True: its chunks hold many shards and :data:`POOL_EXPLAINERS` explainer slots, so the
        store's file count does not grow with the methods. For arrays of a few values per
        image (``delta``, ``pred``, a metric's scores or curves; dimensions among
        :data:`POOLED_DIMS`). Writing one rewrites a chunk other tasks write too: its writers
        must go through :meth:`pipeline.store.view.StoreView.write`, which locks the chunk.
        False (the default, and what a plugin's array gets unless it says so): one chunk per
        shard (and explainer), which a unit may write directly.
    packed
        True: in a ``[store] layout = "shard"`` store, one file per shard holds its
        :data:`POOL_EXPLAINERS` explainer slots (Zarr's sharding codec; the chunks stay one
        shard of one explainer, so a read of one method's maps reads only them). Writing one
        rewrites the file other methods' tasks write too: its writers must go through
        :meth:`pipeline.store.view.StoreView.write`, which locks the file. For the big
        per-method arrays (the maps); False elsewhere.
    """

    name: str
    dims: tuple[str, ...]
    dtype: str
    fill: Any
    meaning: str
    with_store: bool = False
    prefix: bool = False
    entry: str = ""
    split_explainer: bool = False
    encoding: str = ""
    scale_of: str = ""
    pooled: bool = False
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

    def chunking(self) -> str:
        """How a new array of the family is chunked, in words (see :func:`chunk_shape` and
        :func:`shard_shape`), for the store format's table."""
        if "image" not in self.dims:
            return "one chunk"
        explainers = ("" if EXPLAINER not in self.dims
                      else f", {POOL_EXPLAINERS} explainers" if self.split_explainer
                      and self.pooled
                      else ", one explainer" if self.split_explainer else ", every explainer")
        if self.pooled:
            return f"pooled: up to {POOL_SHARDS} shards{explainers}"
        packed = (f" (`layout = \"shard\"`: a file holds {POOL_EXPLAINERS} explainers)"
                  if self.packed else "")
        return f"one shard{explainers}{packed}"


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

    def __iter__(self) -> Iterator[ArrayFamily]:
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
        base = logical_name(array_name)
        if base != array_name and base in self.families and self.families[base].encoded:
            return self.families[base]  # ``raw_float16``: ``raw`` kept in 16 bits
        found = [f for f in self if f.prefix and f.matches(array_name)]
        return max(found, key=lambda f: len(f.name)) if found else None

    def in_order(self, names: Iterable[str]) -> tuple[ArrayFamily, ...]:
        """The families called ``names`` (each one the schema declares), in schema order:
        the order a unit's checksum reads its arrays in."""
        wanted = set(names)
        return tuple(f for f in self if f.name in wanted)

    def instances(self, group: Any, families: Iterable[ArrayFamily]) -> list[str]:
        """The arrays of the store (``group``: a ``zarr.Group`` or a
        :class:`~pipeline.store.view.StoreView`) that belong to ``families``: the fixed ones
        in schema order, then the members of prefix families, sorted (the order checksums
        read). Each by the name it has in the store (``raw_float16`` for ``raw`` kept in 16
        bits by a new store)."""
        wanted = list(families)
        keys = array_names(group) if isinstance(group, zarr.Group) else group.keys
        fixed = [resolve(keys, f.name) for f in wanted
                 if not f.prefix and resolve(keys, f.name) in keys]
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
        cf = cf_attributes(choice) if fam.encoded else {}
        # A new 16-bit map array is named for its encoding (``raw_float16``), so that no plain
        # Zarr or xarray reader finds a ``raw`` holding other numbers than the maps; one a
        # store made before keeps its name, data and records.
        target = stored_name(array_name, choice) if fam.encoded else array_name
        found = resolve(group, array_name) if fam.encoded else array_name
        if found in group:
            existing = array(group, found)
            if existing.shape == shape and (dtype == "str" or existing.dtype == np.dtype(dtype)) \
                    and (fam.pooled or (existing.chunks == chunking
                                        and existing.shards == sharding)):
                # Left as it is, attributes too: a rerun with nothing to do rewrites no
                # file of the store (a uint16 one made before its CF attributes is read
                # right through `open_dataset` only).
                return existing
            if found != target:
                del group[found]  # remade empty anyway: under the name that says what it is
        attributes: dict[str, Any] = ({"encoding": choice,
                                       **({"scale": fam.name + SCALE_SUFFIX}
                                          if choice == "float16" else {}), **cf}
                                      if fam.encoded else {})
        return group.create_array(
            target, shape=shape, chunks=chunking,
            dtype=str if dtype == "str" else dtype, fill_value=fill,
            dimension_names=fam.dims, overwrite=True, attributes=attributes,
            compressors=attribution_codecs() if fam.encoded else "auto", shards=sharding)

    def wanted(self, group: Any, fam: ArrayFamily) -> bool:
        """Whether this store holds ``fam`` at all: the scale arrays exist only in float16
        stores."""
        return not fam.scale_of or attributions_dtype(group) == "float16"

    def _family(self, array_name: str) -> ArrayFamily:
        fam = self.family_of(array_name)
        if fam is None:
            raise StoreError(
                "Expected an array the schema declares (pipeline/store/schema.py), got "
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
    ArrayFamily("image", ("image",), "str", "",
                "id: path relative to the dataset root (coordinate)", with_store=True,
                pooled=True),
    ArrayFamily("label", ("image",), "int16", -1, "ground-truth class index, −1 unknown",
                with_store=True, pooled=True),
    ArrayFamily("pixels", ("image", "y", "x", "rgb"), "uint8", 0,
                "the preprocessed crop that was explained (0 where not `ok`)"),
    ArrayFamily("mask", ("image", "y", "x"), "bool", False,
                "ground-truth evidence pixels (the `evidence` dataset); all False elsewhere"),
    ArrayFamily("status", ("image",), "str", "", "`ok`, or why the image could not be used",
                pooled=True),
    ArrayFamily(CLASS_NAME, (CLASS_NAME,), "str", "",
                "the model's class names, in output order (coordinate)", with_store=True),
    ArrayFamily("logits", ("image", CLASS_NAME), "float32", NAN,
                "model outputs before softmax"),
    ArrayFamily("pred", ("image",), "int16", -1, "predicted class", pooled=True),
    ArrayFamily("prob", ("image",), "float32", NAN,
                "softmax probability of the predicted class", pooled=True),
    ArrayFamily(EXPLAINER, (EXPLAINER,), "str", "", "attribution method names (coordinate)",
                with_store=True),
    ArrayFamily("raw", (EXPLAINER, "image", "channel", "y", "x"), "float32", NAN,
                "raw attributions w.r.t. the normalized input (stored as "
                "`[store] attributions`; a new store names a float16 or bfloat16 one "
                "`raw_float16` or `raw_bfloat16`, its stored numbers: "
                "`xr.open_dataset(path, engine=\"xai\")` reads it as `raw`, float32)",
                split_explainer=True, encoding="attributions", packed=True),
    ArrayFamily("raw_scale", (EXPLAINER, "image"), "float32", NAN,
                "float16 stores only: the power of two each stored `raw` map is multiplied "
                "by on reading", split_explainer=True, scale_of="raw", pooled=True),
    ArrayFamily("delta", (EXPLAINER, "image"), "float32", NAN,
                "completeness error sum(A) − (F(x) − F(baseline)), against the baseline "
                "actually used; NaN where undefined", split_explainer=True, pooled=True),
    ArrayFamily("gap", (EXPLAINER, "image"), "float32", NAN,
                "F(x) − F(baseline): what the attributions must add up to; "
                "`abs(delta) / abs(gap)` is the relative completeness error",
                split_explainer=True, pooled=True),
    ArrayFamily("steps", (EXPLAINER, "image"), "float32", NAN,
                "`rule = \"adaptive\"`: path points the image used; NaN for other methods",
                split_explainer=True, pooled=True),
    ArrayFamily("residual", (EXPLAINER, "image"), "float32", NAN,
                "`rule = \"adaptive\"`: final summed completeness residual over "
                "\\|F(x) − F(baseline)\\|; NaN for other methods and where that gap is 0",
                split_explainer=True, pooled=True),
    ArrayFamily("aggregated", (EXPLAINER, "image", "y", "x"), "float32", NAN,
                "channel sum (stored as `[store] attributions`, and named as `raw` is: "
                "`aggregated_float16`, `aggregated_bfloat16`)", split_explainer=True,
                encoding="attributions", packed=True),
    ArrayFamily("aggregated_scale", (EXPLAINER, "image"), "float32", NAN,
                "float16 stores only: the scale of each stored `aggregated` map",
                split_explainer=True, scale_of="aggregated", pooled=True),
    ArrayFamily("normalized", (EXPLAINER, "image", "y", "x"), "float32", NAN,
                "abs, minus min, over max: in [0, 1] (stored as `[store] normalized`; "
                "`uint16` carries CF `scale_factor` 1/65534 and `_FillValue` 65535, which "
                "xarray applies itself)",
                split_explainer=True, encoding="normalized", packed=True),
    ArrayFamily("metric_", (EXPLAINER, "image"), "float32", NAN,
                "`[evaluate] metrics`: one score per map (NaN where undefined, e.g. "
                "localisation without a mask)", prefix=True, entry="<metric>",
                split_explainer=True, pooled=True),
    ArrayFamily("random_", ("image",), "float32", NAN,
                "the same metric on uniform random maps: the floor", prefix=True,
                entry="<metric>", pooled=True),
    ArrayFamily("curve_", (EXPLAINER, "image", "step"), "float32", NAN,
                "deletion / insertion: target-class probability after each step",
                prefix=True, entry="<metric>", split_explainer=True, pooled=True),
    ArrayFamily("random_curve_", ("image", "step"), "float32", NAN,
                "the same curve for the random maps", prefix=True, entry="<metric>",
                pooled=True),
    ArrayFamily("randomisation", (EXPLAINER, "image", "layer_group"), "float32", NAN,
                "Spearman correlation of each map with the map after cascading "
                "parameter randomisation down to each layer group (first "
                "`randomisation_images` images; NaN elsewhere)", split_explainer=True,
                pooled=True),
    ArrayFamily("strategy", (EXPLAINER, "image"), "int16", -1,
                "the image's explanation strategy (SpRAy cluster of its class, 0 = the "
                "class's largest), −1 where not clustered", pooled=True),
])

#: The store's root attributes (``zarr.open_group(path).attrs``), name -> meaning.
#: ``schema_version`` and ``shard_size`` are written when the store is made, the ``[store]``
#: choices with them; the others by each run.
STORE_ATTRIBUTES: dict[str, str] = {
    "schema_version": f"the store's schema version ({SCHEMA_VERSION}); another version is "
                      "refused, never misread",
    "shard_size": "images per shard: the chunk length of the big arrays along `image`",
    "attributions": "`[store] attributions`: how `raw` and `aggregated` are stored",
    "normalized": "`[store] normalized`: how `normalized` is stored",
    "layout": "`[store] layout`: one file per shard and method, or per shard",
    "attributions_error": "16-bit `[store] attributions` only: per array and method, the "
                          "relative L2 error of the stored maps against float32, measured on "
                          "the run's first shard",
    "normalized_error": "`[store] normalized = \"uint16\"` only: the same error for "
                        "`normalized`",
    "config": "the resolved config the run used",
    "config_hash": "the hash of `config`",
    "stage_hashes": "per stage, and per `stage/method`: the hash of what its output depends "
                    "on (a stage whose hash changed is rerun)",
    "package_versions": "the versions of the packages that computed the store",
    "weights_id": "which weights the model had",
    "random_weights": "true when the model's weights were random: the maps say nothing",
    "warning": "the warning shown with random weights, else empty",
    "head": "`[model] head`: the model's output as explained",
    "precision": "`[run] precision`",
    "device": "the device the model ran on",
    "arch": "the architecture (`exported` for a `.pt2` program)",
    "preprocessing": "resize, crop, mean, std and interpolation, and `resize_mode: squash` "
                     "where the whole image was squashed to `resize` x `resize` (a Hugging "
                     "Face ViT processor's way; absent: the short side resized): the model "
                     "input is `pixels / 255` normalized with this mean and std",
    "noise": "how the noise of the noisy methods is drawn",
    "target": "`[run] target`: `predicted` or `label`",
    "baselines": "per path method, its baseline in words (e.g. `blur (Gaussian, sigma=10 px)`)",
    "classes": "the model's class names (the `class_name` coordinate)",
    "model_report": "the evidence model's training (accuracy, seconds, settings); empty "
                    "otherwise",
    "layer_groups": "the randomisation test's layer groups, top-down",
    "map_space": "per explainer: `input`, or the layer its map comes from and how it was "
                 "upsampled",
}
