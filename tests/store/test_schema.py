"""The store schema: every array declared once, created from the schema with its chunks, and
an extended schema for a plugin's arrays."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import StoreError
from pipeline.store.access import create_store
from pipeline.store.axes import resize_explainers
from pipeline.store.schema import (
    EXPLAINER,
    POOL_EXPLAINERS,
    POOL_SHARDS,
    SCHEMA,
    ArrayFamily,
    Schema,
)


def test_every_family_is_declared_once_with_named_dims():
    names = [f.name for f in SCHEMA]
    assert len(names) == len(set(names))
    for fam in SCHEMA:
        assert fam.dims and all(fam.dims), fam.name
        assert fam.meaning, fam.name
    with pytest.raises(ValueError, match="twice"):
        Schema([SCHEMA["raw"], SCHEMA["raw"]])


def test_array_names_find_their_family_longest_prefix_first():
    assert SCHEMA.family_of("metric_deletion").name == "metric_"
    assert SCHEMA.family_of("random_curve_deletion").name == "random_curve_"
    assert SCHEMA.family_of("random_sparseness").name == "random_"
    assert SCHEMA.family_of("randomisation").name == "randomisation"
    assert SCHEMA.family_of("raw").name == "raw"
    assert SCHEMA.family_of("rawr") is None


def _group(tmp_path, n=5, shard=2):
    return create_store(tmp_path / "s.zarr", [f"i{k}" for k in range(n)], [0] * n, shard, {})


def test_create_makes_the_declared_shape_chunks_and_fill(tmp_path):
    group = _group(tmp_path)
    resize_explainers(group, ["a", "b"])
    sizes = {"image": 5, "explainer": 2, "y": 4, "x": 4}
    raw = SCHEMA.create(group, "raw", sizes, 2)
    assert raw.shape == (2, 5, 3, 4, 4) and raw.chunks == (1, 2, 3, 4, 4)
    assert tuple(raw.metadata.dimension_names) == ("explainer", "image", "channel", "y", "x")
    assert np.isnan(raw[:]).all()
    metric = SCHEMA.create(group, "metric_sparseness", sizes, 2)
    assert metric.chunks == (POOL_EXPLAINERS, 2 * POOL_SHARDS), \
        "a few values per image: pooled, every slot and many shards in one chunk"
    strategy = SCHEMA.create(group, "strategy", sizes, 2)
    assert strategy.chunks == (2, 2 * POOL_SHARDS), "not split: the whole explainer axis"
    group.create_array("metric_pointing_game", shape=(2, 5), chunks=(1, 2), dtype="float32",
                       fill_value=np.nan, dimension_names=("explainer", "image"))
    group["metric_pointing_game"][1, 2:4] = 7.0
    kept = SCHEMA.create(group, "metric_pointing_game", sizes, 2)
    assert kept.chunks == (1, 2) and (kept[1, 2:4] == 7.0).all(), \
        "pooled, chunked as before pooling: kept with its data (its writers lock chunks)"
    group.create_array("aggregated", shape=(2, 5, 4, 4), chunks=(2, 2, 4, 4), dtype="float32",
                       fill_value=0.0, dimension_names=("explainer", "image", "y", "x"))
    remade = SCHEMA.create(group, "aggregated", sizes, 2)
    assert remade.chunks == (1, 2, 4, 4) and np.isnan(remade[:]).all(), \
        "a big array chunked otherwise: remade (its writers rely on one chunk a unit)"
    pred = SCHEMA.create(group, "pred", sizes, 2)
    assert pred.dtype == np.int16 and (pred[:] == -1).all()
    raw[0, :2] = 1.0
    assert SCHEMA.create(group, "raw", sizes, 2)[0, 0, 0, 0, 0] == 1.0, "kept when it fits"
    with pytest.raises(StoreError, match="declares"):
        SCHEMA.create(group, "undeclared", sizes, 2)
    with pytest.raises(StoreError, match="size for dimension 'y'"):
        SCHEMA.create(group, "aggregated", {"image": 5, "explainer": 2}, 2)


def test_an_extended_schema_keeps_the_project_s_and_adds_a_plugin_s():
    extra = ArrayFamily("toy", ("image",), "float32", 0.0, "a plugin's array")
    schema = SCHEMA.extended(extra)
    assert [f.name for f in schema][:-1] == [f.name for f in SCHEMA]
    assert schema["toy"] is extra and "toy" not in SCHEMA
    assert schema.in_order(["toy", "raw", "pixels"]) == (SCHEMA["pixels"], SCHEMA["raw"], extra)


def _described(fam: ArrayFamily, arr, shard: int) -> str:
    """The chunking of a created array of ``fam``, in the words of ArrayFamily.chunking."""
    chunks = dict(zip(fam.dims, arr.chunks, strict=True))
    sizes = dict(zip(fam.dims, arr.shape, strict=True))
    if "image" not in chunks:
        return "one chunk"
    explainers = ("" if EXPLAINER not in chunks
                  else f", {chunks[EXPLAINER]} explainers" if chunks[EXPLAINER] > 1
                  and chunks[EXPLAINER] != sizes[EXPLAINER]
                  else ", one explainer" if chunks[EXPLAINER] == 1 and fam.split_explainer
                  else ", every explainer")
    if chunks["image"] > shard:
        assert chunks["image"] % shard == 0 and chunks["image"] <= POOL_SHARDS * shard
        return f"pooled: up to {POOL_SHARDS} shards{explainers}"
    packed = (f" (`layout = \"shard\"`: a file holds {POOL_EXPLAINERS} explainers)"
              if arr.shards is not None else "")
    return f"one shard{explainers}{packed}"


def test_the_chunking_the_docs_state_is_the_chunking_a_new_array_gets(tmp_path):
    # A float16 store of the shard layout: every family exists there (the scales too).
    group = create_store(tmp_path / "s.zarr", [f"i{k}" for k in range(40)], [0] * 40, 2,
                         {"attributions": "float16", "layout": "shard"})
    resize_explainers(group, ["a", "b", "c"])
    sizes = {"image": 40, "explainer": 3, "y": 4, "x": 4, "class_name": 5, "step": 3,
             "layer_group": 2}
    for fam in SCHEMA:
        name = fam.name + ("x" if fam.prefix else "")
        arr = SCHEMA.create(group, name, sizes, 2)
        assert fam.chunking() == _described(fam, arr, 2), fam.name


def test_a_store_layout_this_version_does_not_know_is_refused(tmp_path):
    group = create_store(tmp_path / "s.zarr", ["i0"], [0], 1, {})
    resize_explainers(group, ["a"])
    group.update_attributes({"layout": "zip"})  # a newer version's store, say
    with pytest.raises(StoreError, match=r"layout.*'method', 'shard'.*zip.*--replace"):
        SCHEMA.create(group, "raw", {"image": 1, "explainer": 1, "y": 2, "x": 2}, 1)
