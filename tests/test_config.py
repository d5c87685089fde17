from __future__ import annotations

import dataclasses
import math
import pickle
from pathlib import Path

import pytest

from pipeline.attribution.registry import METHODS
from pipeline.errors import ConfigError
from workflows.config import loading as config_module
from workflows.config.loading import (
    SECTIONS,
    FrozenMap,
    Rule,
    available_datasets,
    config_dir,
    load_config,
    parse_override,
    resolve_config_path,
    rule_of,
)

REPO = Path(__file__).resolve().parent.parent


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


#: The stage hashes of shipped configs (root /data, out /out, random weights), as the code
#: before [model] arch and the preprocessing keys made them: records stay valid across that
#: change, since the stages hash only what they depend on (the config's ``to_dict`` grew).
#: render and report changed on purpose in issue 23 (the sheets' layout and the report's
#: mask outlines: their version numbers), so sheets and reports are redrawn once.
STAGE_HASHES = {'evidence': {'aggregate/custom_gradient': '9b9723f1ad52883f',
              'aggregate/custom_integrated_gradients': '12c86f6b7a7cc85d',
              'aggregate/gradient': 'dceb89b0fb45b38d',
              'aggregate/input_x_gradient': 'd8ab5f3db31d6331',
              'aggregate/integrated_gradients': '1df0608d761f63a0',
              'aggregate/smoothgrad': '6ec956667f627f36',
              'attribute/custom_gradient': '18202e5b20e27cef',
              'attribute/custom_integrated_gradients': 'd14125f334b8846a',
              'attribute/gradient': '67b2c9d6a3a9932d',
              'attribute/input_x_gradient': '251dd470d857acf7',
              'attribute/integrated_gradients': '00ac30bd7e8bd6e3',
              'attribute/smoothgrad': '0a36dcb0cc0408b0',
              'evaluate': '01ad69681b1186be',
              'ingest': '76cc7cd18a4e980b',
              'normalize/custom_gradient': '347a6242efa1726f',
              'normalize/custom_integrated_gradients': '8cb36d69062b916f',
              'normalize/gradient': '20c95304e3de6ce8',
              'normalize/input_x_gradient': '9d74e227eceaed16',
              'normalize/integrated_gradients': '4346d865df9a62a9',
              'normalize/smoothgrad': '0121be9dfa97f3a2',
              'predict': 'd104dca196329e03',
              'render': 'f1795d554f4f660b',
              'report': '6ca9e0751ceff926'},
 'sample': {'aggregate/custom_gradient': '4196462d89c3dbd1',
            'aggregate/custom_integrated_gradients': '2399b0fee8727072',
            'aggregate/gradient': 'a4db58f52008916a',
            'aggregate/integrated_gradients': '0549ca91d2dacaec',
            'aggregate/smoothgrad': 'a232c9c090fcdf49',
            'attribute/custom_gradient': '560b92ec80025dd5',
            'attribute/custom_integrated_gradients': '5be399da511b0c4e',
            'attribute/gradient': '769a6116a0c8c224',
            'attribute/integrated_gradients': '8983015d7665ed09',
            'attribute/smoothgrad': '77eafb24b964da3d',
            'ingest': 'db6a03cbe88d6dab',
            'normalize/custom_gradient': 'f93077fe72863c97',
            'normalize/custom_integrated_gradients': 'e499d8de70932e55',
            'normalize/gradient': 'bf2aabb1f7e64f6d',
            'normalize/integrated_gradients': '938a39f2756ef85c',
            'normalize/smoothgrad': '0da7d4f4de112e6f',
            'predict': 'a0cb35eb924685cb',
            'render': '9fabe0750713eab8',
            'report': '405739c1ff73211b'},
 'synthetic': {'aggregate/custom_gradient': '1c735d5b4ad51c34',
               'aggregate/custom_integrated_gradients': '8ac02157edf23722',
               'aggregate/gradient': '150f78de871ac102',
               'aggregate/integrated_gradients': '547eccb86066b375',
               'aggregate/smoothgrad': '67732fa2dfa85ebf',
               'attribute/custom_gradient': 'cef55978371179b0',
               'attribute/custom_integrated_gradients': 'a8b0f5cba0221c14',
               'attribute/gradient': 'e923e5721a069d71',
               'attribute/integrated_gradients': '322835a64bdf99c2',
               'attribute/smoothgrad': '7db9de324803d35c',
               'ingest': '8ba2d6ada62f4c39',
               'normalize/custom_gradient': '8026303417fb7b22',
               'normalize/custom_integrated_gradients': '87c1017b9bd86682',
               'normalize/gradient': '21b0dc50dc714c56',
               'normalize/integrated_gradients': '5a71b373604d17f9',
               'normalize/smoothgrad': 'a522f75822ed5ff7',
               'predict': 'da3b9da24c1da41f',
               'render': '02314a7e0488f0aa',
               'report': '26b0e2c285250e6b'}}


