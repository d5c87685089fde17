import dataclasses
import pickle
from pathlib import Path

import pytest
from pydantic import ValidationError

from workflows.config.frozen_map import FrozenMap
from workflows.config.loading import load_config
from workflows.config.paths import available_datasets, config_dir
from workflows.config.run_config import Config
from workflows.config.sections import DatasetConfig, RunConfig

MINIMAL = '[dataset]\nroot = "imgs"\n[methods.gradient]\n'


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(body)
    return path


@pytest.mark.parametrize("name", available_datasets())
def test_every_shipped_config_pickles(name):
    cfg = load_config(config_dir() / f"{name}.toml", env={})
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()
    assert isinstance(again.methods, FrozenMap)
    assert hash(again) == hash(cfg)


def test_a_config_with_overrides_pickles(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL),
                      ["run.shard_size=5", "methods.smoothgrad.nt_samples=3", "evaluate.metrics="
                       "['pointing_game']"], env={})
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg
    assert again.methods["smoothgrad"]["nt_samples"] == 3
    assert again.evaluate.metrics == ("pointing_game",)
    with pytest.raises(TypeError):
        again.methods["smoothgrad"]["nt_samples"] = 4  # type: ignore[index]


def test_config_is_frozen(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.run.seed = 3  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.run = RunConfig()  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.methods["gradient"]["abs"] = False  # type: ignore[index]


def test_a_config_built_by_hand_or_replaced_gets_frozen_methods():
    cfg = Config(dataset=DatasetConfig(name="x"), methods={"gradient": {"abs": True}})
    assert isinstance(cfg.methods, FrozenMap)
    assert isinstance(cfg.methods["gradient"], FrozenMap)
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    replaced = dataclasses.replace(cfg, methods={"smoothgrad": {"stdevs": 0.5}})
    assert isinstance(replaced.methods["smoothgrad"], FrozenMap)
    assert replaced.dataset is cfg.dataset and replaced != cfg
    with pytest.raises(ValidationError):
        Config(dataset=DatasetConfig(name="x"), colour="red")  # type: ignore[call-arg]


def test_to_dict_is_plain_json_in_the_declared_order(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL), ["evaluate.metrics=['pointing_game']"],
                      env={})
    plain = cfg.to_dict()
    assert list(plain) == ["dataset", "model", "run", "methods", "render", "evaluate",
                           "report", "store", "source"]
    assert plain["dataset"]["root"] == str((tmp_path / "imgs").resolve())
    assert plain["run"]["out"] == "runs"
    assert plain["model"]["mean"] == [0.485, 0.456, 0.406]
    assert plain["evaluate"]["metrics"] == ["pointing_game"]
    assert plain["store"] == {"attributions": "float32", "normalized": "float32",
                              "layout": "method"}
    assert plain["methods"] == {"gradient": {"abs": True}}
    assert plain["source"] == str((tmp_path / "c.toml").resolve())
    assert cfg.store_choices() == plain["store"]
