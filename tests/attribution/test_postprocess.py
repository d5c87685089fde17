from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.attribution.postprocess import aggregate_block, normalize_block
from pipeline.explainers import aggregate_attribution, normalize_attribution


def _raw(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(2, 3, 3, 5, 5)).astype(np.float32)


def test_aggregate_block_equals_the_original_function():
    raw = _raw()
    out = aggregate_block(raw)
    assert out.shape == (2, 3, 5, 5)
    for m in range(2):
        np.testing.assert_allclose(out[m], aggregate_attribution(torch.from_numpy(raw[m])),
                                   rtol=1e-5)


def test_normalize_block_equals_the_original_function_exactly():
    agg = aggregate_block(_raw(1))
    out = normalize_block(agg)
    for m in range(2):
        np.testing.assert_array_equal(out[m], normalize_attribution(agg[m]))
        np.testing.assert_array_equal(out[m], normalize_attribution(torch.from_numpy(agg[m])))


def _explain_and_run_maps(agg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``agg`` ``(S, Y, X)`` normalized by ``xai explain``'s path (its sheet map, from
    attributions whose channel sum is ``agg`` exactly) and by ``xai run``'s normalize stage."""
    from workflows.commands.explain_images import sheet_map
    from workflows.stages.maps import Normalize

    raw = np.zeros((agg.shape[0], 3, *agg.shape[1:]), dtype=np.float32)
    raw[:, 1] = agg  # one channel: the channel sum is exact in any precision
    explain = np.stack([sheet_map(torch.from_numpy(raw[i:i + 1])) for i in range(len(agg))])
    run = Normalize.block(aggregate_block(raw[None]))[0]
    return explain, run


def test_xai_explain_and_xai_run_normalize_the_same_maps_identically():
    agg = aggregate_block(_raw(3))[0]
    agg[1] = 2.5  # a constant map: zeros in both
    explain, run = _explain_and_run_maps(agg)
    assert explain.dtype == run.dtype == np.float32
    np.testing.assert_array_equal(explain, run)
    assert (run[1] == 0).all() and run[0].min() == 0 and run[0].max() == 1


def test_a_nan_map_stays_nan_in_xai_explain_and_xai_run():
    agg = aggregate_block(_raw(4))[0]
    agg[0] = np.nan  # an image that was not explained
    agg[2, 1, 1] = np.nan  # one pixel that was not
    explain, run = _explain_and_run_maps(agg)
    np.testing.assert_array_equal(explain, run)  # NaN where the other has NaN, too
    assert np.isnan(explain[0]).all() and np.isnan(run[0]).all()
    assert np.isnan(run[2, 1, 1]) and np.isfinite(np.delete(run[2].ravel(), 6)).all()
    assert np.isfinite(run[1]).all()


@pytest.mark.parametrize("shape", [(5, 5), (2, 5, 5), (2, 3, 5, 5)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalize_attribution_keeps_type_shape_and_dtype(shape, dtype):
    a = np.random.default_rng(5).normal(size=shape).astype(dtype)
    a.reshape(-1)[0] = np.nan
    out_np = normalize_attribution(a)
    out_t = normalize_attribution(torch.from_numpy(a))
    assert isinstance(out_np, np.ndarray) and out_np.shape == shape and out_np.dtype == dtype
    assert isinstance(out_t, torch.Tensor) and out_t.shape == shape
    assert out_t.dtype == torch.from_numpy(a).dtype
    np.testing.assert_array_equal(out_np, out_t.numpy())
    assert np.isnan(out_np.reshape(-1)[0]) and np.nanmax(out_np) == 1


def test_each_image_of_a_stack_is_normalized_on_its_own():
    a = np.random.default_rng(6).normal(size=(2, 3, 4, 4))
    a[1] *= 100
    out = normalize_attribution(a)
    for i in range(2):
        np.testing.assert_array_equal(out[i], normalize_attribution(a[i].reshape(3 * 4, 4))
                                      .reshape(3, 4, 4))


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
