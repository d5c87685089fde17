"""A run made by an earlier version of the code stays done: rerunning it recomputes nothing.

``tests/fixtures/existing_runs/`` holds three finished runs written by the code of commit
6338a7c (its README.md says how they were made): every stage and every method with default
parameters (``defaults``), every parameter and choice away from its default (``options``),
and default values spelled out in the file and with ``--set`` (``spelled_defaults``). Each
test copies the folder, so the runs live elsewhere than where they were made, as a moved run
folder does, and drives the current CLI with the options that made the run.

A rerun with nothing to do may rewrite only the files listed in :data:`REWRITTEN` (the code
of 6338a7c rewrites the same ones in a moved run folder); every other file, the whole store
and every completion record included, must stay byte-identical, and the rewritten ones must
differ from the fixture's only where their reason says.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "existing_runs"

#: Each run of the fixture and the options, beyond ``--config <name>.toml``, that made it.
RUNS: dict[str, tuple[str, ...]] = {
    "defaults": (),
    "options": (),
    "spelled_defaults": ("--set", "methods.custom_gradient.absolute=false"),
}
SCHEDULER = ("--scheduler", "synchronous")

#: The files of a run folder that a rerun with nothing to do rewrites, and why.
REWRITTEN = {
    "run.lock": "it names the process that ran last: its pid, host and start time",
    "config.toml": "it names the config file, the images and the output folder by absolute "
                   "path, and the copy lives elsewhere than the run that was made (its "
                   "values are compared, not its text: the TOML writer may lay them out "
                   "differently)",
    "config.resolved.json": "the same paths, and the hash of the requested config, which "
                            "covers them",
    "store.zarr/zarr.json": "the store's root attributes hold the resolved config (the same "
                            "paths), its hash, and the installed package versions",
    "summary.json": "it keeps this run's own time and date, and appends this run's entry to "
                    "the history",
}

#: Keys of ``config.resolved.json`` beside the resolved config itself.
RESOLVED_EXTRAS = ("requested", "stage_hashes", "weights_id", "device", "scheduler",
                   "package_versions")

#: Keys of ``summary.json`` that describe the command that wrote it, not the stages' results
#: (the code of 6338a7c changes the same ones on a rerun with nothing to do).
SUMMARY_OF_THIS_RUN = {
    "run_at": "when this command ran",
    "seconds": "its wall time",
    "sum_of_stage_seconds": "its stages' busy time: 0.0, as it ran no unit",
    "run_dir": "where the run folder is now",
    "history": "every command's own figures: this one's is appended",
    "report": "the report this command built, absent when it built none",
}
#: ``summary.json`` keys newer than the fixture's runs, which a rerun adds.
SUMMARY_ADDED = {
    "layout": "the dataset layout the run used",
    "labelled": "how many of its images have a label",
    "degenerate": "degenerate output found in the store (empty: none)",
}


def stable_hash(value: Any) -> str:
    """The store's short config hash: SHA-256 of the sorted, compact JSON, 16 hex digits
    (the fixture's own hashes are checked against it, so this is the format, not a copy of
    the code under test)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file below ``root``, keyed by its path relative to ``root``."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def made_in() -> str:
    """The folder the fixture's runs were made in (their files name it by absolute path)."""
    source = read_json(FIXTURE / "runs" / "defaults" / "config.resolved.json")["source"]
    return str(Path(source).parent)


def moved(value: Any, old: str, new: str) -> Any:
    """``value`` with every string's ``old`` folder replaced by ``new``."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {k: moved(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [moved(v, old, new) for v in value]
    return value


def requested_config(resolved: dict[str, Any], config_file: Path) -> dict[str, Any]:
    """The config a run was asked for, from its ``config.resolved.json``: without the
    extras and the file it came from, and with each layer method's ``layer`` as the config
    file gives it (``""``: found from the model, which the resolved config names)."""
    asked = tomllib.loads(config_file.read_text()).get("methods", {})
    out = copy.deepcopy({k: v for k, v in resolved.items()
                         if k not in (*RESOLVED_EXTRAS, "source")})
    for name, params in out["methods"].items():
        if "layer" in params:
            params["layer"] = asked.get(name, {}).get("layer", "")
    return out


def stage_summary(run: str) -> dict[str, int]:
    """``stage -> units`` of every stage the fixture's run computed (its summary.json)."""
    stages = read_json(FIXTURE / "runs" / run / "summary.json")["stages"]
    return {st["stage"]: int(st["units_total"]) for st in stages}


