"""The store schema: every array declared once, created from the schema, read back by its
dimensions; the README's store table is the schema's."""

from __future__ import annotations

import re

import numpy as np
import pytest
import zarr

from pipeline.errors import StoreError
from pipeline.store.zarr_store import (
    POOL_EXPLAINERS,
    POOL_SHARDS,
    SCHEMA,
    ArrayFamily,
    Schema,
    StoreView,
    array,
    copy_slot,
    create_store,
    explainers,
    regions_checksum,
    resize_explainers,
    shard_size,
)
from tests.workflow_helpers import ROOT


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


def test_the_readme_store_table_is_the_schema():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The Zarr store"):]
    section = section[:section.index("\n## ", 4)]
    rows = [line for line in section.splitlines() if re.match(r"\| `", line)]
    assert rows == SCHEMA.markdown_rows(), \
        "README: paste the table `.venv/bin/python -m pipeline.store.zarr_store` prints"


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


def test_explainer_axis_resizes_and_moves_only_split_arrays(tmp_path):
    group = _group(tmp_path)
    resize_explainers(group, ["a", "b"])
    sizes = {"image": 5, "explainer": 2, "y": 2, "x": 2}
    delta = SCHEMA.create(group, "delta", sizes, 2)
    metric = SCHEMA.create(group, "metric_x", sizes, 2)
    delta[1] = np.arange(5, dtype=np.float32)
    copy_slot(group, 1, 0, 2)
    resize_explainers(group, ["b"])
    assert explainers(group) == ["b"]
    assert zarr.open_group(str(tmp_path / "s.zarr"))["delta"].shape == (1, 5)
    np.testing.assert_array_equal(group["delta"][0], np.arange(5))
    assert metric.shape == (2, 5), "per-shard arrays are remade by their stage instead"


def test_a_region_checksum_reads_one_slot_or_every_explainer(tmp_path):
    group = _group(tmp_path)
    resize_explainers(group, ["a", "b"])
    sizes = {"image": 5, "explainer": 2}
    delta = SCHEMA.create(group, "delta", sizes, 2)
    delta[:] = np.arange(10, dtype=np.float32).reshape(2, 5)
    one = regions_checksum(group, ["delta"], slice(0, 2), 1)
    delta[0, 0] = -1.0  # another slot: slot 1's checksum is unchanged
    assert regions_checksum(group, ["delta"], slice(0, 2), 1) == one
    every = regions_checksum(group, ["delta"], slice(0, 2), None)
    delta[0, 1] = -2.0
    assert regions_checksum(group, ["delta"], slice(0, 2), None) != every


def test_an_extended_schema_keeps_the_project_s_and_adds_a_plugin_s():
    extra = ArrayFamily("toy", ("image",), "float32", 0.0, "toy", "a plugin's array")
    schema = SCHEMA.extended(extra)
    assert [f.name for f in schema][:-1] == [f.name for f in SCHEMA]
    assert schema.written_by("toy") == (extra,) and "toy" not in SCHEMA


def test_pooled_arrays_keep_one_file_whatever_the_methods(tmp_path):
    # Every small array in one chunk file for 1 or 6 methods and 5 shards; the big arrays in
    # one file per (shard, method) with data.
    counts = {}
    for m in (1, 6):
        names = [f"m{k}" for k in range(m)]
        group = create_store(tmp_path / f"s{m}.zarr", [f"i{k}" for k in range(10)], [0] * 10,
                             2, {})
        resize_explainers(group, names)
        sizes = {"image": 10, "explainer": m, "y": 4, "x": 4}
        for name in ("delta", "gap", "metric_sparseness", "aggregated"):
            SCHEMA.create(group, name, sizes, 2)
        view = StoreView(tmp_path / f"s{m}.zarr")
        for slot in range(m):
            for start in range(0, 10, 2):
                rows = slice(start, start + 2)
                for name in ("delta", "gap", "metric_sparseness"):
                    view.write(name, rows, np.ones(2, np.float32), slot)
                view.write("aggregated", rows, np.ones((2, 4, 4), np.float32), slot)
        counts[m] = {name: sum(1 for p in (tmp_path / f"s{m}.zarr" / name / "c").rglob("*")
                               if p.is_file())
                     for name in ("delta", "gap", "metric_sparseness", "aggregated")}
    assert counts[1]["delta"] == counts[6]["delta"] == 1
    assert counts[1]["metric_sparseness"] == counts[6]["metric_sparseness"] == 1
    assert counts[1]["aggregated"] == 5 and counts[6]["aggregated"] == 30


def _packed_files(path, name):
    return sorted(str(p.relative_to(path / name / "c")) for p in (path / name / "c").rglob("*")
                  if p.is_file())


