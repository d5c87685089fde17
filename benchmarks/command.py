"""``xai bench``: the benchmark suite as a command of the CLI.

The command is registered through the ``xai.commands`` entry point (``pyproject.toml``), so
the package never imports the benchmarks: they live beside it and do not ship in the wheel.
This module stays light (typer and rich only); the measurements import when the command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _fail(message: object) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(str(message))}")
    return typer.Exit(2)


def register(app: Any) -> None:
    """Add ``xai bench`` to ``app``."""
    app.command()(bench)


def bench(
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N | auto")] = "cpu",
    images: Annotated[int, typer.Option(min=1, help="images per measurement")] = 4,
    size: Annotated[int, typer.Option(min=8, help="crop size (224 for the real model)")] = 224,
    n_steps: Annotated[int, typer.Option(min=2, help="IG steps")] = 50,
    nt_samples: Annotated[int, typer.Option(min=1, help="SmoothGrad samples")] = 10,
    quick: Annotated[bool, typer.Option(help="tiny settings, seconds (smoke test)")] = False,
    head: Annotated[str, typer.Option(help="logits (plain torchvision) | softmax")] = "logits",
    out_dir: Annotated[Path, typer.Option("--out", help="where bench-<device>.md/json go")] =
        Path("runs/bench"),
) -> None:
    """Benchmark our engine against Captum (speed ratios, peak memory, error vs float64)."""
    from benchmarks.bench import run_bench, save, to_markdown
    from pipeline.errors import XaiError
    from workflows.worker import resolve_device

    command = "xai bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "xai bench"
    try:
        dev = str(resolve_device(device))
    except XaiError as exc:
        raise _fail(exc) from None
    except RuntimeError:
        raise _fail(f"Expected --device auto, cpu, cuda or cuda:N, got {device!r}.") from None
    try:
        res = run_bench(device=dev, images=images, size=size, n_steps=n_steps,
                        nt_samples=nt_samples, quick=quick, head=head,
                        reporter=lambda m: console.print(m, highlight=False))
    except XaiError as exc:
        raise _fail(exc) from None
    except RuntimeError as exc:
        if "CUDA" in str(exc) or "cuda" in str(exc):
            raise _fail(f"Expected a usable {device} device: {exc}") from None
        raise
    md, js = save(res, out_dir, command)
    out.print(to_markdown(res, command), markup=False, highlight=False)
    out.print(f"wrote {md} and {js}")