def invoke(*args: str) -> Any:
    """``xai ARGS`` in this process, on a console wide enough for whole table rows."""
    from workflows.cli.app import app

    result = CliRunner().invoke(app, list(args), catch_exceptions=False,
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result


def run_table(output: str) -> dict[str, tuple[int, int]]:
    """``stage -> (units run, units in all)`` from ``xai run``'s summary table."""
    rows = re.findall(r"^[│|]\s*(\w+)\s*[│|]\s*(\d+)/(\d+)\s*[│|]", output, re.MULTILINE)
    return {stage: (int(done), int(total)) for stage, done, total in rows}


def status_rows(output: str) -> list[list[str]]:
    """The rows of ``xai status``'s stage table: stage, explainer, done, of, stale, state."""
    rows: list[list[str]] = []
    inside = False
    for line in output.splitlines():
        if line.startswith("┃") and line.split("┃")[1].strip() == "stage":
            inside = True
        elif inside and line.startswith("│"):
            rows.append([c.strip() for c in line.strip().strip("│").split("│")])
        elif inside and line.startswith("└"):
            break
    return rows


@pytest.fixture()
def copied(tmp_path: Path) -> Path:
    """A copy of the fixture folder, elsewhere than where its runs were made."""
    dst = tmp_path / "existing_runs"
    shutil.copytree(FIXTURE, dst)
    return dst


def assert_all_done(output: str, run: str) -> None:
    rows = status_rows(output)
    stages = {row[0] for row in rows}
    assert stages == set(stage_summary(run)), output
    for stage, explainer, done, total, stale, state in rows:
        assert (state, stale, done) == ("done", "0", total), \
            f"expected {stage} {explainer} done, got {state}, {stale} stale:\n{output}"


# ------------------------------------------------------------------------------ the fixture


def test_the_fixture_runs_finished_every_stage() -> None:
    """What the tests below rely on: ``defaults`` ran every stage, every run finished, and
    the fixture's hashes are :func:`stable_hash` of what they cover."""
    assert list(stage_summary("defaults")) == [
        "ingest", "predict", "attribute", "aggregate", "normalize", "render", "evaluate",
        "report"]
    methods = read_json(FIXTURE / "runs" / "defaults" / "config.resolved.json")["methods"]
    assert {"integrated_gradients", "custom_integrated_gradients", "grad_cam"} <= set(methods)
    for run in RUNS:
        folder = FIXTURE / "runs" / run
        for stage in read_json(folder / "summary.json")["stages"]:
            assert stage["units_run"] == stage["units_total"] > 0, (run, stage)
        resolved = read_json(folder / "config.resolved.json")
        attrs = read_json(folder / "store.zarr" / "zarr.json")["attributes"]
        assert attrs["config_hash"] == stable_hash(attrs["config"]), run
        assert resolved["requested"] == stable_hash(
            requested_config(resolved, FIXTURE / f"{run}.toml")), run


# ---------------------------------------------------------------------------- the rerun


@pytest.mark.parametrize("run", list(RUNS))
def test_a_rerun_recomputes_nothing_and_keeps_every_file(copied: Path, run: str) -> None:
    run_dir = copied / "runs" / run
    before = file_hashes(copied)
    assert_all_done(invoke("status", str(run_dir)).output, run)
    assert file_hashes(copied) == before, "xai status wrote to the run"

    result = invoke("run", "--config", str(copied / f"{run}.toml"), *SCHEDULER, *RUNS[run])

    assert "nothing was recomputed" in result.output, result.output
    assert run_table(result.output) == {stage: (0, units)
                                        for stage, units in stage_summary(run).items()}
    after = file_hashes(copied)
    assert after.keys() == before.keys(), "files added or removed: " \
        f"{sorted(after.keys() ^ before.keys())}"
    changed = {path for path in after if after[path] != before[path]}
    allowed = {f"runs/{run}/{name}" for name in REWRITTEN}
    assert changed <= allowed, f"rewritten by a rerun with nothing to do: {changed - allowed}"
    assert_rewritten_files_differ_only_where_expected(copied, run)
    assert_all_done(invoke("status", str(run_dir)).output, run)


def assert_rewritten_files_differ_only_where_expected(copied: Path, run: str) -> None:
    """Each file of :data:`REWRITTEN` against the fixture's: equal once the fixture's folder
    is replaced by the copy's, except where its reason says."""
    old, new = made_in(), str(copied)
    was, now = FIXTURE / "runs" / run, copied / "runs" / run

    lock = read_json(now / "run.lock")
    assert lock.keys() == read_json(was / "run.lock").keys()
    assert lock["pid"] == os.getpid()

    text_was = (was / "config.toml").read_text().replace(old, new)
    text_now = (now / "config.toml").read_text()
    assert text_now.splitlines()[0] == text_was.splitlines()[0]
    assert tomllib.loads(text_now) == tomllib.loads(text_was)

    resolved_was = moved(read_json(was / "config.resolved.json"), old, new)
    resolved_now = read_json(now / "config.resolved.json")
    installed = installed_versions(resolved_was["package_versions"])
    assert resolved_now["requested"] == stable_hash(
        requested_config(resolved_now, copied / f"{run}.toml"))
    assert resolved_now == {**resolved_was, "requested": resolved_now["requested"],
                            "package_versions": installed}

    attrs_was = moved(read_json(was / "store.zarr" / "zarr.json"), old, new)["attributes"]
    store_now = read_json(now / "store.zarr" / "zarr.json")
    assert store_now["attributes"]["config_hash"] == stable_hash(attrs_was["config"])
    assert store_now == {**read_json(was / "store.zarr" / "zarr.json"), "attributes": {
        **attrs_was, "config_hash": stable_hash(attrs_was["config"]),
        "package_versions": installed}}

    summary_was = read_json(was / "summary.json")
    summary_now = read_json(now / "summary.json")
    assert {k: v for k, v in summary_now.items()
            if k not in SUMMARY_OF_THIS_RUN and (k in summary_was or k not in SUMMARY_ADDED)} \
        == {k: v for k, v in summary_was.items() if k not in SUMMARY_OF_THIS_RUN}
    assert (summary_now["layout"], summary_now["labelled"]) == ("flat-csv", 1)
    assert summary_now["run_dir"] == str(now)
    assert summary_now["sum_of_stage_seconds"] == 0.0
    assert summary_now["history"][:-1] == summary_was["history"]
    assert set(summary_now["history"][-1]["units_run"].values()) == {0}


def installed_versions(recorded: dict[str, str]) -> dict[str, str]:
    """The installed version of each package the fixture recorded (``absent``: not
    installed): what the rerun records, the same as the fixture's while the environment is
    the one it was made in."""
    out = {}
    for name in recorded:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out