@pytest.mark.parametrize("layout,files_per_shard", [("method", 6), ("shard", 1)])
def test_the_layout_chooses_a_map_file_per_shard_and_method_or_per_shard(
        tmp_path, layout, files_per_shard):
    # 6 methods, 5 shards: "shard" keeps every method of a shard in one file (Zarr's
    # sharding codec), and each method's maps read back as written.
    names = [f"m{k}" for k in range(6)]
    group = create_store(tmp_path / "s.zarr", [f"i{k}" for k in range(10)], [0] * 10, 2,
                         {"layout": layout})
    resize_explainers(group, names)
    SCHEMA.create(group, "raw", {"image": 10, "explainer": 6, "y": 4, "x": 4}, 2)
    view = StoreView(tmp_path / "s.zarr")
    rng = np.random.default_rng(0)
    written = {}
    for slot in range(6):
        for start in range(0, 10, 2):
            written[slot, start] = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
            view.write_maps("raw", slot, slice(start, start + 2), written[slot, start])
    assert len(_packed_files(tmp_path / "s.zarr", "raw")) == 5 * files_per_shard
    assert view.array("raw").chunks[:2] == (1, 2), "a read of one method reads only it"
    for (slot, start), values in written.items():
        np.testing.assert_array_equal(view.read_maps("raw", slot, slice(start, start + 2)),
                                      values)


def test_a_packed_array_s_removed_slots_are_cleared_so_a_new_method_reads_the_fill(tmp_path):
    group = create_store(tmp_path / "s.zarr", [f"i{k}" for k in range(4)], [0] * 4, 2,
                         {"layout": "shard"})
    resize_explainers(group, ["a", "b"])
    SCHEMA.create(group, "aggregated", {"image": 4, "explainer": 2, "y": 3, "x": 3}, 2)
    view = StoreView(tmp_path / "s.zarr")
    view.write_maps("aggregated", 1, slice(0, 2), np.ones((2, 3, 3), np.float32))
    view.write_maps("aggregated", 0, slice(0, 2), np.zeros((2, 3, 3), np.float32))
    resize_explainers(group, ["a"])
    resize_explainers(group, ["a", "c"])
    got = np.asarray(array(group, "aggregated")[:])
    assert np.isnan(got[1]).all(), "slot 1 is a new method: nothing of b's maps"
    assert (got[0, :2] == 0).all(), "a's maps are kept"


def test_a_store_layout_this_version_does_not_know_is_refused(tmp_path):
    group = create_store(tmp_path / "s.zarr", ["i0"], [0], 1, {})
    resize_explainers(group, ["a"])
    group.update_attributes({"layout": "zip"})  # a newer version's store, say
    with pytest.raises(StoreError, match=r"layout.*'method', 'shard'.*zip.*--replace"):
        SCHEMA.create(group, "raw", {"image": 1, "explainer": 1, "y": 2, "x": 2}, 1)


def test_new_slots_of_a_pooled_array_read_as_the_fill_after_a_shrink(tmp_path):
    group = _group(tmp_path)
    resize_explainers(group, ["a", "b"])
    SCHEMA.create(group, "delta", {"image": 5, "explainer": 2}, 2)
    view = StoreView(tmp_path / "s.zarr")
    view.write("delta", slice(0, 2), np.full(2, 3.0, np.float32), 1)
    resize_explainers(group, ["a"])
    resize_explainers(group, ["a", "c"])
    got = np.asarray(array(group, "delta")[:])
    assert np.isnan(got[1]).all(), "slot 1 is a new method: nothing of b's values"


def test_the_shard_size_is_a_store_attribute_and_older_stores_give_it_by_their_chunks(
        tmp_path):
    group = _group(tmp_path, shard=2)
    assert group.attrs["shard_size"] == 2 and shard_size(group) == 2
    assert array(group, "image").chunks[0] > 2, "pooled: the image axis holds many shards"
    old = zarr.open_group(str(tmp_path / "old.zarr"), mode="w", zarr_format=3)
    old.create_array("image", shape=(5,), chunks=(3,), dtype=str, fill_value="")
    assert shard_size(old) == 3


def test_a_view_caching_pooled_chunks_reads_what_an_uncached_one_reads(tmp_path):
    # `xai verify`'s handle: the units of the shards of one pooled chunk decode it once.
    group = create_store(tmp_path / "s.zarr", [f"i{k}" for k in range(20)], [0] * 20, 2, {})
    resize_explainers(group, ["a", "b", "c"])
    for name in ("delta", "aggregated", "status"):
        SCHEMA.create(group, name, {"image": 20, "explainer": 3, "y": 2, "x": 2}, 2)
    plain = StoreView(tmp_path / "s.zarr")
    plain.write("status", slice(0, 20), np.asarray(["ok", "bad"] * 10, dtype=object))
    rng = np.random.default_rng(1)
    for slot in range(3):
        for start in range(0, 20, 2):
            rows = slice(start, start + 2)
            plain.write("delta", rows, rng.standard_normal(2).astype(np.float32), slot)
            plain.write_maps("aggregated", slot, rows,
                             rng.standard_normal((2, 2, 2)).astype(np.float32))
    cached = StoreView(tmp_path / "s.zarr", mode="r", cache_pooled=4)
    for slot in (0, 1, 2, None):
        for start in range(0, 20, 2):
            rows = slice(start, start + 2)
            names = ["delta", "image", "status", "aggregated"] if slot is not None \
                else ["image", "label"]
            assert cached.checksum(names, rows, slot) == plain.checksum(names, rows, slot)
    assert set(cached._cache) <= {("delta", 0), ("image", 0), ("status", 0), ("label", 0)}, \
        "pooled arrays only: one chunk each; the maps are read per unit"
    assert ("delta", 0) in cached._cache
