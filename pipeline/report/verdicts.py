"""Which method to trust, in words: the sanity check's verdict per method, the caveat for a
ranking that mixes signed and unsigned maps, the metrics' short names, and the statistics the
summary's overview compares (library code: plain data in, plain data out; no HTML).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The sanity check's line: a method's maps depend on the model where the mean |Spearman|
#: between the randomised and the trained model's maps falls below this. Above it, the maps
#: still rank the pixels mostly as before, whatever the weights (Adebayo et al. 2018). The
#: absolute value: a map whose sign flips with a random classifier keeps its structure.
SANITY_THRESHOLD = 0.5

#: Short names of the metrics on the gallery's tiles (the full name is on hover and in the
#: legend); a metric not listed shows its first six letters.
SHORT_METRIC_NAMES: dict[str, str] = {
    "deletion": "del", "insertion": "ins", "relevance_mass_accuracy": "mass",
    "relevance_rank_accuracy": "rank", "pointing_game": "point", "sparseness": "sparse",
}

#: How each kind of map treats negative attribution (see :func:`sign_caveat`).
SIGN_WORDS: dict[str, str] = {
    "signed": "signed", "absolute": "absolute (|·|)", "non-negative": "non-negative (ReLU)",
}


def short_metric(name: str) -> str:
    """A metric's short name for the gallery's tiles."""
    return SHORT_METRIC_NAMES.get(name, name[:6])


def arrow(better: str) -> str:
    """``↑`` where higher is better, ``↓`` where lower is."""
    return "↑" if better == "higher" else "↓"


@dataclass(frozen=True)
class Verdict:
    """What the randomisation test says of one method's maps.

    Attributes
    ----------
    method
        The method.
    kind
        ``"depends"`` (|ρ| below :data:`SANITY_THRESHOLD` once the top layer group is
        randomised), ``"lower"`` (only once lower groups are randomised too),
        ``"independent"`` (never) or ``"untested"``.
    short
        A few words for the overview table.
    sentence
        One sentence for the sanity section.
    """

    method: str
    kind: str
    short: str
    sentence: str


def group_words(group: str) -> str:
    """A layer group's name in words: ``"layer1+conv1+bn1"`` as ``"layer1, conv1, bn1"``."""
    return ", ".join(group.split("+"))


def _rho(b: Mapping[str, Any]) -> str:
    """A correlation with its interval: ``0.12 [0.05, 0.19]``."""
    return f"{b['mean']:.2f} [{b['low']:.2f}, {b['high']:.2f}]"


def sanity_verdict(method: str, curve: Mapping[str, Mapping[str, Any]],
                   threshold: float = SANITY_THRESHOLD) -> Verdict:
    """The verdict of one method's cascading-randomisation curve.

    Parameters
    ----------
    method
        The method's name (for the sentence).
    curve
        Per layer group, top-down, in the order they were randomised (e.g. ``fc``,
        ``layer4``, ...): the mean Spearman correlation to the trained model's maps with its
        95% interval (``mean``, ``low``, ``high``; ``mean`` None where no image was tested).
    threshold
        The line on the mean ``|ρ|`` (:data:`SANITY_THRESHOLD`).
    """
    points = [(g, b) for g, b in curve.items() if b.get("mean") is not None]
    if not points:
        return Verdict(method, "untested", "not tested",
                       f"{method}: not tested (no image took part in the randomisation test; "
                       "raise [evaluate] randomisation_images).")
    first_group, first = points[0]
    below = next((k for k, (_g, b) in enumerate(points) if abs(b["mean"]) < threshold), None)
    if below == 0:
        return Verdict(method, "depends", "depends on the model",
                       f"{method}: its maps depend on the model. Once the top layer group "
                       f"({group_words(first_group)}) is randomised, their Spearman "
                       f"correlation with the trained model's maps is {_rho(first)}, "
                       f"below |ρ| = {threshold:g}.")
    if below is not None:
        group, b = points[below]
        return Verdict(method, "lower", "lower layers only",
                       f"{method}: its maps depend on the lower layers only. They keep a "
                       f"Spearman correlation of {_rho(first)} after the top layer group "
                       f"({group_words(first_group)}) is randomised, and fall below "
                       f"|ρ| = {threshold:g} only once {group_words(group)} is randomised "
                       f"too ({_rho(b)}): they show what the features respond to more than "
                       "what the classifier decided.")
    last_group, last = points[-1]
    return Verdict(method, "independent", "does not depend on the model",
                   f"{method}: its maps do not depend on the model. With every layer group "
                   f"randomised (down to {group_words(last_group)}) they keep a Spearman "
                   f"correlation of {_rho(last)} with the trained model's maps (|ρ| ≥ "
                   f"{threshold:g}): do not read them as explanations of this model.")


def sanity_verdicts(evaluation: Mapping[str, Any], threshold: float = SANITY_THRESHOLD
                    ) -> dict[str, Verdict]:
    """:func:`sanity_verdict` of every method in the evaluation's randomisation test."""
    return {m: sanity_verdict(m, curve, threshold)
            for m, curve in (evaluation.get("randomisation") or {}).items()}


def sign_caveat(signs: Mapping[str, str]) -> str | None:
    """The warning for a ranking that mixes signed maps with absolute (or non-negative)
    ones, or None when all the maps are of one kind.

    Parameters
    ----------
    signs
        Per method: ``"signed"``, ``"absolute"`` or ``"non-negative"``.
    """
    signed = [m for m, s in signs.items() if s == "signed"]
    unsigned = [m for m, s in signs.items() if s != "signed"]
    if not signed or not unsigned:
        return None
    kinds = ", ".join(f"{m}: {SIGN_WORDS.get(signs[m], signs[m])}" for m in unsigned)
    return (f"Signed and unsigned maps are ranked side by side. The signed maps "
            f"({', '.join(signed)}) are scored by their signed value: deletion, insertion, "
            "rank accuracy and the pointing game order the pixels by it, and relevance mass "
            "counts positive attribution only, so evidence against the class ranks last. The "
            f"unsigned maps ({kinds}) rank strong evidence either way first. A difference "
            "between the two groups can be this convention rather than the method: compare "
            "within a group, or make a signed method absolute where it has the parameter "
            "(custom_gradient: absolute = true).")


def stat(b: Mapping[str, Any] | None) -> tuple[float, float, float] | None:
    """A statistic ``{mean, low, high, n}`` as ``(mean, low, high)``, or None where it is
    missing or has no mean."""
    if not b or b.get("mean") is None:
        return None
    return float(b["mean"]), float(b["low"]), float(b["high"])


def best_methods(values: Mapping[str, tuple[float, float, float] | None], higher: bool
                 ) -> set[str]:
    """The methods with the best mean (``higher``: the largest, else the smallest); ties all
    count. ``values``: per method, ``(mean, low, high)`` (:func:`stat`) or None."""
    means = {m: v[0] for m, v in values.items() if v is not None}
    if not means:
        return set()
    top = max(means.values()) if higher else min(means.values())
    return {m for m, v in means.items() if v == top}


def beats_floor(v: tuple[float, float, float], floor: tuple[float, float, float] | None,
                higher: bool) -> bool:
    """Whether a method's mean lies beyond the random floor's 95% interval."""
    if floor is None:
        return True
    return v[0] > floor[2] if higher else v[0] < floor[1]
