"""``xai compare RUN_A RUN_B``: compare the explanations of two runs over the same images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import XaiError
from workflows.cli.console import console, fail, out


def register(app: typer.Typer) -> None:
    """Add ``compare`` to ``app``."""
    app.command(short_help="compare the explanations of two runs over the same images")(
        compare)


def compare(
        run_a: Annotated[Path, typer.Argument(metavar="RUN_A", show_default=False,
                                              help="the first run's folder (runs/NAME)")],
        run_b: Annotated[Path, typer.Argument(metavar="RUN_B", show_default=False,
                                              help="the second run's folder")],
        out_dir: Annotated[Path | None, typer.Option(
            "--out", metavar="DIR", help="where the comparison goes (default: "
            "compare-A-vs-B beside RUN_A)")] = None,
        shared_images: Annotated[bool, typer.Option(
            "--shared-images", help="compare the images both runs hold when their images "
            "differ")] = False,
        top_fraction: Annotated[float, typer.Option(
            "--top-fraction", metavar="F",
            help="the share of each map's highest pixels whose overlap (IoU) is measured")]
        = 0.1,
        permutations: Annotated[int | None, typer.Option(
            "--permutations", min=19, metavar="P",
            help="the most sign-flip permutations of a class's test (default: enough for "
                 "Holm's correction to flag every class, at least 999)")] = None,
        alpha: Annotated[float, typer.Option(
            "--alpha", metavar="A",
            help="flag a class when its Holm-adjusted p is at most this")] = 0.01,
        seed: Annotated[int, typer.Option("--seed", metavar="N",
                                          help="seeds the permutations")] = 0,
        workers: Annotated[int, typer.Option(
            "--workers", min=1, metavar="N", help="shards computed at once")] = 2) -> None:
    """Compare the explanations of two runs over the same images.

    Per image and method: the rank correlation and top-pixel overlap of the two maps, both
    predictions and the metrics both runs have. Per class: the mean maps, their difference
    and a permutation test of the change. Per strategy: SpRAy clusters matched. Written to a
    Zarr store and report pages; a rerun resumes.
    """
    from workflows.commands.compare_runs import CompareSettings, print_summary
    from workflows.commands.compare_runs import compare as run_compare
    from workflows.runner.progress import make_reporter

    try:
        settings = CompareSettings(top_fraction=top_fraction, permutations=permutations,
                                   alpha=alpha, seed=seed, shared_images=shared_images,
                                   workers=workers)
        with make_reporter(console) as reporter:
            summary = run_compare(run_a, run_b, out_dir, settings, reporter)
    except XaiError as exc:
        raise fail(exc) from None
    print_summary(out, summary)
