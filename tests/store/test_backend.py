"""``xarray.open_dataset(path, engine="xai")`` and what plain readers see: the README's
analysis example runs unchanged on a float32, a float16 and a uint16-normalized store with
the same answers within the stated errors; plain ``xarray.open_zarr`` and ``zarr.open``
never find a ``raw`` that holds other numbers than the maps."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from pipeline.store.access import create_store, open_dataset
from pipeline.store.axes import resize_explainers
from pipeline.store.backend import XaiBackendEntrypoint
from pipeline.store.schema import SCHEMA
from pipeline.store.view import StoreView

ROOT = Path(__file__).resolve().parents[2]
N, CROP = 6, 224
NAMES = ["gradient", "custom_integrated_gradients"]
#: (attributions, normalized) of each store the README example runs on.
#: uint16's stated error (half a code) plus float32's rounding of values near 1.
UNORM16_ERROR = 2.0 ** -17 + 2.0 ** -24
ENCODINGS = {"float32": ("float32", "float32"), "float16": ("float16", "float32"),
             "uint16": ("float32", "uint16")}


def _maps(seed: int) -> dict[str, np.ndarray]:
    """Seeded maps of 2 methods x 6 images: raw of magnitude 1e-9 (float16's subnormal
    range, unless scaled), normalized in [0, 1]; image 4 failed (NaN)."""
    rng = np.random.default_rng(seed)
    raw = (rng.standard_normal((2, N, 3, CROP, CROP)) * 1e-9).astype(np.float32)
    agg = raw.sum(axis=2)
    flat = np.abs(agg).reshape(2, N, -1)
    low, high = flat.min(axis=2), flat.max(axis=2)
    norm = ((np.abs(agg) - low[..., None, None]) / (high - low)[..., None, None])
    raw[:, 4], norm[:, 4] = np.nan, np.nan
    delta = rng.standard_normal((2, N)).astype(np.float32) * 1e-3
    gap = rng.uniform(0.5, 2.0, (2, N)).astype(np.float32)
    return {"raw": raw, "normalized": norm.astype(np.float32), "delta": delta, "gap": gap}


def make_store(path: Path, attributions: str, normalized: str, seed: int = 0) -> Path:
    """A store of the README's arrays, written as a run writes them (the 16-bit ones
    through :meth:`StoreView.write_maps`)."""
    group = create_store(path, [f"img{k}.png" for k in range(N)], [0, 1, 0, 1, 0, 1], 3,
                         {"attributions": attributions, "normalized": normalized,
                          "layout": "method", "weights_id": "seeded"})
    resize_explainers(group, NAMES)
    sizes = {"image": N, "explainer": 2, "y": CROP, "x": CROP}
    for name in ("status", "pred", "prob", "raw", "raw_scale", "normalized", "delta", "gap"):
        if SCHEMA.wanted(group, SCHEMA[name]):
            SCHEMA.create(group, name, sizes, 3)
    data = _maps(seed)
    view = StoreView(path)
    view.write("status", slice(0, N), np.array(["ok"] * 4 + ["unreadable", "ok"], dtype=object))
    view.write("pred", slice(0, N), np.array([2, 1, 2, 1, -1, 2], dtype=np.int16))
    view.write("prob", slice(0, N), np.linspace(0.5, 1.0, N, dtype=np.float32))
    for slot in range(2):
        for name in ("raw", "normalized"):
            view.write_maps(name, slot, slice(0, N), data[name][slot])
        for name in ("delta", "gap"):
            view.write(name, slice(0, N), data[name][slot], slot)
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stores")
    return {key: make_store(root / f"{key}.zarr", *choice)
            for key, choice in ENCODINGS.items()}


def readme_example() -> str:
    """The README's analysis example, as it stands."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Analysing the store"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def run_readme(path: Path) -> dict[str, object]:
    """Run the example on ``path``; its printed answers."""
    code = readme_example().replace("runs/sample/store.zarr", str(path))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    lines = out.getvalue().splitlines()
    shares = {}
    for name in NAMES:
        line = next(ln for ln in lines if ln.startswith(f"{name:30s} "))
        shares[name] = float(line.split()[-1])
    median = next(ln for ln in lines if ln.startswith("median relative completeness"))
    return {"shares": shares, "median": float(median.split(":")[1]), "last": lines[-1]}


