"""The import layering in ``pyproject.toml`` ([tool.importlinter]), checked with
import-linter as ``make lint`` does: the project keeps every contract, and a copy of the
project with imports planted against them breaks each one."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.workflow_helpers import ROOT

CONTRACTS = ("project-layers", "pipeline-layers", "workflows-layers", "no-cycles")

#: Run in the folder to check: each contract alone, through import-linter's Python API.
_LINT = """
import json, sys
from importlinter import configuration
from importlinter.application.use_cases import lint_imports

configuration.configure()

kept = {c: lint_imports(config_filename="pyproject.toml", limit_to_contracts=(c,),
                        cache_dir=None, no_logo=True) for c in sys.argv[1:]}
print("KEPT=" + json.dumps(kept))
"""


def kept_contracts(root: Path) -> tuple[dict[str, bool], str]:
    """Each contract of ``root``'s pyproject.toml: kept (True) or broken, for the packages in
    ``root`` (a fresh process: its import path starts at ``root``); and the linter's report."""
    done = subprocess.run([sys.executable, "-c", _LINT, *CONTRACTS], cwd=root, text=True,
                          capture_output=True, timeout=120, env={"PYTHONPATH": str(root)})
    line = [x for x in done.stdout.splitlines() if x.startswith("KEPT=")]
    assert line, done.stdout + done.stderr
    return json.loads(line[-1].removeprefix("KEPT=")), done.stdout


def test_the_project_keeps_every_import_contract():
    kept, report = kept_contracts(ROOT)
    assert kept == dict.fromkeys(CONTRACTS, True), report


def _copy_sources(dest: Path) -> None:
    """The three packages' Python files and pyproject.toml: all the linter reads."""
    shutil.copy(ROOT / "pyproject.toml", dest)
    for package in ("pipeline", "workflows", "benchmarks"):
        for path in (ROOT / package).rglob("*.py"):
            target = dest / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)


def _plant(path: Path, line: str) -> None:
    path.write_text(path.read_text() + "\n" + line + "\n")


def test_imports_planted_against_each_contract_are_caught(tmp_path):
    _copy_sources(tmp_path)
    # The library reaching up into the orchestration, lazily (inside a function).
    _plant(tmp_path / "pipeline" / "errors.py",
           "def _planted():\n    from workflows.config import loading  # noqa")
    # The store reaching up into the report.
    _plant(tmp_path / "pipeline" / "store" / "__init__.py", "import pipeline.report  # noqa")
    # The config reaching up into the command line, which imports the config: a cycle.
    _plant(tmp_path / "workflows" / "config" / "__init__.py", "import workflows.cli.app  # noqa")
    kept, report = kept_contracts(tmp_path)
    assert kept == dict.fromkeys(CONTRACTS, False), report
    for planted in ("pipeline.errors -> workflows.config.loading",
                    "pipeline.store -> pipeline.report", "workflows.config -> workflows.cli",
                    "No cycles are allowed in workflows."):
        assert planted in report, planted
