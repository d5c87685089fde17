import tomllib
from pathlib import Path

from workflows.config.loading import load_config
from workflows.config.paths import config_dir
from workflows.config.toml_writer import config_toml

FULL = """\
[dataset]
root = "imgs"
per_class = 2
[model]
classes = "names.txt"
mean = [0.5, 0.5, 0.5]
std = [1, 1, 1]
[run]
out = "out"
completeness_warning = 1e-05
[render]
signed_colormap = "RdBu_r"
[evaluate]
metrics = ["pointing_game", "deletion"]
[methods.gradient]
abs = false
[methods.smoothgrad]
stdevs = 0.25
"""


def test_the_written_config_loads_back_to_an_equal_config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(FULL)
    cfg = load_config(path, ["dataset.name=Zoë \"quoted\" \\ name"], env={})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    text = config_toml(cfg)
    (run_dir / "config.toml").write_text(text)
    again = load_config(run_dir / "config.toml", env={})
    assert again.to_dict() == {**cfg.to_dict(), "source": str(run_dir / "config.toml")}
    assert text.startswith(f"# The resolved config of this run, from {path}: ")


def test_unset_keys_are_left_out_and_tables_keep_their_order(tmp_path):
    cfg = load_config(config_dir() / "templates" / "own.toml", env={}, data_dir=tmp_path)
    tables = tomllib.loads(config_toml(cfg))
    assert "classes" not in tables["model"]  # None: TOML has no null
    assert list(tables) == ["dataset", "model", "run", "render", "evaluate", "report", "store",
                            "methods"]
    assert tables["methods"] == cfg.to_dict()["methods"]
    assert tables["model"]["mean"] == list(cfg.model.mean)
    assert Path(tables["dataset"]["root"]) == tmp_path