def test_the_readme_example_gives_the_same_answers_on_every_encoding(stores):
    answers = {key: run_readme(path) for key, path in stores.items()}
    ref = answers["float32"]
    assert ref["last"] == "img0.png (3, 224, 224)"
    for key in ("float16", "uint16"):
        got = answers[key]
        # Printed to 3 decimals: the 16-bit errors (2^-11 relative, 7.6e-6 absolute) stay
        # below the last printed digit on these maps.
        assert got["shares"] == ref["shares"], key
        assert got["median"] == ref["median"], key  # delta and gap are float32 everywhere
        assert got["last"] == ref["last"], key


def test_the_backend_decodes_each_encoding_within_its_stated_error(stores):
    ref = xr.open_dataset(stores["float32"], engine="xai")
    data = _maps(0)
    np.testing.assert_array_equal(ref.raw.values, data["raw"])
    for key, path in stores.items():
        ds = xr.open_dataset(path, engine="xai")
        assert ds.raw.dtype == np.float32 and ds.normalized.dtype == np.float32, key
        assert "raw_scale" not in ds and "raw_float16" not in ds, key
        ok = np.isfinite(data["raw"])
        rel = np.abs(ds.raw.values[ok] - data["raw"][ok]) / np.abs(data["raw"][ok])
        assert rel.max() <= (2.0 ** -11 if key == "float16" else 0.0), key
        diff = np.abs(ds.normalized.values - data["normalized"])
        assert np.nanmax(diff) <= (UNORM16_ERROR if key == "uint16" else 0.0), key
        np.testing.assert_array_equal(np.isnan(ds.normalized.values),
                                      np.isnan(data["normalized"]))


def test_plain_readers_find_no_raw_in_a_float16_store(stores):
    plain = xr.open_zarr(stores["float16"], consolidated=False)
    assert "raw" not in plain and "raw_float16" in plain
    with pytest.raises(AttributeError):
        _ = plain.raw
    group = zarr.open_group(str(stores["float16"]), mode="r")
    assert "raw" not in group and "raw_float16" in group
    # What it holds is named for it: the map divided by its scale, decoded with raw_scale.
    back = (plain.raw_float16.astype(np.float32) * plain.raw_scale).values
    np.testing.assert_allclose(back, _maps(0)["raw"], rtol=2.0 ** -11)


def test_plain_xarray_decodes_a_uint16_normalized_store_itself(stores):
    plain = xr.open_zarr(stores["uint16"], consolidated=False)
    expected = _maps(0)["normalized"]
    assert plain.normalized.dtype.kind == "f"
    np.testing.assert_allclose(plain.normalized.values, expected, atol=UNORM16_ERROR)
    np.testing.assert_array_equal(np.isnan(plain.normalized.values), np.isnan(expected))


def test_a_float16_store_names_each_array_as_the_run_knows_it(stores):
    view = StoreView(stores["float16"], mode="r")
    assert "raw" in view and SCHEMA.instances(view.group, [SCHEMA["raw"]]) == ["raw_float16"]
    np.testing.assert_allclose(view.read_maps("raw", 1, slice(0, 3)), _maps(0)["raw"][1, :3],
                               rtol=2.0 ** -11)


