import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.attribution.method_registry import METHODS
from pipeline.errors import ConfigError
from workflows.config.loading import load_config
from workflows.config.paths import available_datasets, config_dir

REPO = Path(__file__).resolve().parents[2]
MINIMAL = '[dataset]\nroot = "imgs"\n[methods.gradient]\n'


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(body)
    return path


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
    assert cfg.methods["gradient"]["abs"] is True  # the stored spelling
    assert cfg.run_dir.name == "c"
    assert cfg.source == (tmp_path / "c.toml").resolve()


def _smoothgrad_keys() -> str:
    return ", ".join(METHODS["smoothgrad"].params)


@pytest.mark.parametrize("body,needle", [
    ('[dataset]\nroot = "x"\nlimt = 3\n[methods.gradient]\n',
     "line 3: unknown key `dataset.limt`; did you mean `dataset.limit`?"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[runn]\n', "unknown section or key 'runn'"),
    ('[dataset]\nroot = "x"\n[methods.gradiant]\n', "unknown method 'gradiant'"),
    ('[dataset]\nroot = "x"\n[methods.integrated_gradients]\nn_step = 3\n',
     "line 4: unknown key `methods.integrated_gradients.n_step`; did you mean "
     "`methods.integrated_gradients.n_steps`?"),
    ('[dataset]\nroot = "x"\n[methods.integrated_gradients]\nn_steps = 1\n',
     "line 4: [methods.integrated_gradients] expected n_steps >= 2, got 1"),
    ('[dataset]\nroot = "x"\n[methods.smoothgrad]\nstdevs = "big"\n',
     "line 4: [methods.smoothgrad] expected stdevs to be float, got 'big'"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[run]\nshard_size = 0\n',
     "line 5: [run] shard_size: expected shard_size >= 1, got 0"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[run]\nprecision = "fp16"\n',
     "line 5: [run] precision: expected precision to be one of fp32, fp32-fwd, tf32, bf16, "
     "got 'fp16'"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[run]\ndevice = "tpu"\n',
     "line 5: [run] device: expected auto, cpu, cuda or cuda:N, got 'tpu'"),
    ('[dataset]\nlayout = "zip"\nroot = "x"\n[methods.gradient]\n',
     "line 2: [dataset] layout: expected layout to be one of auto, class-folders"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[render]\ncolormap = "nope"\n',
     "[render] colormap: expected a matplotlib colormap name (e.g. inferno, viridis"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[render]\nsigned_colormap = "nope"\n',
     "[render] signed_colormap: expected a matplotlib colormap name (e.g. RdBu_r"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[render]\nclip_percentile = 0\n',
     "line 5: [render] clip_percentile: expected 0 < clip_percentile <= 100, got 0"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[render]\nclip_percentile = "p99"\n',
     "clip_percentile: expected a number, got 'p99'"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[render]\ndpi = 100\n',
     "line 5: [render] dpi: no longer used: sheets are now drawn"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[run]\nprefetch = true\n',
     "[run] prefetch: no longer used"),
    ('[dataset]\nroot = "x"\n', "expected at least one [methods.<name>] table, got none"),
    ('[dataset]\n[methods.gradient]\n', "[dataset] root: expected the image folder"),
    ('[dataset]\nroot = "x"\nlayout = "plain"\nshortcut = "circle"\n[methods.gradient]\n',
     "line 4: [dataset] shortcut: expected layout = \"evidence\" for a planted shortcut"),
    ('[dataset]\nroot = "x"\ncrop = 300\n[methods.gradient]\n',
     "line 3: [dataset] crop: expected crop <= resize (256), got 300"),
    ('[dataset]\nroot = "x"\nlimit = -1\ncount = 0\n[methods.gradient]\n',
     "line 3: [dataset] limit: expected limit >= 0, got -1"),  # the first bad key written
    ('[dataset\n', "not valid TOML"),
])
def test_bad_configs_name_key_and_file(tmp_path, body, needle):
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_crop_is_checked_against_the_models_resize(tmp_path):
    # inception's own preprocessing resizes to 342: a crop of 300 fits it
    path = _write(tmp_path, '[dataset]\nroot = "x"\ncrop = 300\n[model]\narch = '
                            '"inception_v3"\n[methods.gradient]\n')
    cfg = load_config(path, env={})
    assert (cfg.dataset.resize, cfg.dataset.crop) == (342, 300)


def test_overrides_are_applied_and_checked(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL),
                      ["run.shard_size=5", "methods.integrated_gradients.n_steps=7"])
    assert cfg.run.shard_size == 5
    assert cfg.methods["integrated_gradients"]["n_steps"] == 7
    with pytest.raises(ConfigError, match=re.escape(
            "--set run.shard_size=many: [run] shard_size: expected an integer, got 'many'")):
        load_config(_write(tmp_path, MINIMAL), ["run.shard_size=many"])


def test_command_line_paths_resolve_against_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(_write(tmp_path, MINIMAL), ["run.out=there"], data_dir=Path("elsewhere"))
    assert cfg.dataset.root == tmp_path / "elsewhere"
    assert cfg.run.out == tmp_path / "there"
    assert load_config(_write(tmp_path, MINIMAL), out=Path("o")).run.out == tmp_path / "o"


