"""A task's handle on the store: pooled arrays keep one file whatever the methods, the layout
chooses the map files, and a caching handle reads what a plain one reads."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.store.access import create_store
from pipeline.store.axes import resize_explainers
from pipeline.store.schema import SCHEMA
from pipeline.store.view import StoreView


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
