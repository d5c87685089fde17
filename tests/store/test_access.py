"""Making, opening and reading a store: one unit's region and its checksum, the shard size,
and ``open_dataset``: a run stored in float16 or bfloat16 (``[store] attributions``) reads
back as the float32 run does, within the recorded error; ``[store] layout = "shard"`` reads
back exactly; the choices are dataset-level settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.errors import ConfigError
from pipeline.store.access import create_store, open_dataset, regions_checksum, shard_size
from pipeline.store.arrays import array
from pipeline.store.axes import resize_explainers
from pipeline.store.encoding import NORMALIZED_DTYPES, STORE_LAYOUTS, UNORM16_ONE
from pipeline.store.schema import SCHEMA
from tests.workflow_helpers import cli, make_images, run_ok, write_config
from workflows.config.loading import load_config


def _group(tmp_path, n=5, shard=2):
    return create_store(tmp_path / "s.zarr", [f"i{k}" for k in range(n)], [0] * n, shard, {})


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


def test_the_shard_size_is_a_store_attribute_and_older_stores_give_it_by_their_chunks(
        tmp_path):
    group = _group(tmp_path, shard=2)
    assert group.attrs["shard_size"] == 2 and shard_size(group) == 2
    assert array(group, "image").chunks[0] > 2, "pooled: the image axis holds many shards"
    old = zarr.open_group(str(tmp_path / "old.zarr"), mode="w", zarr_format=3)
    old.create_array("image", shape=(5,), chunks=(3,), dtype=str, fill_value="")
    assert shard_size(old) == 3


METHODS = ("gradient", "integrated_gradients")


def _run(tmp_path: Path, images: Path, choice: str) -> Path:
    store = (f'normalized = "{choice}"' if choice in NORMALIZED_DTYPES[1:]
             else f'layout = "{choice}"' if choice in STORE_LAYOUTS
             else f'attributions = "{choice}"')
    config = write_config(tmp_path / f"{choice}.toml", images, tmp_path / choice,
                          methods=METHODS, extra=f'\n[store]\n{store}\n',
                          report=choice == "uint16")
    run_ok(config)
    return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("storage")
    images = tmp / "images"
    make_images(images, n=4)
    return {c: _run(tmp, images, c)
            for c in ("float32", "float16", "bfloat16", "uint16", "shard")}


def _store(config: Path) -> Path:
    cfg = load_config(config)
    return cfg.run_dir / "store.zarr"


@pytest.mark.parametrize("choice,bound", [("float16", 2.0 ** -11), ("bfloat16", 2.0 ** -8)])
def test_a_16_bit_store_reads_as_the_float32_one_within_its_error(
        runs: dict[str, Path], choice: str, bound: float) -> None:
    ref, ds = open_dataset(_store(runs["float32"])), open_dataset(_store(runs[choice]))
    assert set(ds.data_vars) == set(ref.data_vars)
    for name in ("raw", "aggregated"):
        assert ds[name].dims == ref[name].dims and ds[name].dtype == np.float32
        assert ds[name].coords.keys() == ref[name].coords.keys()
        a, b = ref[name].values, ds[name].values
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        ok = np.isfinite(a)
        err = np.linalg.norm(b[ok] - a[ok]) / np.linalg.norm(a[ok])
        assert 0 < err <= bound, (name, err)
    # An analysis written against float32 runs unchanged: a per-method mean over images.
    np.testing.assert_allclose(ds.raw.mean(("image", "channel", "y", "x")).values,
                               ref.raw.mean(("image", "channel", "y", "x")).values,
                               rtol=1e-2)
    # What is not an attribution is untouched.
    np.testing.assert_array_equal(ds.logits.values, ref.logits.values)


@pytest.mark.parametrize("choice", ["float16", "bfloat16"])
def test_the_store_records_its_choice_and_the_first_shard_s_error(
        runs: dict[str, Path], choice: str) -> None:
    group = zarr.open_group(str(_store(runs[choice])), mode="r")
    assert group.attrs["attributions"] == choice
    errors = group.attrs["attributions_error"]
    assert set(errors) == {"raw", "aggregated"}
    for per_method in errors.values():
        assert set(per_method) == set(METHODS)
        assert all(0 < e < 1e-2 for e in per_method.values())
    dtype = {"float16": np.float16, "bfloat16": np.uint16}[choice]
    # Named for what it holds: plain readers find no `raw` of other numbers than the maps.
    assert "raw" not in group and "aggregated" not in group
    assert group[f"raw_{choice}"].dtype == dtype
    assert group[f"aggregated_{choice}"].dtype == dtype
    assert ("raw_scale" in group) == (choice == "float16")


def test_a_uint16_normalized_store_reads_as_the_float32_one_within_half_a_step(
        runs: dict[str, Path]) -> None:
    ref, ds = open_dataset(_store(runs["float32"])), open_dataset(_store(runs["uint16"]))
    group = zarr.open_group(str(_store(runs["uint16"])), mode="r")
    assert group["normalized"].dtype == np.uint16 and group.attrs["normalized"] == "uint16"
    a, b = ref.normalized.values, ds.normalized.values
    assert ds.normalized.dims == ref.normalized.dims and b.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    ok = np.isfinite(a)
    assert 0 < np.abs(b[ok] - a[ok]).max() <= 0.5 / UNORM16_ONE + 1e-7
    # 0 and 1 (each map's minimum and maximum) are exact.
    np.testing.assert_array_equal(b[ok][a[ok] == 1.0], 1.0)
    np.testing.assert_array_equal(b[ok][a[ok] == 0.0], 0.0)
    errors = group.attrs["normalized_error"]["normalized"]
    assert set(errors) == set(METHODS) and all(0 < e < 1e-4 for e in errors.values())
    # The rest of the store is the float32 run's: raw is untouched.
    np.testing.assert_array_equal(ds.raw.values, ref.raw.values)
    # The sheets and the report (strategies included) are built from the decoded maps.
    run_dir = _store(runs["uint16"]).parent
    assert (run_dir / "report" / "index.html").is_file() and any((run_dir / "sheets").iterdir())


@pytest.mark.parametrize("run,old,new,setting", [
    ("uint16", 'normalized = "uint16"', "", "store.normalized"),
    ("shard", 'layout = "shard"', 'layout = "method"', "store.layout")])
def test_changing_a_store_choice_refuses_and_names_the_setting(
        runs: dict[str, Path], run: str, old: str, new: str, setting: str) -> None:
    config = runs[run]
    changed = config.parent / f"changed-{run}" / config.name
    changed.parent.mkdir(exist_ok=True)
    changed.write_text(config.read_text().replace(old, new))
    result = cli("run", "--config", str(changed), "--scheduler", "synchronous")
    assert result.exit_code != 0  # type: ignore[attr-defined]
    assert setting in result.output  # type: ignore[attr-defined]
    assert "--replace" in result.output  # type: ignore[attr-defined]


def test_a_store_of_one_file_per_shard_reads_as_the_file_per_method_one(
        runs: dict[str, Path]) -> None:
    ref, ds = open_dataset(_store(runs["float32"])), open_dataset(_store(runs["shard"]))
    assert set(ds.data_vars) == set(ref.data_vars)
    for name in ("raw", "aggregated", "normalized"):
        assert ds[name].dims == ref[name].dims
        np.testing.assert_array_equal(ds[name].values, ref[name].values)
    group = zarr.open_group(str(_store(runs["shard"])), mode="r")
    assert group.attrs["layout"] == "shard"
    shards = -(-group["image"].shape[0] // 2)  # shard_size 2 (write_config)
    for name in ("raw", "aggregated", "normalized"):
        files = [p for p in (_store(runs["shard"]) / name / "c").rglob("*") if p.is_file()]
        assert len(files) == shards, (name, "one file per shard for both methods")


def test_a_float32_store_has_no_scale_arrays(runs: dict[str, Path]) -> None:
    group = zarr.open_group(str(_store(runs["float32"])), mode="r")
    assert group["raw"].dtype == np.float32 and "raw_scale" not in group
    assert "attributions_error" not in group.attrs


def test_changing_the_choice_on_a_store_refuses_and_names_replace(
        runs: dict[str, Path]) -> None:
    config = runs["float16"]
    text = config.read_text().replace('attributions = "float16"', 'attributions = "float32"')
    changed = config.parent / "changed" / config.name  # the same run: named after the file
    changed.parent.mkdir(exist_ok=True)
    changed.write_text(text)
    result = cli("run", "--config", str(changed), "--scheduler", "synchronous")
    assert result.exit_code != 0  # type: ignore[attr-defined]
    out = result.output  # type: ignore[attr-defined]
    assert "store.attributions" in out and "--replace" in out
    assert zarr.open_group(str(_store(config)), mode="r").attrs["attributions"] == "float16"


def test_an_unknown_storage_dtype_is_a_config_error_listing_the_choices(
        tmp_path: Path) -> None:
    config = write_config(tmp_path / "bad.toml", tmp_path, tmp_path / "out",
                          extra='\n[store]\nattributions = "int8"\n')
    with pytest.raises(ConfigError, match=r"int8.*float32.*float16.*bfloat16|bfloat16"):
        load_config(config)


def test_an_unknown_layout_is_a_config_error_listing_the_choices(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bad.toml", tmp_path, tmp_path / "out",
                          extra='\n[store]\nlayout = "zip"\n')
    with pytest.raises(ConfigError, match=r"zip.*method.*shard|method.*shard.*zip"):
        load_config(config)
