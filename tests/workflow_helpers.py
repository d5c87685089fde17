"""A tiny on-disk dataset and config for end-to-end tests through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from pipeline.methods import METHODS

ROOT = Path(__file__).resolve().parent.parent

TINY_PARAMS = {
    "integrated_gradients": {"n_steps": 4},
    "smoothgrad": {"nt_samples": 2},
    "custom_integrated_gradients": {"n_steps": 4},
}


def make_images(folder: Path, n: int = 5, seed: int = 0, broken: bool = True) -> list[str]:
    """``n`` seeded 48x48 PNGs (one in a sub-folder) and, optionally, one undecodable file."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        rel = f"sub/img{i}.png" if i == n - 1 else f"img{i}.png"
        path = folder / rel
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(path)
        names.append(rel)
    if broken:
        (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
        names.append("broken.jpg")
    return sorted(names)


def write_config(path: Path, root: Path, out: Path, *, shard_size: int = 2,
                 params: dict[str, dict[str, object]] | None = None, extra: str = "") -> Path:
    params = {**TINY_PARAMS, **(params or {})}
    lines = [
        "[dataset]", 'layout = "plain"', f'root = "{root}"', "resize = 40", "crop = 32", "",
        "[model]", 'weights = "random"', 'head = "softmax"', "",
        "[run]", f'out = "{out}"', 'device = "cpu"', f"shard_size = {shard_size}", "seed = 0",
        "max_batch = 8", "",
        "[render]", "images_per_sheet = 4", "dpi = 40", "",
    ]
    for name in METHODS:
        lines.append(f"[methods.{name}]")
        for key, value in params.get(name, {}).items():
            lines.append(f"{key} = {value}")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + extra)
    return path


def cli(*args: str) -> object:
    from workflows.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def run_subprocess(*args: str, env: dict[str, str] | None = None, **kw: object
                   ) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, "MPLBACKEND": "Agg", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "workflows", *args], cwd=ROOT, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
