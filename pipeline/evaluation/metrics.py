"""Attribution-quality metrics for the ``evaluate`` stage: name -> metric function.

The registry :data:`METRICS` (a :class:`pipeline.registry.Registry`, each metric registered
beside its function with :func:`register_metric`) is read without torch (configs, the CLI);
the model-based metrics import torch when they run. Every metric takes 2-D maps per image:

``attr``
    ``(N, H, W)`` float: channel-summed attributions (the store's ``aggregated`` array).
``mask``
    ``(N, H, W)`` bool: the ground-truth region (localisation metrics only).

and returns one float per image ``(N,)`` (float64). A row of ``attr`` holding any NaN (an image
that was not explained: the store fills such rows with NaN) scores NaN; so does a row where the
metric is undefined (an empty mask, no positive attribution, ...).

The definitions follow Quantus 0.6 (``tests/evaluation/test_metrics.py`` checks the
agreement), except where a docstring says otherwise. :func:`random_attribution` gives the
seeded uniform-noise maps of the "random" row every metric is read against, and
:func:`cascading_randomisation` is the model-parameter randomisation test (Adebayo et al.
2018), separate from the registry because it re-runs the explanation method.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from pipeline.registry import Registry

if TYPE_CHECKING:  # torch loads when a model-based metric runs, not when the registry is read
    import torch
    from torch import nn

#: ``forward(x) -> probabilities``: ``(B, 3, H, W)`` normalized images to ``(B, C)`` outputs.
Forward = Callable[["torch.Tensor"], "torch.Tensor"]
#: ``explain(model, images, targets) -> (N, H, W)`` maps, for :func:`cascading_randomisation`.
Explain = Callable[["nn.Module", "torch.Tensor", "torch.Tensor"], np.ndarray]
F = TypeVar("F", bound=Callable[..., Any])

FLIP_MODES: tuple[str, ...] = ("deletion", "insertion")
#: Baselines (see :mod:`pipeline.attribution.baselines`) that pixel flipping accepts: the
# deterministic ones.
FLIP_BASELINES: tuple[str, ...] = ("black", "blur", "mean")
#: torchvision ``resnet18`` module names for :func:`cascading_randomisation`, top-down; the
#: groups cover every parameter of the network.
RESNET_LAYER_GROUPS: tuple[tuple[str, ...], ...] = (
    ("fc",), ("layer4",), ("layer3",), ("layer2",), ("layer1", "conv1", "bn1"),
)

#: How many layer groups the randomisation test uses (the store's ``layer_group`` axis).
LAYER_GROUPS = len(RESNET_LAYER_GROUPS)


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def layer_groups(network: nn.Module, count: int = LAYER_GROUPS) -> list[list[str]]:
    """Module names of ``network`` in ``count`` groups, top-down, for
    :func:`cascading_randomisation`.

    A torchvision ResNet gets :data:`RESNET_LAYER_GROUPS`. Any other network is cut into
    units: its top-level modules with parameters, the largest (by parameter count) opened
    into its own children until there are at least ``count`` units or none opens further.
    The last unit (the classifier) is the first group; the others, from the top down, are
    split into ``count - 1`` contiguous groups of near-equal unit counts. A network with
    fewer units gets fewer groups. Parameters held directly by an opened container (ViT's
    class token and position embedding) belong to no group and stay as they are.
    """
    names = {name for name, _ in network.named_modules()}
    if all(n in names for group in RESNET_LAYER_GROUPS for n in group):
        return [list(g) for g in RESNET_LAYER_GROUPS]
    units = [(n, m) for n, m in network.named_children() if _has_params(m)]
    while len(units) < count:
        opened = False
        for i, (name, module) in sorted(
                enumerate(units), key=lambda u: -sum(p.numel() for p in u[1][1].parameters())):
            children = [(f"{name}.{c}", m) for c, m in module.named_children()
                        if _has_params(m)]
            if len(children) > 1:
                units[i:i + 1] = children
                opened = True
                break
        if not opened:
            break
    if not units:
        return []
    head, rest = [units[-1][0]], [n for n, _ in reversed(units[:-1])]
    parts = [list(p) for p in np.array_split(np.asarray(rest, dtype=object), count - 1)
             if len(p)] if rest else []
    return [head, *[[str(n) for n in p] for p in parts]]


@dataclass(frozen=True)
class MetricSpec:
    """A registered attribution-quality metric.

    Attributes
    ----------
    name
        Registry key.
    fn
        ``fn(attr)`` when neither a mask nor a model is needed, ``fn(attr, mask)`` when
        ``needs_mask``, ``fn(forward, images, attr, targets, **params)`` when ``needs_model``.
        Returns ``(N,)`` scores, or ``(scores (N,), curves (N, steps + 1))`` when ``curve``.
    description
        One line for listings.
    higher_is_better
        The direction of a better explanation.
    needs_mask
        Takes a ground-truth mask ``(N, H, W)`` bool.
    needs_model
        Runs the model (``forward``) on perturbed images.
    curve
        Also returns the per-step curve (deletion, insertion).
    """

    name: str
    fn: Callable[..., Any]
    description: str
    higher_is_better: bool
    needs_mask: bool = False
    needs_model: bool = False
    curve: bool = False


#: The metrics by name, in registration order (the order listings and the report use), each
#: added beside its function by :func:`register_metric`.
METRICS: Registry[MetricSpec] = Registry("metric")


def register_metric(name: str, description: str, *, higher_is_better: bool,
                    needs_mask: bool = False, needs_model: bool = False, curve: bool = False
                    ) -> Callable[[F], F]:
    """Decorator: register the function in :data:`METRICS` under ``name`` (see
    :class:`MetricSpec` for the arguments); the function itself is returned unchanged."""
    def register(fn: F) -> F:
        METRICS.add(name, MetricSpec(name, fn, description, higher_is_better, needs_mask,
                                     needs_model, curve))
        return fn
    return register


def default_metrics() -> tuple[str, ...]:
    """The metrics ``--evaluate`` turns on: every registered metric that needs no mask, so
    that any dataset (labelled or not, with masks or not) gets a score from each."""
    return tuple(name for name in METRICS if not METRICS[name].needs_mask)


def target_probabilities(backbone: Callable[[torch.Tensor], torch.Tensor]
                         ) -> Forward:
    """The model-based metrics' forward: class probabilities whatever the run's head (a
    softmax over the backbone's logits, in float32)."""
    return lambda x: backbone(x).float().softmax(dim=1)


def score_maps(spec: MetricSpec, maps: np.ndarray, masks: np.ndarray | None, forward: Forward,
               images: torch.Tensor, targets: torch.Tensor, params: Mapping[str, Any]
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """One metric on ``maps`` ``(R, H, W)``, called as its kind needs: ``(scores (R,),
    curves (R, steps + 1) or None)``. A localisation metric is NaN where ``masks``
    ``(R, H, W)`` is empty; ``params`` go to the model-based ones (:func:`pixel_flipping`'s
    keywords)."""
    if spec.needs_model:
        score, curve = spec.fn(forward, images, maps, targets, **params)
        return np.asarray(score), np.asarray(curve)
    if spec.needs_mask:
        assert masks is not None, f"{spec.name} needs masks"
        score = np.asarray(spec.fn(maps, masks), dtype=np.float64)
        score[~masks.any(axis=(1, 2))] = np.nan
        return score, None
    return np.asarray(spec.fn(maps), dtype=np.float64), None


def get_metric(name: str) -> MetricSpec:
    """Look a metric up by name; a ``KeyError`` lists the registered names."""
    return METRICS.get_or_raise(name)


# ------------------------------------------------------------------------------- helpers


def _flat(attr: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` maps as ``(N, H * W)`` float64 (a copy)."""
    a = np.asarray(attr)
    if a.ndim != 3:
        raise ValueError(f"Expected maps shaped (N, H, W), got shape {a.shape}.")
    return a.reshape(a.shape[0], -1).astype(np.float64)


def _flat_mask(mask: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` masks as ``(N, H * W)`` bool, checked against the maps' shape."""
    m = np.asarray(mask)
    if m.shape != like.shape:
        raise ValueError(f"Expected a mask shaped like the maps {like.shape}, got {m.shape}.")
    return m.reshape(m.shape[0], -1).astype(bool)


def _finite_rows(flat: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: rows without NaN or inf (rows of unexplained images are all NaN)."""
    return np.isfinite(flat).all(axis=1)


def _descending_order(flat: np.ndarray) -> np.ndarray:
    """``(N, P)`` pixel indices by attribution, highest first; ties: lower flat index first
    (row-major, ``y * W + x``), via a stable sort."""
    return np.argsort(-flat, axis=1, kind="stable")


# --------------------------------------------------------------------- localisation metrics


@register_metric("relevance_mass_accuracy",
                 "positive attribution inside the mask / all positive",
                 higher_is_better=True, needs_mask=True)
def relevance_mass_accuracy(attr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Share of the positive attribution that falls inside the mask (Arras et al. 2022).

    Parameters
    ----------
    attr
        ``(N, H, W)`` maps; negative values are clipped to 0 first (Quantus uses the values as
        given, so the two agree on non-negative maps).
    mask
        ``(N, H, W)`` bool.

    Returns
    -------
    np.ndarray
        ``(N,)`` float64 in ``[0, 1]``; NaN where the mask is empty, there is no positive
        attribution, or the row holds NaN.
    """
    a = _flat(attr)
    m = _flat_mask(mask, np.asarray(attr))
    pos = np.clip(a, 0.0, None)
    inside = np.where(m, pos, 0.0).sum(axis=1)
    total = pos.sum(axis=1)
    ok = (total > 0) & m.any(axis=1) & _finite_rows(a)
    return np.where(ok, inside / np.where(ok, total, 1.0), np.nan)


@register_metric("relevance_rank_accuracy",
                 "share of the K top-attributed pixels inside the mask (K = mask size)",
                 higher_is_better=True, needs_mask=True)
def relevance_rank_accuracy(attr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fraction of the ``K`` highest-attributed pixels that lie in the mask, ``K = |mask|``
    (Arras et al. 2022).

    Ties are broken by a stable sort of the descending attribution: among equal values the
    pixel with the lower flat index (row-major, ``y * W + x``) ranks higher. Quantus sorts
    with numpy's default (unstable) sort, so the two agree whenever no tie straddles the
    ``K``-th place.

    Parameters
    ----------
    attr
        ``(N, H, W)`` maps (signed values are ranked as given).
    mask
        ``(N, H, W)`` bool.

    Returns
    -------
    np.ndarray
        ``(N,)`` float64 in ``[0, 1]``; NaN for an empty mask or a row holding NaN.
    """
    a = _flat(attr)
    m = _flat_mask(mask, np.asarray(attr))
    k = m.sum(axis=1)
    hits = np.take_along_axis(m, _descending_order(a), axis=1).cumsum(axis=1)
    rows = np.arange(a.shape[0])
    in_top_k = hits[rows, np.maximum(k - 1, 0)]
    ok = (k > 0) & _finite_rows(a)
    return np.where(ok, in_top_k / np.maximum(k, 1), np.nan)


@register_metric("pointing_game",
                 "1 when the maximally attributed pixel is in the mask, else 0",
                 higher_is_better=True, needs_mask=True)
def pointing_game(attr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Whether the maximally attributed pixel lies inside the mask (Zhang et al. 2018).

    When several pixels share the maximum, it is a hit if any of them is in the mask (as in
    Quantus); so a constant map scores 1 on any non-empty mask.

    Parameters
    ----------
    attr
        ``(N, H, W)`` maps.
    mask
        ``(N, H, W)`` bool.

    Returns
    -------
    np.ndarray
        ``(N,)`` float64, 1.0 or 0.0; NaN for an empty mask or a row holding NaN (Quantus
        0.6 returns True for an empty mask: it writes NaN into a bool array).
    """
    a = _flat(attr)
    m = _flat_mask(mask, np.asarray(attr))
    ok = m.any(axis=1) & _finite_rows(a)
    top = a == np.max(np.where(np.isfinite(a), a, -np.inf), axis=1, keepdims=True)
    hit = (top & m).any(axis=1).astype(np.float64)
    return np.where(ok, hit, np.nan)


# ----------------------------------------------------------------------- complexity metric


@register_metric("sparseness", "Gini index of |attribution| (1: one pixel, 0: uniform)",
                 higher_is_better=True)
def sparseness(attr: np.ndarray) -> np.ndarray:
    """Gini index of the absolute attributions (Chalasani et al. 2020; Quantus Sparseness).

    With ``x`` the ``n`` values of ``|a|`` sorted ascending and ``i = 1..n``::

        G = sum((2 i - n - 1) x_i) / (n sum(x))

    A one-hot map gives ``(n - 1) / n``, a constant map 0. Quantus adds 1e-7 to every value
    first (which moves the result by about ``1e-7 / mean(|a|)``) and so returns ~0 for an
    all-zero map; here an all-zero map is undefined (NaN).

    Parameters
    ----------
    attr
        ``(N, H, W)`` maps.

    Returns
    -------
    np.ndarray
        ``(N,)`` float64 in ``[0, 1)``; NaN for an all-zero row or a row holding NaN.
    """
    x = np.sort(np.abs(_flat(attr)), axis=1)
    n = x.shape[1]
    weights = 2.0 * np.arange(1, n + 1) - n - 1
    total = x.sum(axis=1)
    ok = (total > 0) & _finite_rows(x)
    safe = np.where(ok[:, None], x, 0.0)
    return np.where(ok, (safe * weights).sum(axis=1) / (n * np.where(ok, total, 1.0)), np.nan)


# -------------------------------------------------------------- perturbation (faithfulness)


def flip_counts(pixels: int, steps: int) -> np.ndarray:
    """``(steps + 1,)`` int64: pixels removed (or revealed) after step ``k``,
    ``round(k * pixels / steps)`` with halves rounded up; 0 first, ``pixels`` last."""
    if steps < 1:
        raise ValueError(f"Expected steps >= 1, got {steps}.")
    k = np.arange(steps + 1, dtype=np.int64)
    return (2 * k * pixels + steps) // (2 * steps)


def pixel_flipping(forward: Forward, images: torch.Tensor, attr: np.ndarray,
                   targets: torch.Tensor | Sequence[int] | np.ndarray, steps: int = 20,
                   mode: str = "deletion", baseline: str = "black",
                   baseline_params: Mapping[str, Any] | None = None,
                   max_batch: int = 64, norm: Any = None) -> np.ndarray:
    """Target-class probability as pixels are removed (deletion) or revealed (insertion) in
    MoRF order (Bach et al. 2015; Petsiuk et al. 2018).

    Pixels are ordered by attribution, highest first (a stable sort: among equal values the
    lower flat index ``y * W + x`` goes first). After step ``k`` the first
    ``round(k * H * W / steps)`` pixels (:func:`flip_counts`), all three channels, are

    - ``deletion``: replaced by the baseline image's pixels (step 0 is the image itself);
    - ``insertion``: put back into the baseline image (step 0 is the baseline itself).

    Every (image, step) input is built with tensor ops from a per-image rank map and run in
    forward passes of at most ``max_batch`` samples under ``torch.no_grad()``; a row's values
    do not depend on the batching.

    Parameters
    ----------
    forward
        ``(B, 3, H, W)`` normalized images to ``(B, C)`` probabilities (the caller chooses
        the head).
    images
        ``(N, 3, H, W)`` normalized images.
    attr
        ``(N, H, W)`` maps; a row holding NaN is not run and gives a NaN curve.
    targets
        ``(N,)`` class index per image.
    steps
        Number of perturbation steps (the curve has ``steps + 1`` points).
    mode
        ``"deletion"`` or ``"insertion"``.
    baseline
        ``"black"``, ``"blur"`` or ``"mean"``
        (:func:`pipeline.attribution.baselines.make_baseline`).
    baseline_params
        Parameters of the baseline, e.g. ``{"baseline_sigma": 10.0}`` for ``blur``.
    max_batch
        Samples per forward pass.
    norm
        The images' :class:`pipeline.data.images.Normalization` (for the black baseline; ImageNet's
        by default).

    Returns
    -------
    np.ndarray
        ``(N, steps + 1)`` float64 curves.
    """
    import torch

    from pipeline.attribution.baselines import make_baseline

    if mode not in FLIP_MODES:
        raise ValueError(f"Expected mode in {list(FLIP_MODES)}, got {mode!r}.")
    if baseline not in FLIP_BASELINES:
        raise ValueError(f"Expected baseline in {list(FLIP_BASELINES)}, got {baseline!r}.")
    n, _, height, width = images.shape
    a = _flat(attr)
    if a.shape != (n, height * width):
        raise ValueError(f"Expected maps shaped {(n, height, width)}, got {np.shape(attr)}.")
    curves = np.full((n, steps + 1), np.nan)
    rows = np.flatnonzero(_finite_rows(a))
    if rows.size == 0:
        return curves
    device = images.device
    keep = torch.as_tensor(rows, device=device)
    x = images[keep]
    base = make_baseline(baseline, x, dict(baseline_params or {}), norm=norm)
    start, end = (x, base) if mode == "deletion" else (base, x)  # step 0 -> the last step
    rank = _rank_maps(a[rows], height, width).to(device)
    counts = torch.as_tensor(flip_counts(height * width, steps), device=device)
    tgt = torch.as_tensor(targets, device=device).long()[keep]
    out = torch.empty(rows.size * (steps + 1), dtype=torch.float64)
    with torch.no_grad():
        for s in range(0, out.numel(), max(1, max_batch)):
            pair = torch.arange(s, min(s + max(1, max_batch), out.numel()), device=device)
            img, step = pair // (steps + 1), pair % (steps + 1)
            flipped = (rank[img] < counts[step].view(-1, 1, 1)).unsqueeze(1)
            probs = forward(torch.where(flipped, end[img], start[img]))
            out[s:s + pair.numel()] = probs[torch.arange(pair.numel(), device=device),
                                            tgt[img]].double().cpu()
    curves[rows] = out.view(rows.size, steps + 1).numpy()
    return curves


def _rank_maps(flat: np.ndarray, height: int, width: int) -> torch.Tensor:
    """``(N, H, W)`` int64: each pixel's place in the descending attribution order (0 first)."""
    import torch

    order = _descending_order(flat)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(flat.shape[1])[None, :].repeat(len(flat), 0),
                      axis=1)
    return torch.from_numpy(rank.reshape(-1, height, width))


def auc(curves: np.ndarray) -> np.ndarray:
    """Trapezoidal area under each curve, x evenly spaced on ``[0, 1]``.

    Parameters
    ----------
    curves
        ``(N, S)`` with ``S >= 2`` points per curve.

    Returns
    -------
    np.ndarray
        ``(N,)`` float64: a constant curve ``c`` has area ``c``; NaN rows give NaN.
    """
    c = np.asarray(curves, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] < 2:
        raise ValueError(f"Expected curves shaped (N, S) with S >= 2, got {c.shape}.")
    return (c[:, :-1] + c[:, 1:]).sum(axis=1) / (2.0 * (c.shape[1] - 1))


def _flip_metric(mode: str, forward: Forward, images: torch.Tensor, attr: np.ndarray,
                 targets: torch.Tensor | Sequence[int] | np.ndarray,
                 **params: Any) -> tuple[np.ndarray, np.ndarray]:
    curves = pixel_flipping(forward, images, attr, targets, mode=mode, **params)
    return auc(curves), curves


@register_metric("deletion",
                 "AUC of the target probability as top pixels are removed (MoRF)",
                 higher_is_better=False, needs_model=True, curve=True)
def deletion(forward: Forward, images: torch.Tensor, attr: np.ndarray,
             targets: torch.Tensor | Sequence[int] | np.ndarray,
             **params: Any) -> tuple[np.ndarray, np.ndarray]:
    """Deletion AUC: :func:`pixel_flipping` with ``mode="deletion"`` (``params``: ``steps``,
    ``baseline``, ``baseline_params``, ``max_batch``).

    Returns
    -------
    (scores, curves)
        ``(N,)`` :func:`auc` of the curves (lower is better) and the ``(N, steps + 1)`` curves.
    """
    return _flip_metric("deletion", forward, images, attr, targets, **params)


@register_metric("insertion",
                 "AUC of the target probability as top pixels are revealed (MoRF)",
                 higher_is_better=True, needs_model=True, curve=True)
def insertion(forward: Forward, images: torch.Tensor, attr: np.ndarray,
              targets: torch.Tensor | Sequence[int] | np.ndarray,
              **params: Any) -> tuple[np.ndarray, np.ndarray]:
    """Insertion AUC: :func:`pixel_flipping` with ``mode="insertion"`` (``params`` as for
    :func:`deletion`).

    Returns
    -------
    (scores, curves)
        ``(N,)`` :func:`auc` of the curves (higher is better) and the ``(N, steps + 1)`` curves.
    """
    return _flip_metric("insertion", forward, images, attr, targets, **params)


# ------------------------------------------------------------------ floors and correlation


def random_attribution(shape: Sequence[int], seed: int) -> np.ndarray:
    """Uniform ``[0, 1)`` noise maps from ``numpy.random.default_rng(seed)``: the "random"
    row every metric is read against.

    Returns
    -------
    np.ndarray
        float32, ``shape`` (e.g. ``(N, H, W)``).
    """
    return np.random.default_rng(seed).random(tuple(shape), dtype=np.float32)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..P along the last axis of a ``(N, P)`` array, ties given their average rank
    (``scipy.stats.rankdata(method="average")``, without scipy). float64."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, axis=1, kind="stable")
    sorted_v = np.take_along_axis(v, order, axis=1)
    p = v.shape[1]
    new = np.ones_like(sorted_v, dtype=bool)
    new[:, 1:] = sorted_v[:, 1:] != sorted_v[:, :-1]  # a tie group starts here
    group = np.cumsum(new, axis=1) - 1  # tie-group id per sorted position
    gid = group + (np.arange(v.shape[0]) * p)[:, None]  # unique across rows
    positions = np.broadcast_to(np.arange(1, p + 1, dtype=np.float64), v.shape)
    counts = np.maximum(np.bincount(gid.ravel()), 1)  # ids past a row's last group: unused
    mean_pos = np.bincount(gid.ravel(), positions.ravel()) / counts
    ranks = np.empty_like(sorted_v)
    np.put_along_axis(ranks, order, mean_pos[gid], axis=1)
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation per image between two stacks of maps.

    Parameters
    ----------
    a, b
        ``(N, H, W)`` maps.

    Returns
    -------
    np.ndarray
        ``(N,)`` float64 in ``[-1, 1]`` (average ranks for ties); NaN where either row holds
        NaN or is constant.
    """
    fa, fb = _flat(a), _flat(b)
    if fa.shape != fb.shape:
        raise ValueError(f"Expected maps of the same shape, got {np.shape(a)} and {np.shape(b)}.")
    out = np.full(fa.shape[0], np.nan)
    ok = _finite_rows(fa) & _finite_rows(fb)
    if not ok.any():
        return out
    ra, rb = average_ranks(fa[ok]), average_ranks(fb[ok])
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        out[ok] = np.where(den > 0, (ra * rb).sum(axis=1) / den, np.nan)
    return out


# ------------------------------------------------------------- model-parameter randomisation


def randomise_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Redraw every parameter of ``module`` (and its children) in place.

    Each tensor is replaced by i.i.d. normal draws with the tensor's current mean and standard
    deviation, taken from ``generator`` on the CPU (so the draws are the same on every device).
    This keeps each layer's scale, so the activations neither explode nor vanish, while
    destroying what the weights learned; buffers (BatchNorm running statistics) stay. A
    constant tensor (e.g. a freshly initialised BatchNorm's weight 1 and bias 0) stays
    constant, and a one-element tensor keeps its value: those carry no learned pattern.
    ``nn.Module.reset_parameters`` would draw from the global RNG, not a generator.
    """
    import torch

    with torch.no_grad():
        for param in module.parameters():
            ref = param.detach().double().cpu()
            mean = float(ref.mean())
            std = float(ref.std()) if ref.numel() > 1 else 0.0
            draw = torch.randn(param.shape, generator=generator, dtype=torch.float64)
            param.copy_((draw * std + mean).to(dtype=param.dtype, device=param.device))


def cascading_randomisation(model: nn.Module, layer_groups: Sequence[Sequence[str]],
                            explain: Explain, images: torch.Tensor, targets: torch.Tensor,
                            seed: int) -> np.ndarray:
    """Cascading model-parameter randomisation (Adebayo et al. 2018): how much the maps change
    as the network is randomised from the top down.

    The model is deep-copied once; then for each group in turn that group's parameters are
    redrawn (:func:`randomise_parameters`, one ``torch.Generator`` seeded with ``seed`` for
    all groups) while the earlier groups stay randomised, the maps are recomputed, and their
    Spearman correlation to the original maps is taken. A good method's correlation falls.

    Parameters
    ----------
    model
        The network; ``layer_groups`` name its modules as ``model.named_modules()`` does (for
        :data:`RESNET_LAYER_GROUPS`, a torchvision resnet18: pass the backbone and let
        ``explain`` apply the head). It is not modified.
    layer_groups
        Module names per group, top-down, e.g. ``[["fc"], ["layer4"], ...]``.
    explain
        ``explain(model, images, targets) -> (N, H, W)`` numpy maps.
    images
        ``(N, 3, H, W)`` normalized images.
    targets
        ``(N,)`` class per image.
    seed
        Seed of the parameter draws.

    Returns
    -------
    np.ndarray
        ``(G, N)`` float64 Spearman correlations, one row per group.
    """
    import copy

    import torch

    original = np.asarray(explain(model, images, targets))
    randomised = copy.deepcopy(model)
    modules = dict(randomised.named_modules())
    missing = [name for group in layer_groups for name in group if name not in modules]
    if missing:
        raise KeyError(f"Expected module names of the model, got {missing}; "
                       f"e.g. {', '.join(list(modules)[1:8])}.")
    generator = torch.Generator().manual_seed(int(seed))
    out = np.full((len(layer_groups), original.shape[0]), np.nan)
    for g, group in enumerate(layer_groups):
        for name in group:
            randomise_parameters(modules[name], generator)
        out[g] = spearman(original, np.asarray(explain(randomised, images, targets)))
    return out
