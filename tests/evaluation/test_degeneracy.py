"""Degenerate output: constant model output, zero output gaps and all-zero maps are found;
outputs that vary, as a random resnet18's or a trained model's do, are not."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluation.degeneracy import (
    GAP_FLOOR,
    LOGPROB_SPREAD_FLOOR,
    MAP_FLOOR,
    banner_text,
    constant_output,
    find_degeneracy,
    log_softmax,
    zero_gaps,
    zero_maps,
)


def test_log_softmax_rows_are_log_probabilities():
    lp = log_softmax(np.array([[0.0, 0.0], [np.log(3.0), 0.0]]))
    np.testing.assert_allclose(np.exp(lp), [[0.5, 0.5], [0.75, 0.25]], rtol=1e-12)


def test_logits_of_1e_9_that_barely_move_are_constant_output():
    # The scale a randomly initialised mobilenet_v3_small gives: logits about 1e-9.
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((8, 10)) * 1e-9).astype(np.float32)
    found = constant_output(logits)
    assert found is not None and found.what == "constant_output" and found.methods == ()
    assert found.measured["images"] == 8
    assert found.measured["logprob_spread"] < 1e-8
    assert found.message.startswith("DEGENERATE MODEL: its output barely depends on the input")


def test_varying_outputs_are_not_flagged_however_small_the_probabilities():
    # 1000 classes whose probabilities are all near 1e-3 (a random resnet18 on tiny noise
    # images): probabilities move by under 1e-3, log-probabilities by about 0.3.
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 1000)) * 0.1
    assert constant_output(logits) is None


def test_the_threshold_is_on_the_log_probability_spread():
    base = np.zeros((2, 3))
    below, above = base.copy(), base.copy()
    below[1, 0] = LOGPROB_SPREAD_FLOOR / 2  # moves log p_0 by about 2/3 of that
    above[1, 0] = LOGPROB_SPREAD_FLOOR * 2
    assert constant_output(below) is not None
    assert constant_output(above) is None


def test_one_image_is_flagged_only_when_its_output_is_uniform():
    uniform = constant_output(np.zeros((1, 4)))
    assert uniform is not None and "uniform" in uniform.message
    assert uniform.measured["logprob_off_uniform"] == 0.0
    assert constant_output(np.array([[2.0, 0.0, 0.0, 0.0]])) is None


def test_rows_not_predicted_are_left_out():
    logits = np.array([[0.0, 1.0], [np.nan, np.nan], [5.0, -5.0]])
    assert constant_output(logits) is None  # the two finite rows differ
    assert constant_output(np.full((3, 2), np.nan)) is None


def test_methods_whose_every_gap_is_zero_are_flagged():
    found = zero_gaps({"integrated_gradients": np.array([0.0, 0.0, np.nan]),
                       "gradient": np.array([np.nan, np.nan, np.nan]),
                       "smoothgrad": np.array([0.0, 0.3, 0.0])})
    assert found is not None and found.methods == ("integrated_gradients",)
    assert found.measured == {"largest_gap_integrated_gradients": 0.0, "images": 2,
                              "threshold": GAP_FLOOR}
    assert found.message == ("ZERO OUTPUT GAPS: F(x) = F(baseline) within 1e-06 for all 2 "
                             "images with integrated_gradients: there is nothing for the "
                             "attributions to add up to.")


def test_a_gap_just_above_the_floor_is_not_zero():
    assert zero_gaps({"ig": np.array([GAP_FLOOR * 2, 0.0])}) is None
    assert zero_gaps({"ig": np.array([-GAP_FLOOR, 0.0])}) is not None


def test_all_zero_maps_are_flagged_and_tiny_but_real_ones_are_not():
    # The random mobilenet's maps peak at 3e-13 to 1e-11: small, but not float32's floor.
    found = zero_maps({"grad_cam": 0.0, "gradient": 3e-13, "saliency": float("nan")}, 4)
    assert found is not None and found.methods == ("grad_cam",)
    assert found.measured == {"largest_value_grad_cam": 0.0, "images": 4,
                              "threshold": MAP_FLOOR}
    assert "ZERO MAPS: every map of grad_cam is zero" in found.message
    assert zero_maps({"gradient": 3e-13}, 4) is None


@pytest.mark.parametrize(("logits", "gaps", "peaks", "expected"), [
    (np.zeros((3, 10)), {"ig": np.zeros(3)}, {"ig": 1e-12},
     ["constant_output", "zero_gap"]),
    (np.eye(3), {"ig": np.ones(3)}, {"ig": 0.0}, ["zero_maps"]),
    (np.eye(3), {"ig": np.ones(3)}, {"ig": 1.0}, []),
])
def test_find_degeneracy_lists_every_finding(logits, gaps, peaks, expected):
    found = find_degeneracy(logits, gaps, peaks, 3)
    assert [f.what for f in found] == expected
    text = banner_text(found)
    assert (text is None) == (not expected)
    assert banner_text([f.to_dict() for f in found]) == text


def test_the_sheet_banner_is_one_short_line():
    found = find_degeneracy(np.zeros((3, 10)), {"ig": np.zeros(3)}, {"ig": 1e-12}, 3)
    assert banner_text(found) == (
        "DEGENERATE OUTPUT: the model's output does not depend on its input; "
        "F(x) = F(baseline) for every image (ig). The maps mean nothing.")
