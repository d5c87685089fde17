"""Integrated Gradients to a tolerance: exact answers on tiny models, batching invariance,
and the rule in the registry, the config and the store."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.attribution.adaptive import (
    adaptive_integrated_gradients,
    interval_residuals,
    trapezoid_weights,
)
from pipeline.attribution.path_engine import integrated_gradients


class _Relu(nn.Module):
    """``F(x) = [relu(w . x + b), 0]``: one kink on the path, IG known in closed form."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x * self.w).flatten(1).sum(1) + self.b
        return torch.stack([torch.relu(z), torch.zeros_like(z)], dim=1)


def _exact_relu_ig(w: torch.Tensor, b: float, x: torch.Tensor, x0: torch.Tensor
                   ) -> torch.Tensor:
    """IG of relu(w.x + b) from x0 to x: (x - x0) * w * (the fraction of the path where the
    unit is on)."""
    z0 = float((x0 * w).sum()) + b
    z1 = float((x * w).sum()) + b
    if z0 == z1:
        on = 1.0 if z0 > 0 else 0.0
    else:
        c = -z0 / (z1 - z0)  # where z crosses 0
        on = (1 - c if z1 > 0 else c) if 0 < c < 1 else (1.0 if z0 > 0 else 0.0)
    return (x - x0) * w * on


def test_trapezoid_weights_and_residuals_are_exact() -> None:
    assert trapezoid_weights([0.0, 0.5, 1.0]).tolist() == [0.25, 0.5, 0.25]
    assert trapezoid_weights([0.0, 0.25, 0.5, 1.0]).tolist() == [0.125, 0.25, 0.375, 0.25]
    # F(a) = a^2, s = 2a: on [0, 1] the trapezoid credits 1, the truth is 1 -> residual 0;
    # on [0, 0.5] and [0.5, 1]: credits 0.25 and 0.75 for 0.25 and 0.75.
    alphas = [0.0, 0.5, 1.0]
    values = {a: a * a for a in alphas}
    slopes = {a: 2 * a for a in alphas}
    np.testing.assert_allclose(interval_residuals(alphas, values, slopes), [0.0, 0.0])
    values = {0.0: 0.0, 0.5: 0.0, 1.0: 1.0}  # a kink at 0.75: F = max(0, 4a - 3)
    slopes = {0.0: 0.0, 0.5: 0.0, 1.0: 4.0}
    np.testing.assert_allclose(interval_residuals(alphas, values, slopes), [0.0, 0.0])
    slopes = {0.0: 0.0, 0.5: 0.0, 1.0: 4.0}
    values = {0.0: 0.0, 0.5: 0.0, 1.0: 0.5}  # kink at 0.875: F(1) = 0.5, credited 1.0
    np.testing.assert_allclose(interval_residuals(alphas, values, slopes), [0.0, 0.5])


def test_a_linear_model_stops_at_the_starting_grid_with_the_exact_answer() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double()
    x = torch.randn(4, 3, 2, 2, dtype=torch.float64)
    x0 = torch.zeros_like(x)
    target = torch.tensor([0, 1, 2, 0])
    res = adaptive_integrated_gradients(model, x, target, x0, 5, tolerance=1e-3)
    w = model[1].weight.detach().view(3, 3, 2, 2)
    np.testing.assert_allclose(res.attributions.numpy(), (x * w[target]).numpy(), rtol=1e-12)
    assert res.steps.tolist() == [5, 5, 5, 5]
    assert res.evaluations == 20
    assert (res.residual < 1e-12).all()


@pytest.mark.parametrize("criterion", ["completeness", "map"])
@pytest.mark.parametrize("b", [-0.7, 0.3])
def test_one_kink_is_found_and_the_answer_converges(b: float, criterion: str) -> None:
    torch.manual_seed(1)
    w = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    x0 = -x * 0.3
    model = _Relu(w, b)
    exact = _exact_relu_ig(w, b, x[0], x0[0])
    fixed = integrated_gradients(model, x, torch.tensor([0]), x0, 17, rule="trapezoid",
                                 factor_stem=False)
    res = adaptive_integrated_gradients(model, x, torch.tensor([0]), x0, 17,
                                        tolerance=1e-4, max_steps=512, criterion=criterion)
    err = float((res.attributions[0] - exact).norm() / exact.norm())
    err_fixed = float((fixed[0] - exact).norm() / exact.norm())
    if criterion == "completeness":
        assert res.residual[0] <= 1e-4
    assert err <= 2e-4 and err < err_fixed / 10
    assert res.steps[0] < 17 + 30, "bisection homes in on the one interval with the kink"


