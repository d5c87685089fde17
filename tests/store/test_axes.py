"""The explainer axis follows the methods: split arrays resize and move their slots, and a new
slot reads as the fill, never as a removed method's values."""

from __future__ import annotations

import numpy as np
import zarr

from pipeline.store.access import create_store, explainers
from pipeline.store.arrays import array
from pipeline.store.axes import copy_slot, resize_explainers
from pipeline.store.schema import SCHEMA
from pipeline.store.view import StoreView


def _group(tmp_path, n=5, shard=2):
    return create_store(tmp_path / "s.zarr", [f"i{k}" for k in range(n)], [0] * n, shard, {})


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
