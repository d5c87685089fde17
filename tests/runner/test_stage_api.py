"""A stage plugin from outside the project: one class and its array family, in a registry of
its own, run, killed, resumed, and seen by status, verify and clean; nothing else edited."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.store.access import open_store
from pipeline.store.arrays import array
from pipeline.store.schema import SCHEMA, STORE_ATTRIBUTES, ArrayFamily
from tests.workflow_helpers import make_images, records, spawn, write_config
from workflows.config.loading import load_config
from workflows.config.run_config import Config
from workflows.runner import fault_injection as faults
from workflows.runner.disk_writes import disk_errors
from workflows.runner.stage_api import Stage, Task, done, open_view, unit_rows
from workflows.runner.stage_registry import StageRegistry

#: The toy stage's array: the mean brightness of each usable crop.
BRIGHTNESS = ArrayFamily("brightness", ("image",), "float32", float("nan"),
                         "mean pixel value of the crop (a toy plugin's array)")


class Toy(Stage):
    """Mean brightness of each crop: reads what ingest wrote, writes its own array."""

    name = "toy"
    reads = ("pixels", "status")
    writes = ("brightness",)
    crash_points = ("before-write", "after-write", "after-record")
    doc = "mean brightness of each crop"

    def depends(self, cfg: Config, method: str | None, weights_id: str) -> Any:
        return {"version": 1, "crop": cfg.dataset.crop}

    def run(self, task: Task) -> dict[str, Any]:
        store = open_view(task)
        data = store.rows(unit_rows(task), "pixels", "status")
        flat = data["pixels"].reshape(task.unit.size, -1).astype(np.float64)
        out = np.where(data["status"] == "ok", flat.mean(axis=1), np.nan).astype(np.float32)
        faults.point("toy:before-write")
        with disk_errors(task.store_path):
            store.array("brightness")[unit_rows(task)] = out
        return done(task, store)


def toy_registry() -> StageRegistry:
    """Fresh instances of the project's stages, then the toy, over the extended schema."""
    from workflows.stages import STAGES

    return StageRegistry([*(type(s)() for s in STAGES), Toy()], SCHEMA.extended(BRIGHTNESS))


def run(config: str) -> None:
    """Run the toy registry on ``config`` (what the killed subprocess does)."""
    from workflows.runner.run import run_pipeline

    run_pipeline(load_config(Path(config)), scheduler="synchronous", registry=toy_registry())


@pytest.fixture()
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    make_images(tmp_path / "images", n=5)
    config = write_config(tmp_path / "tiny.toml", tmp_path / "images", tmp_path / "runs",
                          methods=("gradient",))
    return config, tmp_path / "runs" / "tiny"


def _records(run_dir: Path, stage: str) -> dict[str, float]:
    return {k: float(r["finished"]) for k, r in records(run_dir, stage).items()  # type: ignore[arg-type]
            if "/" not in k}


def test_a_plugin_stage_runs_resumes_and_is_seen_by_status_verify_and_clean(tiny):
    from workflows.commands.clean import clean
    from workflows.commands.status import run_status
    from workflows.commands.verify import verify

    config, run_dir = tiny
    registry = toy_registry()
    assert registry["toy"].after == ("ingest",)
    assert registry["toy"].written_families == (BRIGHTNESS,)
    assert registry.writer_of("brightness") == "toy"
    proc = spawn(run, str(config), env={"XAI_FAULT": "toy:after-write:2"})
    output = proc.communicate(timeout=600)[0].decode()
    assert proc.returncode == -signal.SIGKILL, output
    assert len(_records(run_dir, "toy")) == 1, "killed after writing its second shard"
    ingest = _records(run_dir, "ingest")
    cfg = load_config(config)
    status = {(s.stage, s.method): s for s in run_status(cfg, registry).stages}
    # in images, as the bars count: one shard of 2 of the 6 images
    assert (status[("toy", None)].done, status[("toy", None)].total) == (2, 6)

    run(str(config))  # resumes: what was not recorded, nothing that was
    after = _records(run_dir, "ingest")
    assert all(after[k] == v for k, v in ingest.items()) and len(after) == 3
    assert len(_records(run_dir, "toy")) == 3
    group = open_store(run_dir / "store.zarr", mode="r")
    pixels, ok = np.asarray(array(group, "pixels")[:]), np.asarray(array(group, "status")[:])
    expected = np.where(ok == "ok", pixels.reshape(len(ok), -1).mean(axis=1), np.nan)
    np.testing.assert_allclose(np.asarray(array(group, "brightness")[:]), expected, rtol=1e-6)
    assert tuple(array(group, "brightness").metadata.dimension_names) == ("image",)
    assert set(group.attrs) <= set(STORE_ATTRIBUTES), "every root attribute is declared"
    status = {(s.stage, s.method): s for s in run_status(cfg, registry).stages}
    assert status[("toy", None)].done == 6

    report = verify(cfg, repair=True, registry=registry)
    assert not report.damaged and report.checked == len(registry.all_units(6, cfg))
    chunk = run_dir / "store.zarr" / "brightness" / "c" / "1"
    chunk.unlink()
    report = verify(cfg, repair=True, registry=registry)
    assert [(name, index) for name, index, _ in report.damaged] == [("toy", 1)]
    assert "toy" in clean(cfg, "toy", registry)
    assert not _records(run_dir, "toy") and _records(run_dir, "ingest") == after


def test_the_default_registry_has_no_toy():
    from workflows.stages import REGISTRY

    assert "toy" not in REGISTRY and "brightness" not in REGISTRY.schema
