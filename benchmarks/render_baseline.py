"""The matplotlib contact sheet the pipeline used before the Pillow renderer.

Kept only as the benchmark's baseline (``xai bench`` times both on the same rows, in one
process); the pipeline renders with :func:`pipeline.render.heatmaps.contact_sheet`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.render.heatmaps import RIGHT, UNKNOWN, WRONG, SheetRow


def _caption(row: SheetRow) -> tuple[str, str]:
    if row.status != "ok":
        return f"{row.image_id}\nskipped: {row.status}", UNKNOWN
    text = f"{row.image_id}\npred: {row.pred_name} ({row.prob:.2f})"
    if row.true_name is None:
        return text, UNKNOWN
    right = row.true_name == row.pred_name
    return f"{text}\ntrue: {row.true_name} {'✓' if right else '✗'}", RIGHT if right else WRONG


def matplotlib_contact_sheet(rows: Sequence[SheetRow], methods: Sequence[str], *,
                             colormap: str = "inferno", banner: str | None = None,
                             title: str | None = None, panel_inches: float = 2.2) -> Figure:
    """Render rows of image + heat maps into a figure.

    Parameters
    ----------
    rows
        Up to ``images_per_sheet`` rows.
    methods
        Column headers, one per map.
    banner
        A warning printed in red across the top (e.g. random weights).
    """
    ncols = len(methods) + 1
    nrows = max(1, len(rows))
    extra = 0.6 + (0.35 if banner else 0.0)
    fig = Figure(figsize=(panel_inches * ncols, panel_inches * nrows * 1.12 + extra),
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    mappable = None
    for r, row in enumerate(rows):
        caption, colour = _caption(row)
        ax = axes[r, 0]
        if row.status == "ok":
            ax.imshow(row.pixels)
        ax.set_title(caption, fontsize=7, color=colour, loc="left")
        for c in range(len(methods)):
            amap = row.maps[c]
            if np.isfinite(amap).any():
                mappable = axes[r, c + 1].imshow(amap, cmap=colormap, vmin=0.0, vmax=1.0)
    for c, name in enumerate(methods):
        axes[0, c + 1].set_title(name, fontsize=9, fontweight="bold")
    if not rows:
        axes[0, 0].text(0.5, 0.5, "no images", ha="center", va="center")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    if mappable is not None:
        cbar = fig.colorbar(mappable, ax=axes[:, 1:].ravel().tolist(), orientation="horizontal",
                            fraction=0.04, pad=0.02, aspect=50)
        cbar.set_label("normalized attribution (one scale for every map)", fontsize=8)
    heading = "\n".join(t for t in (banner, title) if t)
    if heading:
        fig.suptitle(heading, color=WRONG if banner else UNKNOWN, fontsize=10,
                     fontweight="bold" if banner else "normal")
    return fig
