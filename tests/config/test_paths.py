from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from workflows.config.paths import (
    available_datasets,
    config_dir,
    own_images_config,
    resolve_config_path,
    run_config_path,
)

REPO = Path(__file__).resolve().parents[2]


def test_configs_live_in_the_repo_unless_the_environment_moves_them(tmp_path, monkeypatch):
    monkeypatch.delenv("XAI_CONFIG_DIR", raising=False)
    assert config_dir() == REPO / "configs"
    assert own_images_config() == REPO / "configs" / "templates" / "own.toml"
    monkeypatch.setenv("XAI_CONFIG_DIR", str(tmp_path))
    (tmp_path / "b.toml").write_text("")
    (tmp_path / "a.toml").write_text("")
    assert available_datasets() == ["a", "b"]
    assert resolve_config_path("a", None) == tmp_path / "a.toml"
    assert resolve_config_path(None, tmp_path / "b.toml") == tmp_path / "b.toml"


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ConfigError, match=r"Known datasets: .*sample"):
        resolve_config_path("nope", None)


def test_a_run_folder_needs_its_saved_config(tmp_path):
    with pytest.raises(ConfigError, match="but that folder does not exist"):
        run_config_path(tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"but it holds no config\.toml"):
        run_config_path(tmp_path)
    (tmp_path / "config.toml").write_text("")
    assert resolve_config_path("ignored", None, run_dir=tmp_path) == tmp_path / "config.toml"
    with pytest.raises(ConfigError, match="Expected a config file at"):
        resolve_config_path(None, tmp_path / "none.toml")
