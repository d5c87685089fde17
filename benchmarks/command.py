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

from pipeline.models.sources import arch_help

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _fail(message: object) -> typer.Exit:
    console.print(f"[bold red]error:[/] {escape(str(message))}")
    return typer.Exit(2)


def register(app: Any) -> None:
    """Add ``xai bench`` to ``app``."""
    app.command(short_help="our engine against Captum: speed, memory, error")(bench)


def bench(
    device: Annotated[str, typer.Option(
        metavar="DEVICE", help="cpu | cuda | cuda:N | auto")] = "cpu",
    images: Annotated[int, typer.Option(min=1, metavar="N", help="images per measurement")] = 4,
    size: Annotated[int, typer.Option(
        min=8, metavar="PX", help="crop size (224 for the real model)")] = 224,
    n_steps: Annotated[int, typer.Option(min=2, metavar="N", help="IG steps")] = 50,
    nt_samples: Annotated[int, typer.Option(min=1, metavar="N", help="SmoothGrad samples")] = 10,
    quick: Annotated[bool, typer.Option(
        "--quick", help="tiny settings, seconds (smoke test)")] = False,
    head: Annotated[str, typer.Option(
        metavar="HEAD", help="logits (plain torchvision) | softmax")] = "logits",
    out_dir: Annotated[Path, typer.Option(
        "--out", metavar="DIR", help="where bench-DEVICE.md/json go")] =
        Path("runs/bench"),
    arch: Annotated[list[str] | None, typer.Option(
        metavar="ARCH", help="measure IG against Captum and Grad-CAM against the gradient on this "
             f"architecture instead (repeatable; {arch_help()}; hf:DIR for a Hugging "
             "Face model folder, hf:ORG/NAME for a cached one)")] = None,
) -> None:
    """Benchmark our engine against Captum (speed ratios, peak memory, error vs float64)."""
    from benchmarks.bench import run_bench, save, to_markdown
    from pipeline.errors import XaiError
    from workflows.runner.worker import resolve_device

    command = "xai bench " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "xai bench"
    try:
        dev = str(resolve_device(device))
    except XaiError as exc:
        raise _fail(exc) from None
    except RuntimeError:
        raise _fail(f"Expected --device auto, cpu, cuda or cuda:N, got {device!r}.") from None
    if arch:
        _bench_archs(arch, dev, images, size, n_steps, quick, head, out_dir, command)
        return
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


def _bench_archs(archs: list[str], dev: str, images: int, size: int, n_steps: int,
                 quick: bool, head: str, out_dir: Path, command: str) -> None:
    import json

    from benchmarks.bench_arch import hf_weights, measure_arch, to_markdown
    from pipeline.errors import XaiError
    from pipeline.models.sources import check_arch

    for name in archs:  # every name before any measurement
        if not hf_weights(name) and (problem := check_arch(name)) is not None:
            raise _fail(problem)
    results = []
    for name in archs:
        try:
            results.append(measure_arch(name, dev, images, size, n_steps, quick, head,
                                        reporter=lambda m: console.print(m, highlight=False)))
        except XaiError as exc:
            raise _fail(exc) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"bench-arch-{dev.replace(':', '')}"
    md = to_markdown(results, command)
    stem.with_suffix(".md").write_text(md + "\n")
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    out.print(md, markup=False, highlight=False)
    out.print(f"wrote {stem}.md and {stem}.json")