def test_results_do_not_depend_on_batching_or_grouping() -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3), nn.Softmax(dim=1)).double()
    x = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    x0 = torch.zeros_like(x)
    target = torch.tensor([0, 1, 2, 1, 0])
    a = adaptive_integrated_gradients(model, x, target, x0, 9, tolerance=0.003, max_batch=64)
    b = adaptive_integrated_gradients(model, x, target, x0, 9, tolerance=0.003, max_batch=3,
                                      max_points=40)
    m1 = adaptive_integrated_gradients(model, x, target, x0, 9, tolerance=0.003, max_batch=64,
                                       criterion="map")
    m2 = adaptive_integrated_gradients(model, x, target, x0, 9, tolerance=0.003, max_batch=5,
                                       criterion="map", max_points=30)
    assert m1.steps.tolist() == m2.steps.tolist()
    np.testing.assert_allclose(m1.attributions.numpy(), m2.attributions.numpy(), rtol=1e-10,
                               atol=1e-14)
    assert a.steps.tolist() == b.steps.tolist()
    assert (a.steps > 9).any(), "something was refined"
    np.testing.assert_allclose(a.attributions.numpy(), b.attributions.numpy(), rtol=1e-10,
                               atol=1e-14)
    alone = [adaptive_integrated_gradients(model, x[i:i + 1], target[i:i + 1], x0[i:i + 1], 9,
                                           tolerance=0.003, max_batch=7) for i in range(5)]
    assert [int(r.steps[0]) for r in alone] == a.steps.tolist()
    np.testing.assert_allclose(torch.cat([r.attributions for r in alone]).numpy(),
                               a.attributions.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.slow
def test_a_tighter_tolerance_uses_more_points_and_gets_closer() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(8 * 3 * 3, 4), nn.Softmax(dim=1)).double()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64) * 2
    x0 = torch.zeros_like(x)
    target = torch.tensor([0, 1, 2])
    ref = integrated_gradients(model, x, target, x0, 4096, rule="gausslegendre",
                               factor_stem=False, max_batch=4096)
    errs, steps = [], []
    for tol in (0.1, 0.01, 0.001):
        r = adaptive_integrated_gradients(model, x, target, x0, 9, tolerance=tol)
        errs.append(float(((r.attributions - ref).flatten(1).norm(dim=1)
                           / ref.flatten(1).norm(dim=1)).max()))
        steps.append(int(r.steps.sum()))
        assert np.nanmax(r.residual) <= tol
    assert steps == sorted(steps) and steps[0] < steps[-1]
    assert errs[-1] < errs[0]


def test_a_zero_gap_stops_at_the_starting_grid_with_a_nan_residual() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2)).double()
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    x0 = x.clone()
    x0[1] = 0
    res = adaptive_integrated_gradients(model, x, torch.tensor([0, 0]), x0, 5)
    assert res.steps.tolist() == [5, 5]
    assert np.isnan(res.residual[0]) and res.zero_gap.tolist() == [True, False]
    assert float(res.attributions[0].abs().max()) == 0.0


@pytest.mark.parametrize(("kw", "match"), [
    ({"tolerance": 0.0}, "0 < tolerance < 1"), ({"tolerance": 1.0}, "0 < tolerance < 1"),
    ({"max_steps": 4}, "max_steps >= num_samples"), ({"max_batch": 0}, "max_batch >= 1"),
    ({"criterion": "psychic"}, "criterion in completeness, map"),
])
def test_bad_settings_are_refused(kw, match) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    x = torch.randn(1, 3, 2, 2)
    with pytest.raises(ValueError, match=match):
        adaptive_integrated_gradients(model, x, torch.tensor([0]), x * 0, 5, **kw)


