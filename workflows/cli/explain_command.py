"""``xai explain``: one PNG of heat maps for a few image files, without a run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline.attribution.method_registry import DEFAULT_METHODS, METHODS
from pipeline.errors import XaiError
from pipeline.evaluation.metrics import METRICS, default_metrics
from pipeline.models.sources import arch_help, weights_help
from pipeline.models.torchvision_table import DEFAULT_ARCH
from workflows.cli.console import console, fail, out
from workflows.commands.explain_images import ImageScores
from workflows.runner.progress import make_reporter


def register(app: typer.Typer) -> None:
    """Add ``explain`` to ``app``."""
    app.command(short_help="one PNG of heat maps for a few image files")(explain)


def explain(
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE...", help="image files")],
    out_file: Annotated[Path, typer.Option("--out", metavar="FILE", help="PNG to write")]
        = Path("explain.png"),
    weights: Annotated[str, typer.Option(metavar="WEIGHTS",
        help=weights_help(single_images=True))]
        = "auto",
    arch: Annotated[str, typer.Option(metavar="ARCH",
        help=arch_help())] = DEFAULT_ARCH,
    classes: Annotated[Path | None, typer.Option(metavar="FILE",
        help="a checkpoint's class names, one a line")] = None,
    head: Annotated[str, typer.Option(metavar="HEAD", help="softmax | logits")] = "softmax",
    method: Annotated[list[str] | None, typer.Option(metavar="METHOD",
        help=f"repeatable: {', '.join(METHODS)}; default: {', '.join(DEFAULT_METHODS)}")]
        = None,
    n_steps: Annotated[int, typer.Option(metavar="N", help="path steps for the IG methods")] = 50,
    nt_samples: Annotated[int, typer.Option(metavar="N", help="SmoothGrad samples")] = 10,
    device: Annotated[str, typer.Option(metavar="DEVICE", help="auto | cpu | cuda")] = "auto",
    seed: Annotated[int, typer.Option(
        metavar="N", help="seed for random weights and SmoothGrad")] = 0,
    evaluate: Annotated[bool, typer.Option(
        "--evaluate", help="score each map with the metrics that need no mask "
        f"({', '.join(default_metrics())}), beside a random map's")] = False,
) -> None:
    """One PNG for a few image files: per image, the photo and one heat map per method.

    Each row shows the image with its predicted class and probability, then one heat map per
    method, drawn as the contact sheets are: each map scaled to its own maximum and clipped
    at its 99th percentile, with a colour bar. Arguments are checked before any model loads.
    With `--evaluate`, a table scores each map as a run's evaluate stage does, beside a
    random map's score (the floor a method must beat).
    """
    from workflows.commands.explain_images import check_request, explain_images

    names = method or list(DEFAULT_METHODS)
    try:
        check_request(images, names, weights=weights, arch=arch, head=head, classes=classes,
                      n_steps=n_steps, nt_samples=nt_samples, device=device,
                      out_file=out_file)
        with make_reporter(console) as reporter:
            reporter.stage_start("explain", len(images), 0)
            calls = iter(range(1, len(images) * len(names) + 1))

            def advance(what: str) -> None:
                if next(calls) % len(names) == 0:  # an image has all its maps
                    reporter.advance("explain", 1)

            result = explain_images(images, out_file, weights=weights, head=head,
                                    methods=names, n_steps=n_steps, nt_samples=nt_samples,
                                    device=device, seed=seed, progress=advance, arch=arch,
                                    classes=classes,
                                    evaluate=default_metrics() if evaluate else ())
            reporter.stage_end("explain")
    except KeyboardInterrupt:
        console.print("[bold yellow]Interrupted.[/] Nothing was written.")
        raise typer.Exit(130) from None
    except XaiError as exc:
        raise fail(exc) from None
    for line in result.lines:
        out.print(line)
    if result.scores:
        out.print(score_table(result.scores, names))
    if result.random_weights:
        out.print("[bold red]random weights: the maps say nothing about a real model[/]")
    out.print(f"wrote {out_file}")


def score_table(scores: list[ImageScores], methods: list[str]) -> Table:
    """``--evaluate``'s table: a row per image and method, then the image's random map, a
    column per metric with its direction (the run's evaluation table, per image)."""
    metrics = list(scores[0].scores)
    table = Table(title="scores (each map against a random map's)", title_justify="left")
    for column in ("image", "method", *(f"{m} {'↑' if METRICS[m].higher_is_better else '↓'}"
                                        for m in metrics)):
        table.add_column(column, justify="right" if "↑" in column or "↓" in column
                         else "left")
    for item in scores:
        for j, name in enumerate([*methods, "random map"]):
            table.add_row(item.image if j == 0 else "", name,
                          *(f"{item.scores[m][j]:.3f}" for m in metrics),
                          style="dim" if j == len(methods) else None)
    return table
