"""What storing attributions costs, per codec and dtype, on a run's own ``raw`` array.

For each dtype (float32; float16 with a per-(explainer, image) scale, so that no value
underflows; float16 without a scale; bfloat16) and each codec (Zarr's default zstd, zstd at
level 3, blosc lz4/zstd with byte shuffle and bit shuffle), and for an array in [0, 1]
(``normalized``) the store's ``uint16`` fixed point, encode every (explainer, image)
map as the store would chunk it and report bytes per map, the compression ratio against raw
float32, encode and decode seconds, and the error against the float32 values (relative L2
over the array, and how many non-zero values became 0).

usage: .venv/bin/python benchmarks/bench_storage.py STORE.zarr [ARRAY]
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numcodecs import Blosc, Zstd

from pipeline.store.encoding import decode_maps, encode_maps


def _bf16(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (round to nearest even), as uint16."""
    bits = a.astype(np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return (rounded >> 16).astype(np.uint16)


def _from_bf16(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


def dtypes(unit: bool = False) -> dict[str, tuple[
        Callable[[np.ndarray], tuple[np.ndarray, float]],
        Callable[[np.ndarray, float], np.ndarray]]]:
    """name -> (encode one map to (array, scale), decode); ``unit``: the maps lie in [0, 1]
    (``normalized``), so the store's ``uint16`` fixed point is measured too."""
    def f16_scaled(a: np.ndarray) -> tuple[np.ndarray, float]:
        peak = float(np.abs(a).max()) or 1.0
        return (a / peak).astype(np.float16), peak

    return {
        "float32": (lambda a: (a.astype(np.float32), 1.0), lambda b, s: b),
        "float16, per-map scale": (f16_scaled, lambda b, s: b.astype(np.float32) * s),
        "float16, no scale": (lambda a: (a.astype(np.float16), 1.0),
                              lambda b, s: b.astype(np.float32)),
        "bfloat16": (lambda a: (_bf16(a), 1.0), lambda b, s: _from_bf16(b)),
        **({"uint16 fixed point": (lambda a: (encode_maps(a[None], "uint16")[0][0], 1.0),
                                   lambda b, s: decode_maps(b, "uint16", None))}
           if unit else {}),
    }


CODECS: dict[str, Any] = {
    "zstd level 0 (Zarr's default)": Zstd(level=0),
    "zstd level 3": Zstd(level=3),
    "blosc lz4, byte shuffle": Blosc(cname="lz4", clevel=5, shuffle=Blosc.SHUFFLE),
    "blosc zstd, byte shuffle": Blosc(cname="zstd", clevel=3, shuffle=Blosc.SHUFFLE),
    "blosc zstd, bit shuffle": Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE),
}


def measure(raw: np.ndarray) -> list[dict[str, Any]]:
    """``raw`` is ``(E, N, ...)``: one map per (explainer, image)."""
    maps = raw.reshape(raw.shape[0] * raw.shape[1], -1).astype(np.float32)
    maps = maps[np.isfinite(maps).all(axis=1)]
    plain_bytes = maps.nbytes
    rows = []
    unit = bool(maps.size) and float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    for dname, (encode, decode) in dtypes(unit).items():
        coded = [encode(m) for m in maps]
        back = np.stack([decode(b, s) for b, s in coded])
        err = float(np.linalg.norm(back - maps) / (np.linalg.norm(maps) or 1.0))
        lost = int(((back == 0) & (maps != 0)).sum())
        for cname, codec in CODECS.items():
            t0 = time.perf_counter()
            blobs = [codec.encode(np.ascontiguousarray(b)) for b, _s in coded]
            t_enc = time.perf_counter() - t0
            t0 = time.perf_counter()
            for blob in blobs:
                codec.decode(blob)
            t_dec = time.perf_counter() - t0
            size = sum(len(b) for b in blobs) + (8 * len(blobs) if "scale" in dname else 0)
            rows.append({"dtype": dname, "codec": cname, "bytes_per_map": size / len(maps),
                         "ratio_vs_float32": plain_bytes / size, "rel_l2": err,
                         "nonzero_to_zero": lost, "values": int(maps.size),
                         "encode_s": round(t_enc, 4), "decode_s": round(t_dec, 4)})
    return rows


def to_markdown(rows: list[dict[str, Any]], what: str) -> str:
    out = [f"On {what}:", "",
           "| dtype | codec | KB per map | × smaller than raw float32 | rel. L2 vs float32 | "
           "non-zero values lost | encode s | decode s |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['dtype']} | {r['codec']} | {r['bytes_per_map'] / 1024:.0f} | "
                   f"{r['ratio_vs_float32']:.2f} | {r['rel_l2']:.1e} | "
                   f"{r['nonzero_to_zero']} of {r['values']} | {r['encode_s']} | "
                   f"{r['decode_s']} |")
    return "\n".join(out)


def main() -> None:  # pragma: no cover - a measurement script
    import zarr

    store = sys.argv[1]
    name = sys.argv[2] if len(sys.argv) > 2 else "raw"
    group = zarr.open_group(store, mode="r")
    raw = np.asarray(group[name][:])
    rows = measure(raw)
    print(to_markdown(rows, f"`{name}` of {store} {tuple(raw.shape)}"))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