def test_the_library_entry_points_take_the_rule() -> None:
    from pipeline.custom_explainers import get_custom_integrated_gradients

    torch.manual_seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2), nn.ReLU(), nn.Linear(2, 2))
    x = torch.randn(2, 3, 2, 2)
    a = get_custom_integrated_gradients(model, x, 9, rule="adaptive", tolerance=0.05,
                                        max_steps=64, max_batch=4, baseline=torch.zeros_like(x))
    b = adaptive_integrated_gradients(model, x, model(x).argmax(1), torch.zeros_like(x), 9,
                                      tolerance=0.05, max_steps=64, max_batch=4).attributions
    torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------- the registry


def test_the_method_validates_tolerance_and_max_steps() -> None:
    from pipeline.attribution.method_registry import METHODS

    spec = METHODS["custom_integrated_gradients"]
    ok = spec.resolve({"rule": "adaptive", "n_steps": 17})
    assert ok["tolerance"] == 0.01 and ok["max_steps"] == 512
    for given, match in (({"rule": "adaptive", "tolerance": 0.0}, "0 < tolerance < 1"),
                         ({"rule": "adaptive", "tolerance": 1.5}, "0 < tolerance < 1"),
                         ({"rule": "adaptive", "n_steps": 17, "max_steps": 16},
                          "max_steps >= n_steps")):
        with pytest.raises(ValueError, match=match):
            spec.resolve(given)


def test_a_config_error_names_the_key(tmp_path) -> None:
    from pipeline.errors import ConfigError
    from tests.workflow_helpers import make_images, write_config
    from workflows.config.loading import load_config

    make_images(tmp_path / "images", n=2)
    cfg = write_config(tmp_path / "a.toml", tmp_path / "images", tmp_path / "runs",
                       methods=("custom_integrated_gradients",),
                       params={"custom_integrated_gradients": {
                           "rule": '"adaptive"', "n_steps": 17, "max_steps": 8}})
    with pytest.raises(ConfigError, match=r"line \d+.*max_steps"):
        load_config(cfg)
    cfg.write_text(cfg.read_text().replace("max_steps = 8", "tolerance = 0"))
    with pytest.raises(ConfigError, match=r"tolerance"):
        load_config(cfg)


def test_a_run_stores_steps_and_residuals(tmp_path) -> None:
    import json

    import xarray as xr

    from tests.workflow_helpers import make_images, run_ok, write_config

    make_images(tmp_path / "images", n=3)
    cfg = write_config(tmp_path / "a.toml", tmp_path / "images", tmp_path / "runs",
                       methods=("gradient", "custom_integrated_gradients"),
                       params={"custom_integrated_gradients": {
                           "rule": '"adaptive"', "n_steps": 5, "tolerance": 0.05,
                           "max_steps": 40}},
                       extra="\n[report]\nenabled = false\n")
    result = run_ok(cfg)
    assert "(adaptive): path points per image" in result.output  # type: ignore[attr-defined]
    ds = xr.open_zarr(tmp_path / "runs" / "a" / "store.zarr", consolidated=False)
    ok = (ds.status == "ok").values
    steps = ds.steps.sel(explainer="custom_integrated_gradients").values
    residual = ds.residual.sel(explainer="custom_integrated_gradients").values
    assert ds.steps.dims == ("explainer", "image")
    assert np.isfinite(steps[ok]).all() and (steps[ok] >= 5).all() and (steps[ok] <= 40).all()
    assert np.isnan(steps[~ok]).all()
    assert ((residual[ok] <= 0.05) | (steps[ok] == 40)).all()
    assert np.isnan(ds.steps.sel(explainer="gradient").values).all()
    summary = json.loads((tmp_path / "runs" / "a" / "summary.json").read_text())
    facts = next(c for c in summary["completeness"]
                 if c["method"] == "custom_integrated_gradients")["adaptive"]
    assert facts["steps_max"] <= 40 and facts["zero_gap"] == 0
