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
