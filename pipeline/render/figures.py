"""The figures of a run: completeness errors, and the evaluation's scores and curves.

Drawn with matplotlib's object API (``matplotlib.figure.Figure``): no pyplot, no global figure
state, safe in threads. ``evaluation.png`` and the report's ``plots/*.png`` are these figures.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def png(fig: Any, dpi: int = 90) -> bytes:
    """A figure as PNG bytes."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # Names in any script are captions; a missing glyph is drawn as a box.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
        fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _horizontal() -> dict[str, Any]:
    """Matplotlib's keyword for horizontal box plots (``vert`` is deprecated since 3.11)."""
    import matplotlib

    major, minor = (int(v) for v in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def completeness_figure(errors: Mapping[str, np.ndarray], warning: float) -> Any | None:
    """Histograms of log10 relative completeness errors, one per method.

    Parameters
    ----------
    errors
        Per method, the relative errors ``|delta| / |gap|`` ``(N,)`` (NaN: undefined).
    warning
        The ``[run] completeness_warning`` threshold, drawn as a line.

    Returns
    -------
    The figure, or None when no method has a positive finite error.
    """
    fig = _figure(6.4, 3.2)
    ax = fig.subplots()
    drawn = False
    for method, rel in errors.items():
        rel = np.asarray(rel, dtype=np.float64)
        rel = rel[np.isfinite(rel) & (rel > 0)]
        if rel.size:
            ax.hist(np.log10(rel), bins=30, histtype="step", linewidth=1.5, label=method)
            drawn = True
    if not drawn:
        return None
    ax.axvline(np.log10(warning), color="#d33", linestyle="--", label=f"warning ({warning:g})")
    ax.set_xlabel("log10 relative completeness error |delta| / |F(x) - F(baseline)|")
    ax.set_ylabel("images")
    ax.legend(fontsize=8)
    return fig


def evaluation_figure(summary: Mapping[str, Any],
                      scores: Mapping[str, Mapping[str, np.ndarray]]) -> Any | None:
    """One figure: per metric, the distribution of each method's scores and the random
    maps'; the mean deletion / insertion curves; the randomisation test.

    Parameters
    ----------
    summary
        The evaluation summary (:func:`workflows.stages.evaluate.evaluation_summary`):
        ``metrics[name]["better"]``, ``["mean_curve"]`` and ``randomisation``.
    scores
        Per metric, per method (and ``"random"``), the scores ``(N,)`` (NaN: undefined).

    Returns
    -------
    The figure, or None when there is nothing to draw.
    """
    metrics = list(summary.get("metrics", {}))
    curves = [m for m in metrics if summary["metrics"][m].get("mean_curve")]
    randomisation = summary.get("randomisation") or {}
    panels = len(metrics) + len(curves) + (1 if randomisation else 0)
    if not panels:
        return None
    cols = min(3, panels)
    rows = -(-panels // cols)
    fig = _figure(5.2 * cols, 3.6 * rows)
    axes = list(np.asarray(fig.subplots(rows, cols, squeeze=False)).ravel())
    for name in metrics:
        _scores_panel(axes.pop(0), name, summary["metrics"][name]["better"], scores[name])
    for name in curves:
        _curve_panel(axes.pop(0), name, summary["metrics"][name]["mean_curve"])
    if randomisation:
        _randomisation_panel(axes.pop(0), randomisation)
    for ax in axes:
        ax.axis("off")
    return fig


def _scores_panel(ax: Any, name: str, better: str, scores: Mapping[str, np.ndarray]) -> None:
    labels, data = [], []
    for label, values in scores.items():
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size:
            labels.append(label)
            data.append(v)
    if data:
        ax.boxplot(data, showfliers=False, **_horizontal())
        ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
    ax.set_title(f"{name} ({better} is better)", fontsize=9)


def _curve_panel(ax: Any, name: str, mean_curves: Mapping[str, Sequence[float] | None]) -> None:
    for label, curve in mean_curves.items():
        if curve is not None:
            x = np.linspace(0, 1, len(curve))
            ax.plot(x, curve, label=label, linestyle="--" if label == "random" else "-")
    removed = "removed" if name == "deletion" else "revealed"
    ax.set_xlabel(f"fraction of pixels {removed}", fontsize=8)
    ax.set_ylabel("target probability", fontsize=8)
    ax.set_title(f"mean {name} curve", fontsize=9)
    ax.legend(fontsize=6)


def _randomisation_panel(ax: Any, randomisation: Mapping[str, Mapping[str, Any]]) -> None:
    groups: list[str] = []
    for method, per_group in randomisation.items():
        means = [v["mean"] if v["mean"] is not None else np.nan for v in per_group.values()]
        ax.plot(range(len(means)), means, marker="o", label=method)
        groups = list(per_group)
    ax.set_xticks(range(len(groups)), groups, fontsize=6, rotation=20)
    ax.set_ylabel("Spearman vs original map", fontsize=8)
    ax.set_title("cascading randomisation (top-down)", fontsize=9)
    ax.legend(fontsize=6)


def randomisation_figure(randomisation: Mapping[str, Mapping[str, Mapping[str, Any]]],
                         threshold: float) -> Any | None:
    """The cascading-randomisation curves, one per method: the mean Spearman correlation
    between the randomised and the trained model's maps, with its 95% interval, as the layer
    groups are randomised from the top down (the trained model: 1).

    Parameters
    ----------
    randomisation
        Per method, per layer group in the order randomised: ``mean``, ``low``, ``high``
        (None where untested), as in the evaluation summary's ``randomisation``.
    threshold
        The sanity check's line on ``|ρ|``
        (:data:`pipeline.report.verdicts.SANITY_THRESHOLD`): the band ``|ρ| < threshold`` is
        shaded.

    Returns
    -------
    The figure, or None when no method has a tested group.
    """
    groups = list(dict.fromkeys(g for curve in randomisation.values() for g in curve))
    if not groups or not any(b.get("mean") is not None for curve in randomisation.values()
                             for b in curve.values()):
        return None
    fig = _figure(6.4, 3.6)
    ax = fig.subplots()
    x = np.arange(len(groups) + 1)
    ax.axhspan(-threshold, threshold, color="#2a9d4b", alpha=0.08,
               label=f"|ρ| < {threshold:g}: the maps changed")
    for method, curve in randomisation.items():
        stats = [curve.get(g) or {} for g in groups]
        mean = np.array([1.0] + [np.nan if s.get("mean") is None else s["mean"]
                                 for s in stats])
        low = np.array([1.0] + [np.nan if s.get("low") is None else s["low"] for s in stats])
        high = np.array([1.0] + [np.nan if s.get("high") is None else s["high"]
                                 for s in stats])
        (line,) = ax.plot(x, mean, marker="o", label=method)
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
    labels = ["trained"] + [("" if k == 0 else "+") + g.replace("+", ", ")
                            for k, g in enumerate(groups)]
    ax.set_xticks(x, labels, fontsize=7, rotation=20)
    ax.set_xlabel("layer groups randomised, top down (cumulative)", fontsize=8)
    ax.set_ylabel("Spearman ρ with the trained model's maps", fontsize=8)
    ax.set_ylim(-1.05, 1.05)
    ax.axhline(0, color="#888", linewidth=0.6)
    ax.set_title("cascading model randomisation (sanity check)", fontsize=9)
    ax.legend(fontsize=6, loc="lower left")
    return fig
