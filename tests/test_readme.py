"""The README's code examples run as written (paths pointed at a fresh run)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.workflow_helpers import cli, make_images, write_config

README = Path(__file__).resolve().parent.parent / "README.md"


def _replace(code: str, old: str, new: str) -> str:
    """``code.replace(old, new)``, failing loudly when the README no longer contains ``old``."""
    assert old in code, f"the README example no longer contains {old!r}: update this test"
    return code.replace(old, new)


def _block(heading: str) -> str:
    text = README.read_text()
    section = text[text.index(heading):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block under {heading}"
    return match.group(1)


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("readme")
    result = cli("run", "--dataset", "sample", "--out", str(out), "--weights", "random",
                 "--device", "cpu", "--scheduler", "synchronous",
                 "--set", "methods.integrated_gradients.n_steps=4",
                 "--set", "methods.custom_integrated_gradients.n_steps=4",
                 "--set", "methods.smoothgrad.nt_samples=2")
    assert result.exit_code == 0, result.output
    return out / "sample" / "store.zarr"


def test_analysis_example_runs(sample_store, capsys):
    code = _replace(_block("## Analysing the results"), "runs/sample/store.zarr",
                    str(sample_store))
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "custom_integrated_gradients" in printed
    assert "random:seed=0" in printed
    # The example's plain-string conversion: `.tolist()` (`.astype(str)` raises on StringDType).
    assert "explainers: ['gradient', 'integrated_gradients'" in printed


def test_library_example_runs(monkeypatch):
    root = README.parent
    monkeypatch.chdir(root)
    code = _replace(_block("## Library use"), 'load_model("imagenet")', 'load_model("random")')
    code = _replace(code, "get_custom_integrated_gradients(model, x, 50)",
                    "get_custom_integrated_gradients(model, x, 4)")
    code = _replace(code, "get_integrated_gradients(model, x)",
                    "get_integrated_gradients(model, x, n_steps=4)")
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert tuple(scope["heat"].shape) == (224, 224)


def test_export_example_runs_and_loads(tmp_path, monkeypatch):
    """The three-line export gives a program the pipeline loads (dynamic batch included)."""
    import torch

    from pipeline.models.loading import load_model

    monkeypatch.chdir(tmp_path)
    exec(compile(_block("## Explaining your own model"), "README.md", "exec"), {})
    loaded = load_model(tmp_path / "model.pt2", "logits")
    assert loaded.arch == "exported" and len(loaded.classes) == 10
    with torch.no_grad():
        assert loaded.backbone(torch.zeros(3, 3, 224, 224)).shape == (3, 10)


# ------------------------------------------------------------------ shell commands

#: How a README command line may start: every one of these works without ``uv`` on the PATH.
COMMAND_STARTS = ("make ", "xai ", "dask ", "source .venv/bin/activate", "CUDA_VISIBLE_DEVICES=")


def _shell_commands() -> list[str]:
    """Every command the README shows: lines of its bash blocks and inline commands that
    start like one (comments dropped)."""
    text = README.read_text()
    lines = [ln.split("  #")[0].strip()
             for block in re.findall(r"```bash\n(.*?)```", text, re.S)
             for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]
    inline = [m for m in re.findall(r"`([^`\n]+)`", text)
              if m.startswith(("make ", "uv ", "xai ", "dask ", "python ", "pip "))]
    return lines + inline


def test_readme_commands_need_no_uv_on_the_path():
    commands = _shell_commands()
    assert any(c.startswith("make xai") for c in commands)
    bad = [c for c in commands if not c.startswith(COMMAND_STARTS)]
    assert not bad, f"README commands that need uv (or another tool) on the PATH: {bad}"


def _path_without_uv() -> str:
    """$PATH less ``~/.local/bin`` and every folder that holds a ``uv`` executable."""
    keep = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        p = Path(folder).expanduser()
        if p == Path.home() / ".local" / "bin" or (p / "uv").exists():
            continue
        keep.append(folder)
    return os.pathsep.join(keep)


def test_readme_make_commands_work_without_uv_on_the_path(tmp_path):
    """`make help`, `make xai`, `make run/status/clean DATASET=…` as the README writes them,
    from a shell whose PATH lacks ~/.local/bin (where pip puts uv)."""
    root = tmp_path / "images"
    make_images(root, n=2, broken=False)
    confs = tmp_path / "configs"
    write_config(confs / "tiny.toml", root, tmp_path / "runs", methods=("gradient",))
    env = {**os.environ, "PATH": _path_without_uv(), "XAI_CONFIG_DIR": str(confs),
           "MPLBACKEND": "Agg"}
    assert shutil.which("uv", path=env["PATH"]) is None

    def make(*args: str) -> str:
        done = subprocess.run(["make", "--no-print-directory", *args], cwd=README.parent,
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"make {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    assert "make xai ARGS=" in make("help")
    assert "Usage: xai" in make("xai", "ARGS=--help")
    assert "images: 2 (2 explained" in make("run", "DATASET=tiny", "ARGS=--scheduler synchronous")
    assert "done" in make("status", "DATASET=tiny")
    assert "cache:" in make("xai", "ARGS=weights status")
    make("clean", "DATASET=tiny", "ARGS=--yes")
    assert not (tmp_path / "runs" / "tiny" / "store.zarr").exists()


def test_the_guarantees_count_every_crash_point_of_the_registry():
    from workflows.stages import REGISTRY

    points = sum(len(stage.crash_points) for stage in REGISTRY)
    assert f"every crash point the stage registry declares, {points} in all" in README.read_text()


def test_every_root_attribute_of_the_store_is_in_the_readme(sample_store):
    import zarr

    attrs = set(zarr.open_group(str(sample_store), mode="r").attrs)
    text = README.read_text()
    paragraph = text[text.index("Root\nattributes:"):text.index("## Analysing the results")]
    missing = sorted(a for a in attrs if f"`{a}`" not in paragraph)
    assert not missing, f"root attributes the README does not describe: {missing}"
