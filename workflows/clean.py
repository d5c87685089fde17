"""``xai clean``: remove a run, or one stage's records (and those of the stages after it)."""

from __future__ import annotations

import shutil

from workflows.config import Config
from workflows.plan import Registry
from workflows.state import Records, RunLock


def clean(cfg: Config, stage: str | None = None, registry: Registry | None = None) -> str:
    """Remove a whole run (``stage=None``) or one stage's records and output folders, and
    those of every stage after it that reads its output."""
    from workflows.stages import REGISTRY

    reg = registry or REGISTRY
    run_dir = cfg.run_dir
    names = reg.through(stage, "the stage to clean") if stage is not None else ()
    if not run_dir.exists():
        return f"nothing to clean at {run_dir}"
    with RunLock(run_dir):
        if stage is None:
            for child in run_dir.iterdir():
                if child.name != "run.lock":
                    if child.is_dir():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            return f"removed the run at {run_dir}"
        records = Records(run_dir)
        for name in names:
            records.clear(name)
            for folder in reg[name].output_dirs:
                shutil.rmtree(run_dir / folder, ignore_errors=True)
        return f"cleared {', '.join(names)} at {run_dir}: they are recomputed on the next run"