#: The evidence config explains with Grad-CAM, guided backprop and DeepLift too (issue 22):
#: the other methods' hashes are kept; the new methods' are added, and evaluate, render
#: and report (which cover every method) change with the method list.
STAGE_HASHES["evidence"] = {**STAGE_HASHES["evidence"], **{
    'attribute/grad_cam': '3e4ada7aec1eeaca',
    'attribute/guided_backprop': 'a708248b7ab1ee36',
    'attribute/deeplift': 'b194cafdfe71106c',
    'aggregate/grad_cam': 'ef79a206a717f329',
    'aggregate/guided_backprop': '3e032bb5ce210e97',
    'aggregate/deeplift': '9a8e17d9ae1b756c',
    'normalize/grad_cam': '62b0656d42bc7ae1',
    'normalize/guided_backprop': 'e43b5649d6dcfe31',
    'normalize/deeplift': '7da550b52d813f17',
    'render': '5f7026c73fbe4569',
    'evaluate': 'bd80950abfa7bf0b',
    'report': 'a8421924eb3ce14b',
}}


#: Issue 23: evaluate runs per (method, shard), its random floor one shared unit per shard
#: (``evaluate``): the floor no longer hashes the methods, each method's units only its own.
STAGE_HASHES["evidence"] = {**STAGE_HASHES["evidence"], **{
    'evaluate': 'd75a6203bce1120b',
    'evaluate/gradient': '2f728e3a150e8914',
    'evaluate/integrated_gradients': 'caed4151b6f4943d',
    'evaluate/smoothgrad': '3702a3c717f5199c',
    'evaluate/custom_gradient': 'd3260ef2d385594d',
    'evaluate/custom_integrated_gradients': '83fa64ff2700a3d1',
    'evaluate/input_x_gradient': '9dfc63915d8e1713',
    'evaluate/grad_cam': '24467ccf7bb9ba33',
    'evaluate/guided_backprop': '37771e6c1b805abd',
    'evaluate/deeplift': 'c8de49bf15f86842',
}}


#: Issue 24: the report's tiles are sprites, a file per shard and kind (report version 3):
#: every report is built again; no other stage changes.
for _name, _report in (("evidence", "7ecea3ea6e12e790"), ("sample", "eeeec9082bde63d7"),
                       ("synthetic", "ab73c4bcc8066ad4")):
    STAGE_HASHES[_name] = {**STAGE_HASHES[_name], "report": _report}


@pytest.mark.parametrize("name", sorted(STAGE_HASHES))
def test_stage_hashes_of_the_shipped_configs_are_kept(name):
    from workflows.runner.planning import flat_hashes
    from workflows.stages import REGISTRY

    cfg = load_config(REPO / "configs" / f"{name}.toml", env={}, data_dir=Path("/data"),
                      out=Path("/out"))
    assert flat_hashes(REGISTRY.hashes(cfg, "random:seed=0")) == STAGE_HASHES[name]


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


def test_frozen_map_is_a_read_only_hashable_mapping():
    m = FrozenMap({"b": 1, "a": FrozenMap({"x": 2})})
    assert m == {"b": 1, "a": {"x": 2}}
    assert m == FrozenMap([("a", FrozenMap({"x": 2})), ("b", 1)])
    assert hash(m) == hash(FrozenMap([("a", FrozenMap({"x": 2})), ("b", 1)]))
    assert list(m) == ["b", "a"] and len(m) == 2
    assert repr(FrozenMap({"a": 1})) == "FrozenMap({'a': 1})"
    assert pickle.loads(pickle.dumps(m)) == m
    with pytest.raises(TypeError):
        m["b"] = 2  # type: ignore[index]
    with pytest.raises(TypeError):
        hash(FrozenMap({"a": [1]}))  # like a dict, an unhashable value makes it unhashable
    source = {"a": 1}
    copied = FrozenMap(source)
    source["a"] = 2
    assert copied["a"] == 1


def test_a_config_built_by_hand_gets_frozen_methods():
    cfg = config_module.Config(dataset=config_module.DatasetConfig(name="x"),
                               methods={"gradient": {"abs": True}})
    assert isinstance(cfg.methods, FrozenMap)
    assert isinstance(cfg.methods["gradient"], FrozenMap)
    assert pickle.loads(pickle.dumps(cfg)) == cfg


