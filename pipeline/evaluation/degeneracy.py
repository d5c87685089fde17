"""Degenerate output: a model whose output barely depends on its input, output gaps
``F(x) - F(baseline)`` that are all zero, and maps at the floor of float32.

Each map is drawn scaled to its own maximum, so such runs would otherwise show plausible heat
maps. The thresholds come from measurements (eight photos of ``data/sample`` at 224 px; the
evidence model, trained with its default settings to accuracy 1.0, on 32 of its own images
at 112 px; zero baseline; maps: input x gradient):

- log-probabilities across images (max over classes of max - min of ``log softmax``): a
  randomly initialised ``mobilenet_v3_small`` 1.4e-9 to 3.9e-9 (10 or 1000 classes; its
  logits about 1e-9, every probability 1/classes); a randomly initialised ``resnet18`` 5.2
  to 7.8 (10 or 1000 classes), and 0.33 on five 32 px noise images (the test runs); the
  evidence model 20.4. :data:`LOGPROB_SPREAD_FLOOR` sits over three orders of magnitude
  from both sides. Neither the logits' spread relative to their magnitude (0.94 for the
  random mobilenet, 0.58 for the random resnet18) nor the spread of the probabilities
  (4.5e-4 for the test runs' resnet18, whose 1000 probabilities are all near 1e-3)
  separates them as well.
- ``|F(x) - F(baseline)|``: the random mobilenet 0 exactly (softmax head) and 1e-10 to
  3e-9 (logit head); the random resnet18 at least 0.011 (1e-3 in the test runs); the
  evidence model at least 9.2e-4 (softmax, saturated) and 0.042 (logit). Below
  :data:`GAP_FLOOR` for every image of a method is flagged.
- the largest ``|raw|`` of a map: the random mobilenet 3e-13 to 1e-11, the random resnet18
  at least 4e-5, the evidence model at least 1.7e-8 (softmax) and 4e-3 (logit). Only
  all-zero maps (a layer the target does not reach) fall under :data:`MAP_FLOOR`; the
  random mobilenet is caught by its output instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Log-probabilities that move by less than this across the images: constant output.
LOGPROB_SPREAD_FLOOR: float = 1e-4
#: ``|F(x) - F(baseline)|`` at or below this for every image of a method: zero output gaps.
GAP_FLOOR: float = 1e-6
#: The largest ``|raw|`` of every map of a method at or below this: maps at float32's floor.
MAP_FLOOR: float = 1e-30


@dataclass(frozen=True)
class Degeneracy:
    """One way a run's output is degenerate.

    ``what`` is ``constant_output``, ``zero_gap`` or ``zero_maps``; ``methods`` the
    explainers concerned (empty for the model's output); ``measured`` the numbers and
    thresholds; ``message`` says it in words.
    """

    what: str
    message: str
    methods: tuple[str, ...] = ()
    measured: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.what, "methods": list(self.methods), "measured": self.measured,
                "message": self.message}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (``logits``: shape ``(n, classes)``)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return np.asarray(z - np.log(np.exp(z).sum(axis=1, keepdims=True)))


def constant_output(logits: np.ndarray) -> Degeneracy | None:
    """The model's output barely depends on its input.

    With two or more images: the log-probabilities move by less than
    :data:`LOGPROB_SPREAD_FLOOR` across them (max over classes of max - min). With one
    image: every log-probability is within :data:`LOGPROB_SPREAD_FLOOR` of
    ``log(1 / classes)`` (uniform output). Rows with a non-finite logit (not predicted) are
    left out; None when no row is left.
    """
    z = np.asarray(logits, dtype=np.float64)
    z = z[np.isfinite(z).all(axis=1)] if z.ndim == 2 else z[:0]
    if not len(z) or not z.shape[1]:
        return None
    lp = log_softmax(z)
    classes = lp.shape[1]
    spread = float((lp.max(axis=0) - lp.min(axis=0)).max())
    off_uniform = float(np.abs(lp + np.log(classes)).max())
    measured = {"images": len(z), "logprob_spread": spread, "logprob_off_uniform": off_uniform,
                "largest_logit": float(np.abs(z).max()), "threshold": LOGPROB_SPREAD_FLOOR}
    if len(z) >= 2 and spread < LOGPROB_SPREAD_FLOOR:
        return Degeneracy("constant_output", (
            f"DEGENERATE MODEL: its output barely depends on the input (log-probabilities "
            f"vary by {spread:.1e} across {len(z)} images, under {LOGPROB_SPREAD_FLOOR:g}; "
            f"largest |logit| {measured['largest_logit']:.1e}): the maps are not evidence of "
            "anything. Check the weights."), measured=measured)
    if len(z) == 1 and off_uniform < LOGPROB_SPREAD_FLOOR:
        return Degeneracy("constant_output", (
            f"DEGENERATE MODEL: its output is uniform (every log-probability within "
            f"{off_uniform:.1e} of log(1/{classes})): the maps are not evidence of anything. "
            "Check the weights."), measured=measured)
    return None


def zero_gaps(gaps: Mapping[str, np.ndarray]) -> Degeneracy | None:
    """Methods whose every image has ``|F(x) - F(baseline)| <= GAP_FLOOR`` (``gaps``: per
    method, one gap per image, NaN where not computed; methods without a finite gap are
    left out)."""
    hit: dict[str, float] = {}
    images = 0
    for method, gap in gaps.items():
        g = np.abs(np.asarray(gap, dtype=np.float64))
        g = g[np.isfinite(g)]
        if g.size and float(g.max()) <= GAP_FLOOR:
            hit[method] = float(g.max())
            images = max(images, int(g.size))
    if not hit:
        return None
    return Degeneracy("zero_gap", (
        f"ZERO OUTPUT GAPS: F(x) = F(baseline) within {GAP_FLOOR:g} for all {images} images "
        f"with {', '.join(hit)}: there is nothing for the attributions to add up to."),
        tuple(hit), {**{f"largest_gap_{m}": v for m, v in hit.items()},
                     "images": images, "threshold": GAP_FLOOR})


def zero_maps(peaks: Mapping[str, float], images: int) -> Degeneracy | None:
    """Methods whose maps' largest ``|raw|`` (``peaks``, over ``images`` images; NaN: not
    computed, left out) is at most :data:`MAP_FLOOR`."""
    hit = {m: float(v) for m, v in peaks.items() if np.isfinite(v) and v <= MAP_FLOOR}
    if not hit:
        return None
    return Degeneracy("zero_maps", (
        f"ZERO MAPS: every map of {', '.join(hit)} is zero (largest |value| under "
        f"{MAP_FLOOR:g} over {images} images): the heat maps drawn are empty."),
        tuple(hit), {**{f"largest_value_{m}": v for m, v in hit.items()},
                     "images": images, "threshold": MAP_FLOOR})


def find_degeneracy(logits: np.ndarray, gaps: Mapping[str, np.ndarray],
                    peaks: Mapping[str, float], map_images: int) -> list[Degeneracy]:
    """Every finding of :func:`constant_output`, :func:`zero_gaps` and :func:`zero_maps`."""
    found = [constant_output(logits), zero_gaps(gaps), zero_maps(peaks, map_images)]
    return [f for f in found if f is not None]


#: A sheet's banner, by finding: short, since a sheet may be a few hundred pixels wide.
SHORT = {"constant_output": "the model's output does not depend on its input",
         "zero_gap": "F(x) = F(baseline) for every image",
         "zero_maps": "all maps zero"}


def banner_text(findings: Sequence[Degeneracy] | Sequence[Mapping[str, Any]]) -> str | None:
    """One short line for a sheet's banner (None: nothing found), e.g. ``DEGENERATE OUTPUT:
    the model's output does not depend on its input; F(x) = F(baseline) for every image
    (integrated_gradients). The maps mean nothing.``"""
    parts = []
    for f in findings:
        d = f.to_dict() if isinstance(f, Degeneracy) else f
        methods = list(d.get("methods") or [])
        parts.append(SHORT.get(str(d.get("what")), str(d.get("what")))
                     + (f" ({', '.join(methods)})" if methods else ""))
    return f"DEGENERATE OUTPUT: {'; '.join(parts)}. The maps mean nothing." if parts else None
