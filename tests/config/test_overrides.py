from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from workflows.config.overrides import apply_command_line, apply_overrides, parse_override


def test_overrides_are_read_as_toml_else_string():
    assert parse_override("run.shard_size=16") == (["run", "shard_size"], 16)
    assert parse_override("run.device=cpu") == (["run", "device"], "cpu")
    assert parse_override("methods.smoothgrad.stdevs=0.1") == (
        ["methods", "smoothgrad", "stdevs"], 0.1)
    assert parse_override(" evaluate.metrics = ['a', 'b'] ") == (
        ["evaluate", "metrics"], ["a", "b"])
    for bad in ("shard_size=3", "run.shard_size", "run..seed=1"):
        with pytest.raises(ConfigError, match=r"section\.key=value"):
            parse_override(bad)


def test_apply_overrides_copies_and_refuses_to_write_into_a_value():
    raw = {"run": {"seed": 1}}
    out = apply_overrides(raw, ["run.seed=2", "methods.gradient.abs=false"])
    assert out == {"run": {"seed": 2}, "methods": {"gradient": {"abs": False}}}
    assert raw == {"run": {"seed": 1}}
    with pytest.raises(ConfigError, match=r"--set 'run.seed.x=1': 'seed' is not a table"):
        apply_overrides(raw, ["run.seed.x=1"])


def test_the_command_line_writes_options_over_the_tables(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tables = {"dataset": {"root": "rel"}, "run": {"out": "rel"}}
    apply_command_line(tables, ["dataset.root=rel"], {"XAI_DATA_DIR": "/env"}, data_dir=None,
                       out=Path("o"), weights="random", device="cpu", arch="vgg16",
                       name="n")
    assert tables == {
        "dataset": {"root": str(tmp_path / "rel"), "name": "n"},  # --set: against the cwd
        "run": {"out": str(tmp_path / "o"), "device": "cpu"},
        "model": {"weights": "random", "arch": "vgg16"},
    }
    env_only: dict = {}
    apply_command_line(env_only, [], {"XAI_DATA_DIR": "/env"}, data_dir=None, out=None,
                       weights=None, device=None)
    assert env_only == {"dataset": {"root": "/env"}, "run": {}, "model": {}}
