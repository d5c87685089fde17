"""How attribution maps are kept in the store: float32, float16 with a per-map scale, or
bfloat16 (``[store] attributions``). numpy only, so that the config can name the choices
without importing Zarr."""

from __future__ import annotations

import numpy as np

from pipeline.errors import StoreError

#: ``[store] attributions``: how ``raw`` and ``aggregated`` are stored. ``float16`` keeps a
#: power-of-two scale per (explainer, image) map in ``<array>_scale``, so that no value of a
#: map falls into float16's subnormal range; ``bfloat16`` is kept as its 16 bits in a
#: ``uint16`` array (neither numpy nor Zarr has the type). A new store names both for their
#: encoding (:data:`ENCODED_NAME_SUFFIX`). Reading through
#: :meth:`pipeline.store.view.StoreView.read_maps` or
#: :func:`pipeline.store.access.open_dataset` gives float32 either way.
ATTRIBUTION_DTYPES = ("float32", "float16", "bfloat16")
#: ``[store] normalized``: how ``normalized`` (in [0, 1]) is stored. ``uint16`` is fixed
#: point: ``round(v * 65534)``, 65535 for NaN, so 0 and 1 are exact and any other value is
#: within 2^-17 (7.6e-6) of the float32 one; its CF attributes (:func:`cf_attributes`) let
#: plain xarray decode it.
NORMALIZED_DTYPES = ("float32", "uint16")
STORED_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "uint16",
                 "uint16": "uint16"}
#: The bfloat16 NaN's bits: the fill value of a bfloat16 array.
BFLOAT16_NAN = 0x7FC0
#: Fixed-point ``uint16``: the code of 1.0, and the code of NaN (the array's fill value).
UNORM16_ONE = 65534
UNORM16_NAN = 65535
#: Every stored choice, and the fill value of its array where it is not NaN.
STORAGE_CHOICES = tuple(dict.fromkeys(ATTRIBUTION_DTYPES + NORMALIZED_DTYPES))
STORED_FILL = {"bfloat16": BFLOAT16_NAN, "uint16": UNORM16_NAN}
SCALE_SUFFIX = "_scale"
#: A map array whose stored numbers are not the maps (float16 divided by a per-map scale,
#: bfloat16's bits in ``uint16``) is named for its encoding in a new store: ``raw_float16``,
#: ``aggregated_bfloat16``. Plain ``xarray.open_zarr`` or ``zarr.open`` then has no ``raw``
#: that could be mistaken for the maps; :func:`pipeline.store.access.open_dataset` (engine
#: ``"xai"``) decodes it back to ``raw``. Stores made before keep the plain name.
ENCODED_NAME_SUFFIX = {"float16": "_float16", "bfloat16": "_bfloat16"}
#: The CF attributes that let any CF decoder (xarray's by default) read fixed-point
#: ``uint16`` as the values: ``code * scale_factor``, NaN where ``code == _FillValue``.
CF_KEYS = ("scale_factor", "_FillValue")
#: ``[store] layout``: the files of the map arrays (``raw``, ``aggregated``, ``normalized``).
#: ``"method"``: one file per shard and method, each write a whole file. ``"shard"``: one file
#: per shard holding every method (Zarr's sharding codec), so the store's file count does not
#: grow with the methods; each method's write rewrites its shard's file, about (methods + 1) / 2
#: times the bytes written (docs/performance.md, "ImageNet scale").
STORE_LAYOUTS = ("method", "shard")
#: What each ``[store]`` setting reads as in a store made before it existed.
STORE_DEFAULTS = {"attributions": "float32", "normalized": "float32", "layout": "method"}
#: float16's largest finite value is 65504: a map is scaled so its peak lies in [2^14, 2^15).
_F16_PEAK_EXPONENT = 15