#: The rules as they were in the side tables keyed by (section, key), before they moved next to
#: their fields.
_CHOICES = {
    ("dataset", "layout"): config_module.LAYOUTS, ("model", "head"): ("softmax", "logits"),
    ("run", "precision"): ("fp32", "fp32-fwd", "tf32", "bf16"),
    ("run", "target"): ("predicted", "label"),
    ("store", "attributions"): ("float32", "float16", "bfloat16"),
    ("store", "normalized"): ("float32", "uint16"),
    ("store", "layout"): ("method", "shard"),
}
_MINIMUM = {
    ("dataset", "limit"): 0, ("dataset", "per_class"): 0, ("dataset", "count"): 1,
    ("dataset", "resize"): 8, ("dataset", "crop"): 8, ("dataset", "max_pixels"): 1,
    ("run", "shard_size"): 1, ("run", "seed"): 0, ("run", "max_batch"): 0,
    ("model", "train_images"): 1, ("model", "val_images"): 1,
    ("evaluate", "steps"): 1, ("evaluate", "randomisation_images"): 0,
    ("evaluate", "bootstrap"): 0,
    ("render", "images_per_sheet"): 1,
    ("report", "min_images"): 3, ("report", "downsample"): 2, ("report", "neighbors"): 1,
    ("report", "max_clusters"): 1, ("report", "members"): 0,
}
_RANGES = {
    ("render", "clip_percentile"): (0.0, 100.0),
    ("run", "completeness_warning"): (0.0, math.inf),
    ("evaluate", "baseline_sigma"): (0.0, math.inf),
    ("dataset", "shortcut_fraction"): (0.0, 1.0),
}
_CHECKED = {("run", "device"), ("render", "colormap"), ("render", "signed_colormap"),
            ("evaluate", "metrics"), ("evaluate", "baseline"), ("dataset", "shortcut"),
            ("model", "arch"), ("model", "mean"), ("model", "std"),
            ("model", "interpolation")}


def test_each_rule_sits_next_to_its_field():
    for table in ("_CHOICES", "_MINIMUM", "_RANGES", "_REMOVED", "_check_override_keys"):
        assert not hasattr(config_module, table)
    seen = set()
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            entry = (section, f.name)
            rule = f.metadata.get("rule")
            if rule is None:
                assert rule_of(f) == Rule()
                continue
            assert isinstance(rule, Rule) and rule_of(f) is rule
            seen.add(entry)
            assert rule.choices == _CHOICES.get(entry)
            assert rule.minimum == _MINIMUM.get(entry)
            assert rule.between == _RANGES.get(entry)
            assert (rule.check is not None) == (entry in _CHECKED)
    assert seen == set(_CHOICES) | set(_MINIMUM) | set(_RANGES) | _CHECKED
    assert set(config_module.RenderConfig.REMOVED) == {"dpi"}
    assert set(config_module.RunConfig.REMOVED) == {"prefetch"}
    assert not {name for cls in SECTIONS.values() for name in getattr(cls, "REMOVED", {})} & {
        f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)}


def test_heads_and_weight_keywords_come_from_pipeline_weights():
    from pipeline.models import checkpoints as weights

    assert config_module.HEADS is weights.HEADS
    assert config_module.WEIGHT_KEYWORDS is weights.WEIGHT_KEYWORDS


@pytest.mark.parametrize("body,overrides,needle", [
    ('[dataset]\nroot = "x"\n[run]\nsed = 1\n[methods.gradient]\n', [],
     "line 4: unknown key `run.sed`; did you mean `run.seed`? (in [run]; allowed keys: out,"),
    (MINIMAL, ["run.sed=1"],
     "--set run.sed=1: unknown key `run.sed`; did you mean `run.seed`? (in [run]; allowed "
     "keys: out,"),
    ('[dataset]\nroot = "x"\n[methods.smoothgrad]\nstdev = 1\n', [],
     "line 4: unknown key `methods.smoothgrad.stdev`; did you mean `methods.smoothgrad.stdevs`? "
     "(in [methods.smoothgrad]; allowed keys: nt_samples, stdevs, abs)."),
    (MINIMAL, ["methods.smoothgrad.stdev=1"],
     "--set methods.smoothgrad.stdev=1: unknown key `methods.smoothgrad.stdev`; did you mean "
     "`methods.smoothgrad.stdevs`? (in [methods.smoothgrad]; allowed keys: nt_samples, stdevs, "
     "abs)."),
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
    assert needle in message
    assert (str(path) in message) == (not message.startswith("--set "))


def test_a_bad_value_under_a_set_table_names_the_override(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, MINIMAL), ["run.seed.x=3"])
    assert str(info.value).startswith("--set run.seed.x=3: [run] seed: expected an integer")


def test_a_section_that_is_not_a_table_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"line 1: \[dataset\] expected a table, got 3"):
        load_config(_write(tmp_path, 'dataset = 3\n[methods.gradient]\n'))


def test_importing_the_config_stays_cheap():
    import subprocess
    import sys

    code = ("import sys, workflows.config.loading; print(sorted(m for m in ('torch', 'matplotlib', "
            "'pipeline.evaluation.metrics', 'pipeline.data.evidence_dataset') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_colormaps_accepted_without_matplotlib_are_matplotlibs():
    import matplotlib

    from workflows.config.loading import _COMMON_COLORMAPS

    assert _COMMON_COLORMAPS and all(n in matplotlib.colormaps for n in _COMMON_COLORMAPS)
