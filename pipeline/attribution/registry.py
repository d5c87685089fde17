"""The registry of attribution methods: name -> batched attribution function + parameters.

CLI choices, configs and test parametrization all read :data:`METHODS`. Every function takes
a batch of normalized images ``(N, 3, H, W)`` and a target class per row ``(N,)`` and returns
attributions ``(N, 3, H, W)``; it splits the work so that no forward/backward holds more than
``max_batch`` samples (images x path steps x noise samples).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.attribution.baselines import BASELINES
from pipeline.attribution.batching import chunk_slices
from pipeline.attribution.quadrature import QUADRATURE_RULES

if TYPE_CHECKING:  # torch and captum load when a method runs, not when the registry is read
    import torch
    from torch import nn

CAPTUM_IG_METHODS: tuple[str, ...] = (
    "gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle",
)

AttributionFn = Callable[..., "torch.Tensor"]
BASELINE_NAMES: tuple[str, ...] = tuple(BASELINES)


@dataclass(frozen=True)
class Param:
    """One method parameter: its type, default, and the set or range of allowed values."""

    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    #: Open interval ``(low, high)`` the value must lie in.
    between: tuple[float, float] | None = None

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
        if self.between is not None and not self.between[0] < value < self.between[1]:
            low, high = self.between
            return f"expected {low:g} < {name} < {high:g}, got {value!r}"
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
        ``fn(model, images, targets, params, max_batch, seeds) -> (N, 3, H, W)``; ``seeds``
        gives one RNG seed per row for stochastic methods (None: drawn from torch's RNG).
    params
        Accepted parameters with defaults.
    implementation
        ``"captum"`` or ``"custom"``.
    has_delta
        Whether a completeness error ``sum(A) - (F(x) - F(baseline))`` is defined.
    stochastic
        Whether the method draws random numbers (seeded per shard by the workflow).
    space
        What the map is: ``"input"`` (an attribution to each input pixel), ``"layer"`` (a
        map at the resolution of a layer, upsampled to the input: Grad-CAM) or ``"guided"``
        (an input map weighted by a layer map: Guided Grad-CAM). See :func:`map_space`.
    hooks
        Whether the method reads or rewrites the network at its modules (layer hooks,
        modified gradients): it runs on the engine's model without BatchNorm folding and
        compilation, whose traced graphs have no module calls to hook.
    """

    name: str
    fn: AttributionFn
    description: str
    implementation: str
    params: Mapping[str, Param] = field(default_factory=dict)
    has_delta: bool = False
    stochastic: bool = False
    #: ``check(resolved_params) -> why they do not fit together, or None``.
    check: Callable[[Mapping[str, Any]], str | None] | None = None
    space: str = "input"
    hooks: bool = False
    #: What to do when the method's maps miss completeness (for methods with a delta).
    incomplete_hint: str = ('raise its n_steps, or use rule = "gausslegendre" (README, '
                            'Completeness)')
    #: The fewest samples one of the method's passes holds, whatever ``max_batch`` says
    #: (DeepLift runs each image with its baseline: 2).
    min_pass: int = 1

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
        if self.check is not None:
            problem = self.check(resolved)
            if problem:
                raise ValueError(f"[methods.{self.name}] {problem}{where}")
        return resolved


def _gradient(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
              params: Mapping[str, Any], max_batch: int,
              _seeds: Sequence[int] | None = None) -> torch.Tensor:
    import torch
    from captum.attr import Saliency

    sal = Saliency(model)
    return torch.cat([
        sal.attribute(images[s], target=targets[s], abs=params["abs"]).detach()
        for s in chunk_slices(images.shape[0], max_batch)
    ])


def _input_x_gradient(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                      _params: Mapping[str, Any], max_batch: int,
                      _seeds: Sequence[int] | None = None) -> torch.Tensor:
    import torch
    from captum.attr import InputXGradient

    ixg = InputXGradient(model)
    return torch.cat([
        ixg.attribute(images[s], target=targets[s]).detach()
        for s in chunk_slices(images.shape[0], max_batch)
    ])


def _baselines(images: torch.Tensor, params: Mapping[str, Any],
               seeds: Sequence[int] | None, given: torch.Tensor | None,
               norm: Any = None) -> torch.Tensor:
    from pipeline.attribution.baselines import make_baseline

    if given is not None:
        return given
    return make_baseline(params.get("baseline", "black"), images, params, seeds, norm)


