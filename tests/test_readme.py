"""The README's code examples run as written (paths pointed at a fresh run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.workflow_helpers import cli

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
