"""The 16-bit encodings of attribution maps (``[store] attributions``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.errors import StoreError
from pipeline.store.encoding import (
    ATTRIBUTION_DTYPES,
    BFLOAT16_NAN,
    UNORM16_NAN,
    UNORM16_ONE,
    decode_maps,
    encode_maps,
    rel_l2,
)


def _maps(seed: int = 0) -> np.ndarray:
    """Four heavy-tailed maps ``(4, 3, 8, 8)`` of very different magnitudes (softmax-head
    gradients have a median |a| near 1e-5), one of them all NaN (an image not explained)."""
    rng = np.random.default_rng(seed)
    maps = rng.standard_cauchy((4, 3, 8, 8)).astype(np.float32)
    maps[0] *= 1e-8
    maps[1] *= 1e3
    maps[3] = np.nan
    return maps


def test_float32_is_stored_as_it_is() -> None:
    maps = _maps()
    stored, scale = encode_maps(maps, "float32")
    assert scale is None and stored.dtype == np.float32
    np.testing.assert_array_equal(decode_maps(stored, "float32", scale), maps)


def test_float16_scale_is_a_power_of_two_and_nothing_underflows() -> None:
    maps = _maps()
    stored, scale = encode_maps(maps, "float16")
    assert stored.dtype == np.float16 and scale is not None and scale.shape == (4,)
    mantissa, _ = np.frexp(scale)
    assert np.all(mantissa == 0.5)  # exact powers of two: dividing by them is exact
    back = decode_maps(stored, "float16", scale)
    finite = np.isfinite(maps)
    assert not np.any((back == 0) & (maps != 0) & finite)
    # Only float16's rounding is left: at most half a unit in the last of its 11 bits.
    normal = finite & (np.abs(stored.astype(np.float32)) >= np.finfo(np.float16).tiny)
    rel = np.abs(back[normal] - maps[normal]) / np.abs(maps[normal])
    assert rel.max() <= 2.0 ** -11
    assert np.isnan(back[3]).all()


def test_float16_without_the_scale_would_lose_the_small_map() -> None:
    """The reason for the scale: the 1e-8 map mostly flushes to 0 in plain float16."""
    maps = _maps()
    assert np.mean(maps[0].astype(np.float16) == 0) > 0.1
    stored, scale = encode_maps(maps, "float16")
    assert not np.any(decode_maps(stored, "float16", scale)[0] == 0)


def test_bfloat16_rounds_as_torch_does() -> None:
    maps = _maps()
    stored, scale = encode_maps(maps, "bfloat16")
    assert stored.dtype == np.uint16 and scale is None
    back = decode_maps(stored, "bfloat16", None)
    ours = back[:3]
    theirs = torch.from_numpy(maps[:3]).to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(ours, theirs)
    assert np.all(stored[3] == BFLOAT16_NAN) and np.isnan(back[3]).all()


@pytest.mark.parametrize("choice", ATTRIBUTION_DTYPES)
def test_rel_l2_of_each_choice_is_within_its_precision(choice: str) -> None:
    maps = _maps()
    stored, scale = encode_maps(maps, choice)
    err = rel_l2(decode_maps(stored, choice, scale), maps)
    bound = {"float32": 0.0, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}[choice]
    assert err <= bound


def test_an_unknown_choice_is_refused() -> None:
    with pytest.raises(StoreError, match="float16"):
        encode_maps(_maps(), "int8")


def test_uint16_fixed_point_is_exact_at_0_and_1_and_within_half_a_step_elsewhere() -> None:
    rng = np.random.default_rng(0)
    maps = rng.random((4, 8, 8), dtype=np.float32)
    maps[0, 0, 0], maps[0, 0, 1] = 0.0, 1.0
    maps[3] = np.nan  # a row that was not explained
    stored, scale = encode_maps(maps, "uint16")
    assert stored.dtype == np.uint16 and scale is None
    back = decode_maps(stored, "uint16", None)
    assert back.dtype == np.float32
    assert back[0, 0, 0] == 0.0 and back[0, 0, 1] == 1.0
    assert np.all(stored[3] == UNORM16_NAN) and np.isnan(back[3]).all()
    assert np.abs(back[:3] - maps[:3]).max() <= 0.5 / UNORM16_ONE + 1e-7
    # Codes are the nearest step: decoding then encoding again is the identity.
    np.testing.assert_array_equal(encode_maps(back, "uint16")[0], stored)
