"""A tiny on-disk dataset and config for end-to-end tests through the CLI."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from PIL import Image
from typer.testing import CliRunner

from pipeline.attribution.method_registry import DEFAULT_METHODS

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
                 params: dict[str, dict[str, object]] | None = None, extra: str = "",
                 methods: Sequence[str] = DEFAULT_METHODS, run_extra: str = "",
                 report: bool = False) -> Path:
    """A tiny plain-folder config. The report stage is off unless ``report`` (it adds about
    2 s to every run; the report's own tests and the crash matrix turn it on)."""
    params = {**TINY_PARAMS, **(params or {})}
    if not report and "[report]" not in extra:
        extra += "\n[report]\nenabled = false\n"
    lines = [
        "[dataset]", 'layout = "plain"', f'root = "{root}"', "resize = 40", "crop = 32", "",
        "[model]", 'weights = "random"', 'head = "softmax"', "",
        "[run]", f'out = "{out}"', 'device = "cpu"', f"shard_size = {shard_size}", "seed = 0",
        "max_batch = 8", run_extra, "",
        "[render]", "images_per_sheet = 4", "",
    ]
    for name in methods:
        lines.append(f"[methods.{name}]")
        for key, value in params.get(name, {}).items():
            lines.append(f"{key} = {value}")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + extra)
    return path


def cli(*args: str) -> object:
    from workflows.cli.app import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


class Child:
    """A process started by :func:`spawn`, with the part of ``subprocess.Popen`` the tests
    use: ``pid``, ``poll``, ``wait``, ``send_signal``, ``communicate`` (output as bytes,
    stdout and stderr together) and ``returncode`` (``-N`` when signal N ended it)."""

    def __init__(self, process: Any, output: Path) -> None:
        self._process, self._output = process, output

    @property
    def pid(self) -> int:
        return int(self._process.pid)

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return None if self._process.is_alive() else self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        self._process.join(timeout)
        if self._process.is_alive():
            raise subprocess.TimeoutExpired("xai", timeout or 0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def communicate(self, timeout: float | None = None) -> tuple[bytes, None]:
        self.wait(timeout)
        return self._output.read_bytes(), None


_FORKSERVER: Any = None
_SPAWNED = iter(range(1 << 30))


def spawn(target: Any, *args: Any, env: dict[str, str] | None = None) -> Child:
    """``target(*args)`` in a new process: a child of a fork server that has torch and the
    project imported (:mod:`tests.cli_child`), with the test's environment plus ``env``."""
    import multiprocessing
    import tempfile

    from tests import cli_child

    global _FORKSERVER
    if _FORKSERVER is None:
        _FORKSERVER = multiprocessing.get_context("forkserver")
        _FORKSERVER.set_forkserver_preload(["tests.cli_child"])
    full_env = {**os.environ, "MPLBACKEND": "Agg", **(env or {})}
    output = Path(tempfile.gettempdir()) / f"xai-child-{os.getpid()}-{next(_SPAWNED)}.out"
    process = _FORKSERVER.Process(target=cli_child.child,
                                  args=(target, args, full_env, str(output), str(ROOT)))
    process.start()
    return Child(process, output)


def run_subprocess(*args: str, env: dict[str, str] | None = None) -> Child:
    """``python -m workflows ARGS`` as its own process (see :func:`spawn`)."""
    from tests import cli_child

    return spawn(cli_child.run_command, list(args), env=env)


def run_ok(config: Path, *extra: str, scheduler: str = "synchronous") -> object:
    """``xai run --config CONFIG`` in-process; fails the test with the output if it fails."""
    result = cli("run", "--config", str(config), "--scheduler", scheduler, *extra)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    return result


def store_arrays(store: Path) -> dict[str, np.ndarray]:
    """Every array of the store that the schema declares, as numpy (strings as Python
    strings): what "equals a clean run" compares."""
    import zarr

    from pipeline.store.schema import SCHEMA

    names = SCHEMA.arrays(zarr.open_group(str(store), mode="r"))
    ds = xr.open_zarr(store, consolidated=False)
    out = {}
    for name in names:
        values = ds[name].values
        out[name] = np.asarray(values.tolist(), dtype=object) if values.dtype.kind in "OTU" \
            else values
    return out


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray],
                rtol: float | None = None) -> None:
    """Bit-identical arrays, or equal within ``rtol`` (floats; NaN where NaN)."""
    assert a.keys() == b.keys()
    for name in a:
        if rtol is not None and a[name].dtype.kind == "f":
            np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def records(run_dir: Path, stage: str) -> dict[str, dict[str, object]]:
    """The completion records of ``stage`` (all methods), keyed ``[method/]NNNNNN``."""
    from workflows.runner.completion_records import Records

    recs = Records(run_dir)
    return {key.removeprefix(stage + "/"): rec for folder in recs.folders(stage)
            for key, rec in recs.entries(folder).items()}


def all_records(run_dir: Path) -> dict[str, dict[str, object]]:
    """Every completion record of the run, keyed ``stage[/method]/NNNNNN``."""
    state = run_dir / "state"
    stages = {p.name.removesuffix(".jsonl") for p in state.iterdir()} if state.is_dir() else ()
    return {f"{stage}/{k}": v for stage in sorted(stages) for k, v in records(run_dir,
                                                                              stage).items()}


def finished(run_dir: Path, stage: str) -> dict[str, float]:
    """When each record of ``stage`` was written."""
    return {k: float(v["finished"]) for k, v in records(run_dir, stage).items()}  # type: ignore[arg-type]


def copy_run(src: Path, dst: Path, config_name: str = "tiny.toml", **config: Any) -> Path:
    """A finished run made under ``src`` (its ``images/``, ``runs/`` and config), copied to
    ``dst`` with a config pointing at the copy; returns that config.

    The store's attributes still name ``src``'s folder until the next run rewrites them; a
    dataset root alone never makes a store differ (its identity is the ingest hash).
    """
    import shutil

    shutil.copytree(src / "images", dst / "images")
    if (src / "runs").exists():
        shutil.copytree(src / "runs", dst / "runs", symlinks=True)
    return write_config(dst / config_name, dst / "images", dst / "runs", **config)


def units_run(output: str) -> dict[str, str]:
    """``stage -> "run/total"`` for the stages that ran units, from ``xai run``'s summary
    table."""
    import re

    out = {}
    for line in output.splitlines():
        m = re.match(r"[│|]\s*(\w+)\s*[│|]\s*(\d+)/(\d+)", line)
        if m and m.group(2) != "0":
            out[m.group(1)] = f"{m.group(2)}/{m.group(3)}"
    return out
