"""``xai clean``: remove a run, or one stage's records (and those of the stages after it)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import ConfigError
from workflows.config.run_config import Config
from workflows.runner.completion_records import Records
from workflows.runner.run_lock import RunLock
from workflows.runner.stage_registry import StageRegistry


def stages_from(reg: StageRegistry, stage: str, what: str = "STAGE") -> tuple[str, ...]:
    """``stage`` and every stage after it in the pipeline's order (the report included);
    a :class:`ConfigError` naming ``what`` (the argument the user typed) when it is none."""
    names = tuple(reg.names())
    if stage not in names:
        raise ConfigError(f"Expected {what} to be one of {', '.join(names)}, got {stage!r}.")
    return names[names.index(stage):]


def run_size(run_dir: Path) -> tuple[int, int]:
    """Files and bytes under ``run_dir``."""
    files = size = 0
    for path in run_dir.rglob("*"):
        if path.is_file():
            files += 1
            size += path.stat().st_size
    return files, size


def confirm_whole_removal(run_dir: Path, ask: Callable[[str], bool], can_ask: bool) -> bool:
    """Whether the user agrees to remove the whole run at ``run_dir``: ``ask`` gets the
    question (with the run's file count and size); without a terminal (``can_ask`` false)
    a :class:`ConfigError` says to pass ``--yes`` or name a stage."""
    files, size = run_size(run_dir)
    if not can_ask:
        raise ConfigError(f"Expected --yes to remove the whole run at {run_dir} "
                          f"({files} files) without a terminal to ask on. Pass --yes, "
                          "or name a STAGE to clear only that stage and those after it.")
    return ask(f"Remove the whole run at {run_dir} ({files} files, {size / 2**20:.1f} MiB)?")


def clean(cfg: Config, stage: str | None = None, registry: StageRegistry | None = None,
          what: str = "STAGE") -> str:
    """Remove a whole run (``stage=None``: every file, the lock included, and the folder) or
    clear ``stage`` and every stage after it: their records and output folders, so that the
    next run recomputes them."""
    from workflows.stages import REGISTRY

    reg = registry or REGISTRY
    run_dir = cfg.run_dir
    names = stages_from(reg, stage, what) if stage is not None else ()
    if not run_dir.exists():
        return f"nothing to clean at {run_dir}"
    with RunLock(run_dir) as lock:
        if stage is None:
            for child in run_dir.iterdir():
                if child.name == lock.path.name:
                    continue
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
            lock.path.unlink(missing_ok=True)  # while held: no other run starts on it
        else:
            records = Records(run_dir)
            for name in names:
                records.clear(name)
                for folder in reg[name].output_dirs:
                    shutil.rmtree(run_dir / folder, ignore_errors=True)
    if stage is None:
        with contextlib.suppress(OSError):  # something appeared meanwhile: keep the folder
            run_dir.rmdir()
        return f"removed the run at {run_dir}"
    return f"cleared {', '.join(names)} at {run_dir}: they are recomputed on the next run"