def test_data_dir_environment_variable(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL), env={"XAI_DATA_DIR": str(tmp_path / "env")})
    assert cfg.dataset.root == tmp_path / "env"
    cli_wins = load_config(_write(tmp_path, MINIMAL), data_dir=tmp_path / "cli",
                           env={"XAI_DATA_DIR": str(tmp_path / "env")})
    assert cli_wins.dataset.root == tmp_path / "cli"


def test_a_weights_file_resolves_against_the_file_or_the_working_directory(tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    body = MINIMAL + '[model]\nweights = "w.pth"\n'
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "c.toml"
    path.write_text(body)
    assert load_config(path, env={}).model.weights == str(tmp_path / "cfg" / "w.pth")
    assert load_config(path, env={}, weights="v.pth").model.weights == str(tmp_path / "v.pth")
    assert load_config(path, env={}, weights="random").model.weights == "random"


@pytest.mark.parametrize("override,needle", [
    ("run.shard_sze=4", "--set run.shard_sze=4: unknown key `run.shard_sze`; did you mean "
                        "`run.shard_size`?"),
    ("run.shard_size=-1", "--set run.shard_size=-1: [run] shard_size: expected "
                          "shard_size >= 1, got -1"),
    ("methods.smoothgrad.nt_sample=3", "--set methods.smoothgrad.nt_sample=3: unknown key "
                                       "`methods.smoothgrad.nt_sample`; did you mean "
                                       "`methods.smoothgrad.nt_samples`?"),
    ("methods.smoothgrad.nt_samples=0", "--set methods.smoothgrad.nt_samples=0: "
                                        "[methods.smoothgrad] expected nt_samples >= 1, got 0"),
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


@pytest.mark.parametrize("body,overrides,needle", [
    ('[dataset]\nroot = "x"\n[run]\nsed = 1\n[methods.gradient]\n', [],
     "line 4: unknown key `run.sed`; did you mean `run.seed`? (in [run]; allowed keys: out,"),
    (MINIMAL, ["run.sed=1"],
     "--set run.sed=1: unknown key `run.sed`; did you mean `run.seed`? (in [run]; allowed "
     "keys: out,"),
    ('[dataset]\nroot = "x"\n[methods.smoothgrad]\nstdev = 1\n', [],
     "line 4: unknown key `methods.smoothgrad.stdev`; did you mean `methods.smoothgrad.stdevs`? "
     "(in [methods.smoothgrad]; allowed keys: {smoothgrad})."),
    (MINIMAL, ["methods.smoothgrad.stdev=1"],
     "--set methods.smoothgrad.stdev=1: unknown key `methods.smoothgrad.stdev`; did you mean "
     "`methods.smoothgrad.stdevs`? (in [methods.smoothgrad]; allowed keys: {smoothgrad})."),
    # an override that writes inside a table of the file: the file's unknown name is the file's
    ('[dataset]\nroot = "x"\n[methods.gradiant]\n', ["methods.gradiant.abs=true"],
     "line 3: unknown method 'gradiant' in [methods.gradiant]; did you mean `methods.gradient`?"),
    ('[dataset]\nroot = "x"\n[methods.gradient]\n[runn]\n', [],
     "line 4: unknown section or key 'runn'; did you mean `run`?"),
])
def test_unknown_names_are_reported_with_a_guess_from_file_and_set(tmp_path, body, overrides,
                                                                    needle):
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert needle.format(smoothgrad=_smoothgrad_keys()) in message
    assert (str(path) in message) == (not message.startswith("--set "))


def test_a_bad_value_under_a_set_table_names_the_override(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, MINIMAL), ["run.seed.x=3"])
    assert str(info.value).startswith("--set run.seed.x=3: [run] seed: expected an integer")


def test_a_section_that_is_not_a_table_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"line 1: \[dataset\] expected a table, got 3"):
        load_config(_write(tmp_path, 'dataset = 3\n[methods.gradient]\n'))


def test_importing_the_config_stays_cheap():
    code = ("import sys, workflows.config.loading; print(sorted(m for m in ('torch', "
            "'matplotlib', 'pipeline.evaluation.metrics', 'pipeline.data.evidence_dataset') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("options,sets,blamed", [
    ({"arch": "resnet81"}, [], "--arch resnet81: [model] arch:"),
    # the option wins over --set and the file, and so does the blame
    ({"arch": "resnet81"}, ["model.arch='resnet50'"], "--arch resnet81: [model] arch:"),
    ({}, ["model.arch='resnet81'"], "--set model.arch='resnet81': [model] arch:"),
    ({}, [], "c.toml, line 5: [model] arch:"),
    ({"device": "tpu", "arch": "resnet18"}, [], "--device tpu: [run] device:"),
])
def test_a_value_is_blamed_on_the_option_the_override_or_the_file_that_wrote_it(
        tmp_path, options, sets, blamed):
    path = _write(tmp_path, MINIMAL + '[model]\narch = "resnet81"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, sets, **options)
    message = str(info.value)
    assert blamed in message
    assert (str(path) in message) == (not options and not sets)
