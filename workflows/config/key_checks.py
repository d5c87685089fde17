"""The checks of single config keys that a type, bounds and choices cannot say: a device
name, a colormap, metric names, an architecture, three channel values.

Each is a ``check(value) -> problem or None`` for :class:`pipeline.validation.Rule`. Checks
that need a registry (metrics, colormaps, the evidence dataset's classes) import it when they
run, so that importing the config stays cheap (``xai status`` loads configs too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pipeline.validation import Check
from workflows.config.origins import did_you_mean


def device_problem(device: str) -> str | None:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    head, _, index = device.partition(":")
    if device in ("auto", "cpu", "cuda", "mps") or (head == "cuda" and index.isdigit()):
        return None
    return f"expected auto, cpu, cuda or cuda:N, got {device!r}"


#: Colormaps matplotlib has had for years (each with its ``_r``): accepted without it.
COMMON_COLORMAPS = frozenset(
    n + r for n in ("viridis", "magma", "inferno", "plasma", "cividis", "turbo", "gray",
                    "Greys", "hot", "jet", "bwr", "seismic", "coolwarm", "RdBu", "PiYG")
    for r in ("", "_r"))


def colormap(examples: str) -> Check:
    """A check that a name is a matplotlib colormap; ``examples`` go in the message."""

    def check(name: str) -> str | None:
        if name in COMMON_COLORMAPS:
            return None
        import matplotlib  # only for other names: it takes 0.2 s to import

        if name in matplotlib.colormaps:
            return None
        return f"expected a matplotlib colormap name (e.g. {examples}), got {name!r}"

    check.__doc__ = f"A matplotlib colormap name (e.g. {examples})."
    return check


def metrics_problem(names: Sequence[str]) -> str | None:
    """Names of registered metrics (``pipeline.evaluation.metrics.METRICS``)."""
    from pipeline.evaluation.metrics import METRICS

    for name in names:
        if name not in METRICS:
            hint = did_you_mean(name, METRICS)
            return f"unknown metric {name!r}{hint}; valid: {', '.join(METRICS)}"
    return None


def flip_baseline_problem(name: str) -> str | None:
    """A baseline that deletion and insertion replace pixels with (``FLIP_BASELINES``)."""
    from pipeline.evaluation.metrics import FLIP_BASELINES

    if name in FLIP_BASELINES:
        return None
    return f"expected one of {', '.join(FLIP_BASELINES)}, got {name!r}"


def shortcut_class_problem(name: str) -> str | None:
    """Empty, or a class of the evidence dataset."""
    from pipeline.data.evidence_dataset import SHAPES

    if not name or name in SHAPES:
        return None
    return f"expected a class of the evidence dataset ({', '.join(SHAPES)}), got {name!r}"


def arch_problem(arch: str) -> str | None:
    """An architecture a model source names (:func:`pipeline.models.sources.check_arch`)."""
    from pipeline.models.sources import check_arch

    return check_arch(arch)


def interpolation_problem(name: str) -> str | None:
    """Empty (the model's own), or an interpolation the image loader knows."""
    from pipeline.models.preprocessing import INTERPOLATIONS

    if name and name not in INTERPOLATIONS:
        return f"expected one of {', '.join(INTERPOLATIONS)} (or nothing: the model's), " \
               f"got {name!r}"
    return None


def channels_problem(values: tuple[float, ...]) -> str | None:
    """Empty (the model's own), or one finite number per RGB channel."""
    if values and (len(values) != 3 or not all(math.isfinite(v) for v in values)):
        return f"expected 3 numbers (one per RGB channel), got {list(values)}"
    return None