def _captum_ig(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
               params: Mapping[str, Any], max_batch: int,
               seeds: Sequence[int] | None = None, *,
               baselines: torch.Tensor | None = None) -> torch.Tensor:
    import torch
    from captum.attr import IntegratedGradients

    base = _baselines(images, params, seeds, baselines)
    ig = IntegratedGradients(model)
    steps = params["n_steps"]
    # Captum splits along steps only, so each call gets at most max_batch images.
    per_call = max(1, min(images.shape[0], max_batch))
    out = []
    for s in chunk_slices(images.shape[0], per_call):
        x = images[s]
        attr = ig.attribute(
            x, baselines=base[s], target=targets[s], n_steps=steps,
            method=params["method"], internal_batch_size=max(max_batch, x.shape[0]),
        )
        out.append(attr.detach())
    return torch.cat(out)


def _grad_cam(*args: Any, **kwargs: Any) -> torch.Tensor:
    from pipeline.attribution.cam import grad_cam

    return grad_cam(*args, **kwargs)


def _guided_grad_cam(*args: Any, **kwargs: Any) -> torch.Tensor:
    from pipeline.attribution.cam import guided_grad_cam

    return guided_grad_cam(*args, **kwargs)


def _guided_backprop(*args: Any, **kwargs: Any) -> torch.Tensor:
    from pipeline.attribution.propagation import guided_backprop

    return guided_backprop(*args, **kwargs)


def _deeplift(*args: Any, **kwargs: Any) -> torch.Tensor:
    from pipeline.attribution.propagation import deeplift

    return deeplift(*args, **kwargs)


def image_seed(run_seed: int, index: int) -> int:
    """The RNG seed of image ``index`` in a run: independent of shards and batching."""
    return int(np.random.SeedSequence([run_seed, index]).generate_state(1)[0])


