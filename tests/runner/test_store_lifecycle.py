"""The store's lifecycle before any work: methods checked against what the model source
can give them."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipeline.errors import ConfigError
from workflows.config.loading import load_config
from workflows.runner.store_lifecycle import resolve_methods


def _config(tmp_path, weights: str, methods: str):
    (tmp_path / "images").mkdir()
    path = tmp_path / "c.toml"
    path.write_text(f'[dataset]\nroot = "images"\n[model]\nweights = "{weights}"\n{methods}')
    return load_config(path)


@pytest.mark.parametrize("method", ["grad_cam", "guided_backprop", "deeplift"])
def test_a_hook_method_on_an_exported_program_is_refused_before_any_work(tmp_path, method):
    (tmp_path / "model.pt2").write_bytes(b"never read: the refusal comes first")
    cfg = _config(tmp_path, "model.pt2", f"[methods.{method}]\n")
    with pytest.raises(ConfigError) as err:
        resolve_methods(cfg, SimpleNamespace(model=None))
    message = str(err.value)
    assert message.startswith(f"[methods.{method}]: expected a model with modules to hook, "
                              f"got an exported program ({tmp_path / 'model.pt2'}), which "
                              "runs operators, not modules.")
    assert message.endswith(f"or drop [methods.{method}].")


def test_a_method_without_hooks_on_an_exported_program_resolves_unchanged(tmp_path):
    (tmp_path / "model.pt2").write_bytes(b"never read")
    cfg = _config(tmp_path, "model.pt2", "[methods.gradient]\n[methods.smoothgrad]\n")
    assert resolve_methods(cfg, SimpleNamespace(model=None)).methods == cfg.methods


def test_labels_that_changed_under_a_kept_store_are_said(tmp_path):
    """Same files, a label edited in the CSV: the rerun keeps the store (and its old labels)
    and says how many labels differ and how to take the new ones."""
    import numpy as np
    from PIL import Image

    from tests.workflow_helpers import cli, write_config

    data = tmp_path / "data"
    data.mkdir()
    for i, name in enumerate(("a.png", "b.png")):
        Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)).save(data / name)
    (data / "labels.csv").write_text("path,label\na.png,tabby\nb.png,espresso\n")
    config = write_config(tmp_path / "run.toml", data, tmp_path / "out", methods=("gradient",))
    config.write_text(config.read_text().replace('layout = "plain"', 'layout = "auto"'))
    args = ("run", "--config", str(config), "--scheduler", "synchronous")
    first = cli(*args)
    assert first.exit_code == 0, first.output
    assert "labels found in the dataset differ" not in first.output
    (data / "labels.csv").write_text("path,label\na.png,tabby\nb.png,tench\n")
    again = cli(*args)
    assert again.exit_code == 0, again.output
    assert ("The labels found in the dataset differ from the store's for 1 of 2 images "
            "(layout: flat-csv)") in " ".join(again.output.split())
    assert "--force ingest" in again.output
