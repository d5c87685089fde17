"""The registry of attribution methods: name -> batched attribution function + parameters.

CLI choices, configs and test parametrization all read :data:`METHODS`. Every function takes
a batch of normalized images ``(N, 3, H, W)`` and a target class per row ``(N,)`` and returns
attributions ``(N, 3, H, W)``; it splits the work so that no forward/backward holds more than
``max_batch`` samples (images x path steps x noise samples).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
from torch import nn

from pipeline.custom_explainers import QUADRATURE_RULES, input_gradient, integrated_gradients
from pipeline.data import black_baseline

CAPTUM_IG_METHODS: tuple[str, ...] = (
    "gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle",
)

AttributionFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, Mapping[str, Any], int],
                         torch.Tensor]


@dataclass(frozen=True)
class Param:
    """One method parameter: its type, default, and the set or range of allowed values."""

    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None

    def check(self, name: str, value: Any) -> str | None:
        """Return why ``value`` is not allowed for parameter ``name``, or None when it is."""
        ok_type = isinstance(value, self.type) and not (
            self.type is not bool and isinstance(value, bool)
        )
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            ok_type = True
        if not ok_type:
            return f"expected {name} to be {self.type.__name__}, got {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"expected {name} in {list(self.choices)}, got {value!r}"
        if self.minimum is not None and value < self.minimum:
            return f"expected {name} >= {self.minimum}, got {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"expected {name} to be finite, got {value!r}"
        return None


@dataclass(frozen=True)
class MethodSpec:
    """A registered attribution method.

    Attributes
    ----------
    name
        Registry key, used in configs (``[methods.<name>]``), the CLI and the store.
    fn
        ``fn(model, images, targets, params, max_batch) -> (N, 3, H, W)``.
    params
        Accepted parameters with defaults.
    implementation
        ``"captum"`` or ``"custom"``.
    has_delta
        Whether a completeness error ``sum(A) - (F(x) - F(baseline))`` is defined.
    stochastic
        Whether the method draws random numbers (seeded per shard by the workflow).
    """

    name: str
    fn: AttributionFn
    description: str
    implementation: str
    params: Mapping[str, Param] = field(default_factory=dict)
    has_delta: bool = False
    stochastic: bool = False

    def resolve(self, given: Mapping[str, Any], where: str = "") -> dict[str, Any]:
        """Defaults overlaid with ``given``; unknown or invalid values raise ``ValueError``."""
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            allowed = ", ".join(self.params) or "none"
            raise ValueError(
                f"unknown key {unknown[0]!r} in [methods.{self.name}]{where}; "
                f"allowed: {allowed}"
            )
        resolved = {k: p.default for k, p in self.params.items()}
        for key, value in given.items():
            problem = self.params[key].check(key, value)
            if problem:
                raise ValueError(f"[methods.{self.name}] {problem}{where}")
            resolved[key] = float(value) if self.params[key].type is float else value
        return resolved


def _groups(n: int, size: int) -> list[slice]:
    size = max(1, size)
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _gradient(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
              params: Mapping[str, Any], max_batch: int) -> torch.Tensor:
    sal = Saliency(model)
    return torch.cat([
        sal.attribute(images[s], target=targets[s], abs=params["abs"]).detach()
        for s in _groups(images.shape[0], max_batch)
    ])


def _captum_ig(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
               params: Mapping[str, Any], max_batch: int) -> torch.Tensor:
    ig = IntegratedGradients(model)
    steps = params["n_steps"]
    # Captum splits along steps only, so each call gets at most max_batch images.
    per_call = max(1, min(images.shape[0], max_batch))
    out = []
    for s in _groups(images.shape[0], per_call):
        x = images[s]
        attr = ig.attribute(
            x, baselines=black_baseline(x), target=targets[s], n_steps=steps,
            method=params["method"], internal_batch_size=max(max_batch, x.shape[0]),
        )
        out.append(attr.detach())
    return torch.cat(out)


def _smoothgrad(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                params: Mapping[str, Any], max_batch: int) -> torch.Tensor:
    tunnel = NoiseTunnel(Saliency(model))
    samples = params["nt_samples"]
    out = []
    for s in _groups(images.shape[0], max_batch):
        x = images[s]
        out.append(tunnel.attribute(
            x, nt_type="smoothgrad", nt_samples=samples, stdevs=params["stdevs"],
            target=targets[s], nt_samples_batch_size=max(1, max_batch // x.shape[0]),
        ).detach())
    return torch.cat(out)


def _custom_gradient(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                     params: Mapping[str, Any], max_batch: int) -> torch.Tensor:
    grads = torch.cat([
        input_gradient(model, images[s], targets[s])
        for s in _groups(images.shape[0], max_batch)
    ])
    return grads.abs() if params["absolute"] else grads


def _custom_ig(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
               params: Mapping[str, Any], max_batch: int) -> torch.Tensor:
    return integrated_gradients(
        model, images, targets, black_baseline(images), params["n_steps"],
        rule=params["rule"], max_batch=max_batch,
    )


_STEPS = Param(int, 50, "points on the path from the black baseline to the image", minimum=2)

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            "gradient", _gradient, "Captum Saliency: |d f_c / d x|", "captum",
            {"abs": Param(bool, True, "absolute value of the gradient (Captum's default)")},
        ),
        MethodSpec(
            "integrated_gradients", _captum_ig,
            "Captum IntegratedGradients from the normalized black image", "captum",
            {"n_steps": _STEPS,
             "method": Param(str, "gausslegendre", "Captum's approximation method",
                             choices=CAPTUM_IG_METHODS)},
            has_delta=True,
        ),
        MethodSpec(
            "smoothgrad", _smoothgrad, "Captum NoiseTunnel(Saliency), smoothgrad", "captum",
            {"nt_samples": Param(int, 10, "noisy copies per image", minimum=1),
             "stdevs": Param(float, 0.3, "noise std in normalized input space", minimum=0.0)},
            stochastic=True,
        ),
        MethodSpec(
            "custom_gradient", _custom_gradient, "our torch.autograd input gradient", "custom",
            {"absolute": Param(bool, False, "take the absolute value")},
        ),
        MethodSpec(
            "custom_integrated_gradients", _custom_ig,
            "our chunked Integrated Gradients (seed rule by default)", "custom",
            {"n_steps": _STEPS,
             "rule": Param(str, "seed", "quadrature rule", choices=QUADRATURE_RULES)},
            has_delta=True,
        ),
    )
}

DEFAULT_METHODS: tuple[str, ...] = tuple(METHODS)


def get_method(name: str) -> MethodSpec:
    """Look a method up by name; a ``KeyError`` lists the registered names."""
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(
            f"Expected a method in {', '.join(METHODS)}, got {name!r}."
        ) from None


def completeness_delta(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                       attributions: torch.Tensor) -> torch.Tensor:
    """``sum(A) - (F(x)_c - F(x_bar)_c)`` per row, black baseline; ``(N,)`` float64."""
    with torch.no_grad():
        rows = torch.arange(images.shape[0], device=images.device)
        fx = model(images)[rows, targets].double()
        fb = model(black_baseline(images))[rows, targets].double()
    return attributions.double().flatten(1).sum(1) - (fx - fb)


def attribute(spec: MethodSpec, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
              params: Mapping[str, Any], max_batch: int, seed: int | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run one method on a batch.

    Stochastic methods draw from a private RNG seeded with ``seed``, so the same batch and
    seed give the same numbers, whatever ran before.

    Returns
    -------
    (attributions, delta)
        ``(N, 3, H, W)`` float32 and ``(N,)`` float32 (NaN where undefined).
    """
    with warnings.catch_warnings():
        # Captum warns that it set requires_grad on the input, which is what we want.
        warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require")
        attr = _run_seeded(spec, model, images, targets, params, max_batch, seed)
    if spec.has_delta:
        delta = completeness_delta(model, images, targets, attr).float()
    else:
        delta = torch.full((images.shape[0],), float("nan"), device=images.device)
    return attr.float(), delta


def _run_seeded(spec: MethodSpec, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                params: Mapping[str, Any], max_batch: int, seed: int | None) -> torch.Tensor:
    if not spec.stochastic:
        return spec.fn(model, images, targets, params, max_batch)
    devices = [images.device] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(0 if seed is None else seed)
        return spec.fn(model, images, targets, params, max_batch)