def _noisy_chunks(images: torch.Tensor, seeds: Sequence[int], samples: int, stdev: float,
                  max_batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (noisy inputs, row index) chunks of at most ``max_batch`` samples.

    Each image's noise comes from its own generator on the images' device, seeded with
    ``seeds[row]``: the numbers do not depend on the chunking or the batch an image is in,
    and nothing is drawn on the CPU and copied over for a GPU batch. CPU and CUDA generators
    draw different numbers for the same seed (the store records the device of each shard).
    """
    import torch

    parts: list[torch.Tensor] = []
    rows: list[torch.Tensor] = []
    held = 0
    for i in range(images.shape[0]):
        gen = torch.Generator(device=images.device).manual_seed(int(seeds[i]))
        # float32 draws whatever the input dtype, so a float64 check sees the same noise.
        noise = torch.randn((samples, *images.shape[1:]), generator=gen,
                            device=images.device, dtype=torch.float32)
        noise = noise.to(images.dtype).mul_(stdev)
        j = 0
        while j < samples:
            take = min(samples - j, max_batch - held)
            parts.append(images[i] + noise[j:j + take])
            rows.append(torch.full((take,), i, device=images.device, dtype=torch.long))
            held, j = held + take, j + take
            if held == max_batch:
                yield torch.cat(parts), torch.cat(rows)
                parts, rows, held = [], [], 0
    if parts:
        yield torch.cat(parts), torch.cat(rows)


def _smoothgrad(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                params: Mapping[str, Any], max_batch: int,
                seeds: Sequence[int] | None = None) -> torch.Tensor:
    """NoiseTunnel(Saliency) smoothgrad semantics: mean |grad| over ``nt_samples`` noisy copies."""
    import torch
    from captum.attr import Saliency

    samples, stdev = params["nt_samples"], params["stdevs"]
    if seeds is None:
        seeds = torch.randint(0, 2**62, (images.shape[0],)).tolist()
    sal = Saliency(model)
    acc = torch.zeros(images.shape, dtype=torch.float64, device=images.device)
    for noisy, rows in _noisy_chunks(images, seeds, samples, stdev, max(1, max_batch)):
        grads = sal.attribute(noisy, target=targets[rows], abs=params["abs"]).detach()
        acc.index_add_(0, rows, grads.to(torch.float64))
    return (acc / samples).to(images.dtype)


def _custom_gradient(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                     params: Mapping[str, Any], max_batch: int,
                     _seeds: Sequence[int] | None = None) -> torch.Tensor:
    import torch

    from pipeline.custom_explainers import input_gradient

    grads = torch.cat([
        input_gradient(model, images[s], targets[s])
        for s in chunk_slices(images.shape[0], max_batch)
    ])
    return grads.abs() if params["absolute"] else grads


def _custom_ig(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
               params: Mapping[str, Any], max_batch: int,
               seeds: Sequence[int] | None = None, *,
               baselines: torch.Tensor | None = None) -> Any:
    from pipeline.custom_explainers import integrated_gradients

    base = _baselines(images, params, seeds, baselines)
    if params["rule"] == "adaptive":
        from pipeline.attribution.adaptive import adaptive_integrated_gradients

        res = adaptive_integrated_gradients(
            model, images, targets, base, params["n_steps"], tolerance=params["tolerance"],
            max_steps=params["max_steps"], max_batch=max_batch, criterion=params["criterion"])
        return res.attributions, {"steps": res.steps, "residual": res.residual,
                                  "zero_gap": res.zero_gap}
    return integrated_gradients(
        model, images, targets, base, params["n_steps"], rule=params["rule"],
        max_batch=max_batch,
    )


def _check_adaptive(params: Mapping[str, Any]) -> str | None:
    if params["rule"] == "adaptive" and params["max_steps"] < params["n_steps"]:
        return (f"expected max_steps >= n_steps ({params['n_steps']}, the starting grid of "
                f"rule adaptive), got {params['max_steps']}")
    return None


_STEPS = Param(int, 50, "points on the path from the baseline to the image", minimum=2)
#: The IG methods' baseline choice (see :mod:`pipeline.attribution.baselines`).
_BASELINE = {
    "baseline": Param(str, "black", "where the path starts: black, blur, uniform or mean",
                      choices=BASELINE_NAMES),
    "baseline_sigma": Param(float, 10.0, "Gaussian sigma in pixels of the blur baseline",
                            minimum=0.1),
}

#: The layer a layer method reads (see :func:`pipeline.attribution.cam.find_layer`).
_LAYER = Param(str, "", "module name of the layer to read (e.g. layer4, features); empty: "
               "the last module with a spatial output (N, C, h, w) or a grid of tokens")

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            "gradient", _gradient, "Captum Saliency: |d f_c / d x|", "captum",
            {"abs": Param(bool, True, "absolute value of the gradient (Captum's default)")},
        ),
        MethodSpec(
            "integrated_gradients", _captum_ig,
            "Captum IntegratedGradients (from the black image by default)", "captum",
            {"n_steps": _STEPS,
             "method": Param(str, "gausslegendre", "Captum's approximation method",
                             choices=CAPTUM_IG_METHODS), **_BASELINE},
            has_delta=True,
        ),
        MethodSpec(
            "smoothgrad", _smoothgrad,
            "Captum Saliency averaged over noisy copies (NoiseTunnel smoothgrad semantics)",
            "captum",
            {"nt_samples": Param(int, 10, "noisy copies per image", minimum=1),
             "stdevs": Param(float, 0.3, "noise std in normalized input space", minimum=0.0),
             "abs": Param(bool, True, "absolute gradients, as Saliency's default")},
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
             "rule": Param(str, "seed", "quadrature rule; adaptive: refine to a tolerance "
                           "(n_steps is then the starting grid)",
                           choices=(*QUADRATURE_RULES, "adaptive")),
             "tolerance": Param(float, 0.01, "rule adaptive: stop when the summed interval "
                                "residuals are at most this fraction of |F(x) - F(baseline)|",
                                between=(0.0, 1.0)),
             "max_steps": Param(int, 512, "rule adaptive: the most path points an image may "
                                "use", minimum=2),
             "criterion": Param(str, "completeness", "rule adaptive: stop on the completeness "
                                "residual, or on the map's estimated L2 error",
                                choices=("completeness", "map")),
             **_BASELINE},
            has_delta=True, check=_check_adaptive,
        ),
        MethodSpec(
            "input_x_gradient", _input_x_gradient,
            "Captum InputXGradient: x * d f_c / d x", "captum",
        ),
        MethodSpec(
            "grad_cam", _grad_cam,
            "Captum LayerGradCam at a layer, upsampled (bilinear) to the input", "captum",
            {"layer": _LAYER}, space="layer", hooks=True,
        ),
        MethodSpec(
            "guided_grad_cam", _guided_grad_cam,
            "Captum GuidedGradCam: guided backprop times the upsampled Grad-CAM", "captum",
            {"layer": _LAYER}, space="guided", hooks=True,
        ),
        MethodSpec(
            "guided_backprop", _guided_backprop,
            "Captum GuidedBackprop (positive gradients through each ReLU), one ReLU per use",
            "captum", hooks=True,
        ),
        MethodSpec(
            "deeplift", _deeplift,
            "Captum DeepLift (rescale rule) from the baseline, one nonlinearity per use",
            "captum", dict(_BASELINE), has_delta=True, hooks=True, min_pass=2,
            incomplete_hint="DeepLift's rules add up on ReLU and max-pool networks only; "
                            "GELU, SiLU, Hardswish, LayerNorm and attention pass the plain "
                            "gradient (README, the methods)",
        ),
    )
}

#: What the shipped configs run; the registry may hold more (e.g. ``input_x_gradient``).
DEFAULT_METHODS: tuple[str, ...] = (
    "gradient", "integrated_gradients", "smoothgrad", "custom_gradient",
    "custom_integrated_gradients",
)


def get_method(name: str) -> MethodSpec:
    """Look a method up by name; a ``KeyError`` lists the registered names."""
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(
            f"Expected a method in {', '.join(METHODS)}, got {name!r}."
        ) from None


def map_space(spec: MethodSpec, params: Mapping[str, Any], size: int | None = None,
              grid: tuple[int, int] | None = None) -> str:
    """What a method's map is, in words, for the store: ``"input"``, or the layer it comes
    from, e.g. ``"layer:layer4 (7x7), upsampled (bilinear) to 224x224"``."""
    if spec.space == "input":
        return "input"
    where = f"layer:{params.get('layer', '')}"
    if grid is not None:
        where += f" ({grid[0]}x{grid[1]})"
    if size is not None:
        mode = "bilinear" if spec.space == "layer" else "nearest"  # Captum's GuidedGradCam
        where += f", upsampled ({mode}) to {size}x{size}"
    return where if spec.space == "layer" else f"input, weighted by {where}"


def completeness_delta(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                       attributions: torch.Tensor, baselines: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """``sum(A) - (F(x)_c - F(x_bar)_c)`` per row; ``(N,)`` float64.

    ``baselines`` ``(N, 3, H, W)`` are the ones the attributions started from (default: the
    black image)."""
    import torch

    from pipeline.data.images import black_baseline

    base = black_baseline(images) if baselines is None else baselines
    with torch.no_grad():
        rows = torch.arange(images.shape[0], device=images.device)
        fx = model(images)[rows, targets].double()
        fb = model(base)[rows, targets].double()
    return attributions.double().flatten(1).sum(1) - (fx - fb)


def output_gap(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
               baselines: torch.Tensor) -> torch.Tensor:
    """``F(x)_c - F(x_bar)_c`` per row, ``(N,)`` float64: what the attributions must add up
    to (the denominator of the relative completeness error)."""
    import torch

    with torch.no_grad():
        rows = torch.arange(images.shape[0], device=images.device)
        return (model(images)[rows, targets].double()
                - model(baselines)[rows, targets].double())


def attribute(spec: MethodSpec, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
              params: Mapping[str, Any], max_batch: int, seeds: Sequence[int] | None = None,
              info: dict[str, Any] | None = None, norm: Any = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run one method on a batch.

    Stochastic methods (and the ``uniform`` baseline) draw each row's numbers from a generator
    seeded with ``seeds[row]`` (see :func:`image_seed`), so a row gets the same numbers in any
    batch, on any resume. The IG methods' baseline is built once and used for both the
    attributions and their completeness error.

    Returns
    -------
    (attributions, delta, gap)
        ``(N, 3, H, W)`` float32; ``(N,)`` float32 completeness error
        ``sum(A) - (F(x) - F(x_bar))`` and ``(N,)`` float32 output gap ``F(x) - F(x_bar)``
        (both NaN where the method has no completeness property). ``|delta| / |gap|`` is the
        relative completeness error.

    ``info``, when given, receives what a method reports per image besides the maps
    (``rule = "adaptive"``: ``steps``, ``residual``, ``zero_gap``, numpy ``(N,)``). ``norm`` is
    the images' :class:`pipeline.data.images.Normalization` (the black baseline is ``-mean / std``);
    ImageNet's by default.
    """
    import torch

    extra: dict[str, Any] = {}
    base = None
    if "baseline" in spec.params:  # one baseline for the attributions and their delta
        base = _baselines(images, params, seeds, None, norm)
        extra["baselines"] = base
    with warnings.catch_warnings():
        # Captum warns that it set requires_grad on the input, which is what we want.
        warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require")
        # ... and that it hooks the nonlinearities (DeepLift, guided backprop): ours to do.
        warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        attr = spec.fn(model, images, targets, params, max_batch, seeds, **extra)
    if isinstance(attr, tuple):  # (maps, per-image facts)
        attr, facts = attr
        if info is not None:
            info.update(facts)
    if spec.has_delta:
        from pipeline.data.images import black_baseline

        gap = output_gap(model, images, targets,
                         black_baseline(images, norm) if base is None else base)
        delta = (attr.double().flatten(1).sum(1) - gap).float()
        gap = gap.float()
    else:
        delta = torch.full((images.shape[0],), float("nan"), device=images.device)
        gap = delta.clone()
    return attr.float(), delta, gap


def relative_completeness_error(delta: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """``|delta| / |gap|`` elementwise (NaN where either is NaN or the gap is zero): how far
    the attributions miss what they must add up to, as a fraction of it."""
    d = np.abs(np.asarray(delta, dtype=np.float64))
    g = np.abs(np.asarray(gap, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(g > 0, d / g, np.nan)
