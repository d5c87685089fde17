from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.methods import METHODS
from workflows.config import (
    available_datasets,
    config_dir,
    load_config,
    parse_override,
    resolve_config_path,
)


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(body)
    return path


MINIMAL = '[dataset]\nroot = "imgs"\n[methods.gradient]\n'


def test_shipped_configs_are_valid():
    assert {"sample", "imagenet-val-subset", "synthetic"} <= set(available_datasets())
    for name in available_datasets():
        cfg = load_config(config_dir() / f"{name}.toml")
        assert cfg.dataset.name == name
        assert set(cfg.method_names) <= set(METHODS)


def test_defaults_and_relative_paths_resolve_against_the_file(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL))
    assert cfg.dataset.root == (tmp_path / "imgs").resolve()
    assert cfg.run.out == Path("runs")  # the default is relative to the working directory
    assert cfg.methods["gradient"]["abs"] is True
    assert cfg.run_dir.name == "c"


@pytest.mark.parametrize("body,needle", [
    ('[dataset]\nroot = "x"\nlimt = 3\n[methods.gradient]\n',
     "line 3: unknown key `dataset.limt`; did you mean `dataset.limit`?"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[runn]\n', "unknown section or key 'runn'"),
    ('[dataset]\nroot = "x"\n[methods.gradiant]\n', "unknown method 'gradiant'"),
    ('[dataset]\nroot = "x"\n[methods.integrated_gradients]\nn_step = 3\n',
     "line 4: unknown key `methods.integrated_gradients.n_step`; did you mean "
     "`methods.integrated_gradients.n_steps`?"),
    ('[dataset]\nroot = "x"\n[methods.integrated_gradients]\nn_steps = 1\n', "n_steps >= 2"),
    ('[dataset]\nroot = "x"\n[methods.smoothgrad]\nstdevs = "big"\n', "stdevs to be float"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[run]\nshard_size = 0\n', "shard_size"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[run]\nprecision = "fp16"\n',
     "fp32, fp32-fwd, tf32, bf16"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[run]\ndevice = "tpu"\n', "cuda:N"),
    ('[dataset]\nlayout = "zip"\nroot = "x"\n[methods.gradient]\n', "layout"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[render]\ncolormap = "nope"\n',
     "[render] colormap: expected a matplotlib colormap name (e.g. inferno, viridis"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[render]\nsigned_colormap = "nope"\n',
     "[render] signed_colormap: expected a matplotlib colormap name (e.g. RdBu_r"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[render]\nclip_percentile = 0\n',
     "clip_percentile: expected a number in (0, 100], got 0"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[render]\nclip_percentile = "p99"\n',
     "clip_percentile: expected a number"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[render]\ndpi = 100\n',
     "[render] dpi: no longer used"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[run]\nprefetch = true\n',
     "[run] prefetch: no longer used"),
    ('[dataset]\nroot = "x"\n', "at least one [methods.<name>]"),
    ('[dataset]\n[methods.gradient]\n', "root"),
    ('[dataset\n', "not valid TOML"),
])
def test_bad_configs_name_key_and_file(tmp_path, body, needle):
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_overrides_are_read_as_toml_else_string(tmp_path):
    assert parse_override("run.shard_size=16") == (["run", "shard_size"], 16)
    assert parse_override("run.device=cpu") == (["run", "device"], "cpu")
    assert parse_override("methods.smoothgrad.stdevs=0.1") == (
        ["methods", "smoothgrad", "stdevs"], 0.1)
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        parse_override("shard_size=3")
    cfg = load_config(_write(tmp_path, MINIMAL),
                      ["run.shard_size=5", "methods.integrated_gradients.n_steps=7"])
    assert cfg.run.shard_size == 5
    assert cfg.methods["integrated_gradients"]["n_steps"] == 7
    with pytest.raises(ConfigError, match="shard_size"):
        load_config(_write(tmp_path, MINIMAL), ["run.shard_size=many"])


def test_command_line_paths_resolve_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(_write(tmp_path, MINIMAL), data_dir=Path("elsewhere"), out=Path("o"))
    assert cfg.dataset.root == tmp_path / "elsewhere"
    assert cfg.run.out == tmp_path / "o"


def test_data_dir_environment_variable(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL), env={"XAI_DATA_DIR": str(tmp_path / "env")})
    assert cfg.dataset.root == tmp_path / "env"
    cli_wins = load_config(_write(tmp_path, MINIMAL), data_dir=tmp_path / "cli",
                           env={"XAI_DATA_DIR": str(tmp_path / "env")})
    assert cli_wins.dataset.root == tmp_path / "cli"


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ConfigError, match=r"Known datasets: .*sample"):
        resolve_config_path("nope", None)


def test_config_is_frozen(tmp_path):
    import dataclasses

    cfg = load_config(_write(tmp_path, MINIMAL))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.run.seed = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.methods["gradient"]["abs"] = False  # type: ignore[index]


@pytest.mark.parametrize("override,needle", [
    ("run.shard_sze=4", "--set run.shard_sze=4: unknown key `run.shard_sze`; did you mean "
                        "`run.shard_size`?"),
    ("run.shard_size=-1", "--set run.shard_size=-1: [run] shard_size: expected an integer >= 1,"
                          " got -1"),
    ("methods.smoothgrad.nt_sample=3", "--set methods.smoothgrad.nt_sample=3: unknown key "
                                       "`methods.smoothgrad.nt_sample`; did you mean "
                                       "`methods.smoothgrad.nt_samples`?"),
    ("methods.smoothgrad.nt_samples=0", "--set methods.smoothgrad.nt_samples=0: "),
    ("methods.smothgrad.stdevs=1", "unknown method `methods.smothgrad`; did you mean "
                                   "`methods.smoothgrad`?"),
    ("rnu.seed=1", "--set rnu.seed=1: unknown section `rnu`; did you mean `run`?"),
    ("render.colormap=nope", "--set render.colormap=nope: [render] colormap"),
])
def test_bad_overrides_name_the_override_not_the_file(tmp_path, override, needle):
    path = _write(tmp_path, '[dataset]\nroot = "x"\n[methods.smoothgrad]\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, [override])
    assert needle in str(info.value)
    assert str(path) not in str(info.value)
