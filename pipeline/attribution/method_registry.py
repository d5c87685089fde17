"""The registry of attribution methods: name -> batched attribution function + parameters.

Each method is registered beside its code, in its own module of :mod:`pipeline.attribution`
(``METHODS.add(...)`` at the bottom), and :mod:`pipeline.attribution`'s ``__init__`` imports
those modules in registration order. CLI choices, configs and test parametrization all read
:data:`METHODS`; it is read without torch: a method's module imports torch when it runs.

Every method function takes a batch of normalized images ``(N, 3, H, W)`` and a target class
per row ``(N,)`` and returns attributions ``(N, 3, H, W)``; it splits the work so that no
forward/backward holds more than ``max_batch`` samples (images x path steps x noise samples).

A method's parameters have one spelling each (``absolute``, ``rule``, ``linspace_mean``),
used in the docs and in the methods' code. A few are stored under another key or value
(``abs``, ``method``, ``seed``): the spelling that stores, ``config.resolved.json`` and the
stage hashes hold, so that an existing run stays current. Both spellings are accepted;
:meth:`MethodSpec.resolve` returns the stored form and :meth:`MethodSpec.canonical` the one
spelling.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.attribution.baselines import BASELINES
from pipeline.registry import Registry
from pipeline.validation import Rule, rule, type_problem

if TYPE_CHECKING:  # torch and captum load when a method runs, not when the registry is read
    import torch
    from torch import nn

AttributionFn = Callable[..., "torch.Tensor"]
#: ``check(canonical params) -> why they do not fit together, or None``.
ParamsCheck = Callable[[Mapping[str, Any]], "str | None"]


@dataclass(frozen=True)
class Param:
    """One method parameter: its type, default, and what values it allows.

    Attributes
    ----------
    type
        ``bool``, ``int``, ``float`` (an integer is a fine float) or ``str``.
    default
        The value when a config does not give one (in the one spelling).
    help
        One line on what the value does.
    allowed
        Choices and bounds (:class:`pipeline.validation.Rule`, with explicit open or closed
        ends).
    stored_as
        The key stores and stage hashes hold the parameter under, where it differs from its
        name (which is accepted too).
    stored_values
        ``{value: stored value}`` where a value is stored under another spelling (accepted
        too).
    """

    type: type
    default: Any
    help: str
    allowed: Rule = field(default_factory=Rule)
    stored_as: str | None = None
    stored_values: Mapping[Any, Any] = field(default_factory=dict)

    def canonical_value(self, value: Any) -> Any:
        """``value`` in the one spelling (a stored spelling mapped; an int made a float for a
        float parameter)."""
        for name, stored in self.stored_values.items():
            if value == stored and type(value) is type(stored):
                return name
        return float(value) if self.type is float else value

    def stored_value(self, value: Any) -> Any:
        """``value`` (in either spelling) as stores and stage hashes hold it."""
        value = self.canonical_value(value)
        return self.stored_values.get(value, value)

    def check(self, name: str, value: Any) -> str | None:
        """Why ``value`` is not allowed for parameter ``name``, or None when it is.

        The one validator of :mod:`pipeline.validation`: the type, then the choices and
        bounds of :attr:`allowed` (floats finite); a stored spelling of a value is accepted.
        """
        if type_problem(self.type, value) is not None:
            return f"expected {name} to be {self.type.__name__}, got {value!r}"
        return self.allowed.problem(self.canonical_value(value), name)


@dataclass(frozen=True)
class MethodSpec:
    """A registered attribution method.

    Attributes
    ----------
    name
        Registry key, used in configs (``[methods.<name>]``), the CLI and the store.
    fn
        ``fn(model, images, targets, params, max_batch, seeds) -> (N, 3, H, W)``; ``params``
        in the one spelling (:meth:`canonical`); ``seeds`` gives one RNG seed per row for
        stochastic methods (None: drawn from torch's RNG).
    params
        Accepted parameters with defaults, by name (see :class:`Param` for stored keys).
    implementation
        ``"captum"`` or ``"custom"``.
    has_delta
        Whether a completeness error ``sum(A) - (F(x) - F(baseline))`` is defined.
    stochastic
        Whether the method draws random numbers (seeded per shard by the workflow).
    check
        ``check(canonical params) -> why they do not fit together, or None``.
    space
        What the map is: ``"input"`` (an attribution to each input pixel), ``"layer"`` (a
        map at the resolution of a layer, upsampled to the input: Grad-CAM) or ``"guided"``
        (an input map weighted by a layer map: Guided Grad-CAM). See :func:`map_space`.
    hooks
        Whether the method reads or rewrites the network at its modules (layer hooks,
        modified gradients): it runs on the engine's model without BatchNorm folding and
        compilation, whose traced graphs have no module calls to hook.
    incomplete_hint
        What to do when the method's maps miss completeness, printed after a run that
        flagged some: only for methods with a delta, and naming only the method's own
        parameters. Left empty, it is made from :attr:`params` (:func:`completeness_hint`);
        a method whose parameters cannot help says what can.
    min_pass
        The fewest samples one of the method's passes holds, whatever ``max_batch`` says
        (DeepLift runs each image with its baseline: 2).
    """

    name: str
    fn: AttributionFn
    description: str
    implementation: str
    params: Mapping[str, Param] = field(default_factory=dict)
    has_delta: bool = False
    stochastic: bool = False
    check: ParamsCheck | None = None
    space: str = "input"
    hooks: bool = False
    incomplete_hint: str = ""
    min_pass: int = 1

    def __post_init__(self) -> None:
        if self.has_delta and not self.incomplete_hint:
            object.__setattr__(self, "incomplete_hint", completeness_hint(self.params))

    def param_name(self, key: str) -> str | None:
        """The name of the parameter ``key`` spells (its name or its stored key), or None."""
        if key in self.params:
            return key
        return next((n for n, p in self.params.items() if p.stored_as == key), None)

    def param(self, key: str) -> Param | None:
        """The parameter ``key`` spells (its name or its stored key), or None."""
        name = self.param_name(key)
        return None if name is None else self.params[name]

    def canonical(self, table: Mapping[str, Any]) -> dict[str, Any]:
        """``table`` (any spelling, e.g. a resolved one) in the one spelling, defaults filled
        in; keys that name no parameter are left out. Nothing is checked: see
        :meth:`resolve`."""
        out = {name: p.default for name, p in self.params.items()}
        for key, value in table.items():
            name = self.param_name(key)
            if name is not None:
                out[name] = self.params[name].canonical_value(value)
        return out

    def stored(self, canonical: Mapping[str, Any]) -> dict[str, Any]:
        """A canonical table as stores and stage hashes hold it (keys in :attr:`params`'
        order)."""
        return {p.stored_as or name: p.stored_value(canonical[name])
                for name, p in self.params.items()}

    def resolve(self, given: Mapping[str, Any], where: str = "") -> dict[str, Any]:
        """Defaults overlaid with ``given`` (either spelling), checked, in the stored form.

        Raises
        ------
        ValueError
            An unknown key, a parameter given twice (under both spellings), a value its
            :class:`Param` does not allow, or parameters that do not fit together.
        """
        resolved = {name: p.default for name, p in self.params.items()}
        seen: dict[str, str] = {}
        for key, value in given.items():
            name = self.param_name(key)
            if name is None:
                allowed = ", ".join(self.params) or "none"
                raise ValueError(f"unknown key {key!r} in [methods.{self.name}]{where}; "
                                 f"allowed: {allowed}")
            if name in seen:
                raise ValueError(f"[methods.{self.name}] expected one of {seen[name]} and "
                                 f"{key} (one parameter), got both{where}")
            seen[name] = key
            problem = self.params[name].check(key, value)
            if problem:
                raise ValueError(f"[methods.{self.name}] {problem}{where}")
            resolved[name] = self.params[name].canonical_value(value)
        if self.check is not None:
            problem = self.check(resolved)
            if problem:
                raise ValueError(f"[methods.{self.name}] {problem}{where}")
        return self.stored(resolved)


def completeness_hint(params: Mapping[str, Param]) -> str:
    """What a path method's own parameters can do about maps that miss completeness, in one
    line; empty when they can do nothing.

    Each parameter is named only when the method has it, and each value only when it is
    allowed and differs from the default (advice to set what is already set helps no one):
    more path points (``n_steps``), a better rule at the same cost (``gausslegendre``, where
    it is a choice and not the default), or points placed where an image needs them
    (``adaptive`` with its ``tolerance``).
    """
    fixes = []
    if "n_steps" in params:
        fixes.append(f"raise its n_steps (default {params['n_steps'].default})")
    path_rule = params.get("rule")
    choices = () if path_rule is None else path_rule.allowed.choices or ()
    if path_rule is not None and "gausslegendre" in choices \
            and path_rule.default != "gausslegendre":
        fixes.append('use rule = "gausslegendre" (more exact at the same cost)')
    if path_rule is not None and "adaptive" in choices and "tolerance" in params:
        fixes.append('use rule = "adaptive" with its tolerance (path points where an image '
                     "needs them)")
    if not fixes:
        return ""
    return ", or ".join(fixes) + " (docs/methods.md, Completeness)"


#: Every attribution method, in registration order (:mod:`pipeline.attribution` loads them).
METHODS: Registry[MethodSpec] = Registry("method")

#: What the shipped configs run; the registry may hold more (e.g. ``input_x_gradient``).
DEFAULT_METHODS: tuple[str, ...] = (
    "gradient", "integrated_gradients", "smoothgrad", "custom_gradient",
    "custom_integrated_gradients",
)

# ------------------------------------------------------------------ parameters shared by methods

#: Path points of the Integrated Gradients methods.
STEPS = Param(int, 50, "points on the path from the baseline to the image", rule(ge=2))
#: The path methods' baseline choice (see :mod:`pipeline.attribution.baselines`).
BASELINE_PARAMS: dict[str, Param] = {
    "baseline": Param(str, "black", "where the path starts: black, blur, uniform or mean",
                      rule(choices=tuple(BASELINES))),
    "baseline_sigma": Param(float, 10.0, "Gaussian sigma in pixels of the blur baseline",
                            rule(ge=0.1)),
}
#: The layer a layer method reads (see :func:`pipeline.attribution.cam.find_layer`).
LAYER = Param(str, "", "module name of the layer to read (e.g. layer4, features); empty: "
              "the last module with a spatial output (N, C, h, w) or a grid of tokens")


def get_method(name: str) -> MethodSpec:
    """Look a method up by name; a ``KeyError`` lists the registered names."""
    return METHODS.get_or_raise(name)


def image_seed(run_seed: int, index: int) -> int:
    """The RNG seed of image ``index`` in a run: independent of shards and batching."""
    return int(np.random.SeedSequence([run_seed, index]).generate_state(1)[0])


def map_space(spec: MethodSpec, params: Mapping[str, Any], size: int | None = None,
              grid: tuple[int, int] | None = None) -> str:
    """What a method's map is, in words, for the store.

    ``"input"``, or the layer it comes from, e.g.
    ``"layer:layer4 (7x7), upsampled (bilinear) to 224x224"``.
    """
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
    black image).
    """
    from pipeline.data.images import black_baseline

    base = black_baseline(images) if baselines is None else baselines
    return attributions.double().flatten(1).sum(1) - output_gap(model, images, targets, base)


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
    batch, on any resume. The path methods' baseline is built once and used for both the
    attributions and their completeness error.

    Parameters
    ----------
    params
        The method's parameters in either spelling (e.g. ``cfg.methods[name]``, stored form);
        missing ones take their defaults.
    info
        When given, receives what a method reports per image besides the maps
        (``rule = "adaptive"``: ``steps``, ``residual``, ``zero_gap``, numpy ``(N,)``).
    norm
        The images' :class:`pipeline.data.images.Normalization` (the black baseline is
        ``-mean / std``); ImageNet's by default.

    Returns
    -------
    (attributions, delta, gap)
        ``(N, 3, H, W)`` float32; ``(N,)`` float32 completeness error
        ``sum(A) - (F(x) - F(x_bar))`` and ``(N,)`` float32 output gap ``F(x) - F(x_bar)``
        (both NaN where the method has no completeness property). ``|delta| / |gap|`` is the
        relative completeness error.
    """
    import torch

    from pipeline.attribution.baselines import method_baselines

    named = spec.canonical(params)
    extra: dict[str, Any] = {}
    base = None
    if "baseline" in spec.params:  # one baseline for the attributions and their delta
        base = method_baselines(images, named, seeds, None, norm)
        extra["baselines"] = base
    with warnings.catch_warnings():
        # Captum warns that it set requires_grad on the input, which is what we want.
        warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require")
        # ... and that it hooks the nonlinearities (DeepLift, guided backprop): ours to do.
        warnings.filterwarnings("ignore", message="Setting forward, backward hooks")
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        attr = spec.fn(model, images, targets, named, max_batch, seeds, **extra)
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
