from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.attribution.postprocess import aggregate_block, normalize_block
from pipeline.explainers import aggregate_attribution, normalize_attribution


def _raw(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(2, 3, 3, 5, 5)).astype(np.float32)


def test_aggregate_block_equals_the_seed_function():
    raw = _raw()
    out = aggregate_block(raw)
    assert out.shape == (2, 3, 5, 5)
    for m in range(2):
        np.testing.assert_allclose(out[m], aggregate_attribution(torch.from_numpy(raw[m])),
                                   rtol=1e-5)


def test_normalize_block_equals_the_seed_function():
    agg = aggregate_block(_raw(1))
    out = normalize_block(agg)
    for m in range(2):
        np.testing.assert_allclose(out[m], normalize_attribution(agg[m]), rtol=1e-5, atol=1e-7)


def test_missing_rows_stay_nan_and_constant_rows_are_zero():
    agg = aggregate_block(_raw(2))
    agg[:, 1] = np.nan
    agg[0, 2] = 4.0
    out = normalize_block(agg)
    assert np.isnan(out[:, 1]).all()
    assert (out[0, 2] == 0).all()
    assert np.isfinite(out[:, 0]).all() and np.isfinite(out[1, 2]).all()


def test_block_shapes_are_checked():
    with pytest.raises(ValueError, match="method, image, channel"):
        aggregate_block(np.zeros((3, 5, 5)))
    with pytest.raises(ValueError, match="method, image, y, x"):
        normalize_block(np.zeros((3, 5, 5)))