def encode_maps(values: np.ndarray, choice: str) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 maps ``(N, ...)`` (one per row, NaN rows allowed) as stored under ``choice``:
    ``(stored, scale)``, ``scale`` ``(N,)`` for float16, else None.

    The float16 scale is a power of two, so dividing by it is exact: the only error is
    float16's rounding, a relative 2^-11 of each value at most, whatever the map's magnitude.
    """
    values = np.asarray(values, dtype=np.float32)
    if choice == "float32":
        return values, None
    if choice == "bfloat16":
        bits = np.ascontiguousarray(values).view(np.uint32)
        nan = np.isnan(values)
        rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
        out = (rounded >> np.uint32(16)).astype(np.uint16)
        out[nan] = BFLOAT16_NAN
        return out, None
    if choice == "uint16":
        codes = np.rint(np.clip(values, 0.0, 1.0) * np.float32(UNORM16_ONE))
        out = np.where(np.isnan(values), UNORM16_NAN, codes).astype(np.uint16)
        return out, None
    if choice != "float16":
        raise StoreError(f"Expected a storage dtype in {STORAGE_CHOICES}, got {choice!r}.")
    flat = np.abs(values.reshape(len(values), -1))
    peak = np.max(np.where(np.isfinite(flat), flat, 0.0), axis=1, initial=0.0)
    # An all-NaN or all-zero map keeps the scale 2^-15 (any power of two would do).
    exponent = np.ceil(np.log2(peak, out=np.zeros_like(peak), where=peak > 0))
    scale = np.exp2(exponent - _F16_PEAK_EXPONENT).astype(np.float32)
    shape = (len(values),) + (1,) * (values.ndim - 1)
    return (values / scale.reshape(shape)).astype(np.float16), scale


def decode_maps(stored: np.ndarray, choice: str, scale: np.ndarray | None) -> np.ndarray:
    """Inverse of :func:`encode_maps`: float32 maps. ``scale`` has the shape of ``stored``'s
    leading (explainer, image) axes that it covers, broadcast over the rest."""
    stored = np.asarray(stored)
    if choice == "bfloat16":
        return (stored.astype(np.uint32) << np.uint32(16)).view(np.float32)
    if choice == "uint16":
        out = stored.astype(np.float32) / np.float32(UNORM16_ONE)
        out[stored == UNORM16_NAN] = np.nan
        return out
    out = stored.astype(np.float32)
    if scale is not None:
        scale = np.asarray(scale, dtype=np.float32)
        out *= scale.reshape(scale.shape + (1,) * (out.ndim - scale.ndim))
    return out


def stored_name(name: str, choice: str) -> str:
    """The name a new store gives map array ``name`` kept as ``choice`` (see
    :data:`ENCODED_NAME_SUFFIX`): ``name`` itself where the stored numbers are the values or
    carry their CF decoding."""
    return name + ENCODED_NAME_SUFFIX.get(choice, "")


def logical_name(stored: str) -> str:
    """Inverse of :func:`stored_name`: ``raw_float16`` -> ``raw`` (other names unchanged)."""
    for suffix in ENCODED_NAME_SUFFIX.values():
        if stored.endswith(suffix):
            return stored[: -len(suffix)]
    return stored


def cf_attributes(choice: str) -> dict[str, float | int]:
    """The CF attributes of an array stored as ``choice``: for fixed-point ``uint16``,
    ``scale_factor = 1/65534`` and ``_FillValue = 65535``, so a CF decoder gives the values
    in [0, 1] and NaN; none for the others (float32 needs none; float16's scale differs per
    map, and bfloat16 is no linear map of its bits)."""
    if choice == "uint16":
        return {"scale_factor": 1.0 / UNORM16_ONE, "_FillValue": UNORM16_NAN}
    return {}


def rel_l2(back: np.ndarray, values: np.ndarray) -> float:
    """``||back - values|| / ||values||`` over the finite values (0 for an all-zero map)."""
    ok = np.isfinite(values)
    norm = float(np.linalg.norm(values[ok].astype(np.float64)))
    diff = float(np.linalg.norm((back[ok] - values[ok]).astype(np.float64)))
    return diff / norm if norm else 0.0