def test_per_image_arrays_are_groupby_keys_as_they_are(stores):
    ds = open_dataset(stores["float16"])
    for name in ("pred", "prob", "status"):
        assert isinstance(ds[name].variable._data, np.ndarray), name
    counts = ds.normalized.isel(explainer=0).mean(("y", "x")).groupby(ds.pred).count()
    assert dict(zip(counts.pred.values.tolist(), counts.values.tolist(),
                    strict=True)) == {-1: 0, 1: 2, 2: 3}


def test_the_backend_claims_only_stores(stores, tmp_path):
    backend = XaiBackendEntrypoint()
    assert backend.guess_can_open(stores["float32"])
    assert not backend.guess_can_open(tmp_path)
    ds = xr.open_dataset(stores["float16"], engine="xai", drop_variables=["raw"])
    assert "raw" not in ds and "normalized" in ds


def test_a_16_bit_store_made_before_the_naming_reads_right_through_the_backend(tmp_path):
    """The fixture run ``options`` (float16 maps, uint16 normalized, shard layout) was made
    when 16-bit maps were called ``raw``: the backend decodes them all the same."""
    fixture = ROOT / "tests" / "fixtures" / "existing_runs" / "runs" / "options" / "store.zarr"
    plain = xr.open_zarr(fixture, consolidated=False, mask_and_scale=False)
    assert plain.raw.dtype == np.float16 and plain.raw.attrs["encoding"] == "float16"
    ds = xr.open_dataset(fixture, engine="xai")
    assert ds.raw.dtype == np.float32 and "raw_scale" not in ds
    np.testing.assert_array_equal(ds.raw.values,
                                  (plain.raw.astype(np.float32) * plain.raw_scale).values)
    codes = plain.normalized.values
    expected = np.where(codes == 65535, np.nan, codes / np.float32(65534)).astype(np.float32)
    np.testing.assert_array_equal(ds.normalized.values, expected)


def test_an_old_uint16_array_is_left_as_it_is_and_read_right_by_the_backend(tmp_path):
    """A uint16 ``normalized`` made before its CF attributes: plain xarray gives its codes
    (what its dtype says), the backend the values; preparing its stage again rewrites no
    file (a rerun with nothing to do keeps the store byte-identical)."""
    path = make_store(tmp_path / "s.zarr", "float32", "uint16")
    group = zarr.open_group(str(path), mode="r+")
    normalized = group["normalized"]
    attrs = {k: v for k, v in normalized.attrs.items() if k not in ("scale_factor", "_FillValue")}
    normalized.attrs.clear()
    normalized.update_attributes(attrs)  # as a store made before the CF attributes
    meta = (path / "normalized" / "zarr.json").read_bytes()
    SCHEMA.create(group, "normalized", {"image": N, "explainer": 2, "y": CROP, "x": CROP}, 3)
    assert (path / "normalized" / "zarr.json").read_bytes() == meta
    assert xr.open_zarr(path, consolidated=False).normalized.dtype == np.uint16
    np.testing.assert_allclose(open_dataset(path).normalized.values, _maps(0)["normalized"],
                               atol=UNORM16_ERROR)


def test_a_legacy_raw_is_kept_as_it_is_and_remade_under_its_encoded_name(tmp_path):
    path = make_store(tmp_path / "s.zarr", "float16", "float32")
    (path / "raw_float16").rename(path / "raw")  # as a store made before the naming
    group = zarr.open_group(str(path), mode="r+")
    sizes = {"image": N, "explainer": 2, "y": CROP, "x": CROP}
    assert SCHEMA.create(group, "raw", sizes, 3).name.endswith("/raw")  # kept, data and all
    assert "raw_float16" not in group
    np.testing.assert_allclose(open_dataset(path).raw.values, _maps(0)["raw"], rtol=2.0 ** -11)
    # Remade (another crop): empty either way, so under the name that says what it holds.
    SCHEMA.create(group, "raw", {**sizes, "y": 8, "x": 8}, 3)
    group = zarr.open_group(str(path), mode="r")
    assert "raw" not in group and group["raw_float16"].shape == (2, N, 3, 8, 8)
