import dataclasses
import math
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from pipeline.attribution.precision import PRECISIONS
from pipeline.models.checkpoints import HEADS
from pipeline.store.encoding import ATTRIBUTION_DTYPES, NORMALIZED_DTYPES, STORE_LAYOUTS
from pipeline.validation import Rule
from workflows.config import sections
from workflows.config.sections import (
    BASE_FOLDER,
    LAYOUTS,
    SECTIONS,
    TARGETS,
    DatasetConfig,
    RenderConfig,
    RunConfig,
    key_fields,
    rule_of,
)


def _build(section: str, key: str, value):
    """The section with one key set (the dataset's required name given)."""
    extra = {"name": "x"} if section == "dataset" and key != "name" else {}
    return SECTIONS[section](**extra, **{key: value})


#: The smallest integer each key allowed before its bound was written as ``ge``: it stays
#: allowed, and one less stays refused.
MINIMUM = {
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
#: Float keys allowed in (low, high]: the top stays allowed, the bottom refused.
LOW_OPEN_HIGH_CLOSED = {
    ("render", "clip_percentile"): (0.0, 100.0),
    ("run", "completeness_warning"): (0.0, math.inf),
    ("evaluate", "baseline_sigma"): (0.0, math.inf),
    ("dataset", "shortcut_fraction"): (0.0, 1.0),
}
#: Keys with a check of their own (a registry, a device name, three channels).
CHECKED = {("run", "device"), ("render", "colormap"), ("render", "signed_colormap"),
           ("evaluate", "metrics"), ("evaluate", "baseline"), ("dataset", "shortcut"),
           ("model", "arch"), ("model", "mean"), ("model", "std"), ("model", "interpolation")}
CHOICES = {
    ("dataset", "layout"): LAYOUTS, ("model", "head"): HEADS, ("run", "precision"): PRECISIONS,
    ("run", "target"): TARGETS, ("store", "attributions"): ATTRIBUTION_DTYPES,
    ("store", "normalized"): NORMALIZED_DTYPES, ("store", "layout"): STORE_LAYOUTS,
}


@pytest.mark.parametrize("entry,minimum", sorted(MINIMUM.items()))
def test_an_integer_minimum_is_a_closed_lower_bound(entry, minimum):
    section, key = entry
    rule = rule_of(key_fields(SECTIONS[section])[key])
    assert (rule.ge, rule.gt, rule.le, rule.lt) == (minimum, None, None, None)
    assert getattr(_build(section, key, minimum), key) == minimum
    with pytest.raises(ValidationError, match=rf"expected {key} >= {minimum}, got "
                                              rf"{minimum - 1}"):
        _build(section, key, minimum - 1)


@pytest.mark.parametrize("entry,bounds", sorted(LOW_OPEN_HIGH_CLOSED.items()))
def test_a_float_range_is_open_below_and_closed_above(entry, bounds):
    section, key = entry
    low, high = bounds
    assert getattr(_build(section, key, high), key) == high  # infinity too, where it is the top
    assert getattr(_build(section, key, low + 1e-9), key) == low + 1e-9
    for refused in (low, -1.0, math.nan, -math.inf):
        with pytest.raises(ValidationError):
            _build(section, key, refused)
    if math.isfinite(high):
        with pytest.raises(ValidationError, match=f"<= {high:g}, got"):
            _build(section, key, high + 1e-6)


def test_infinity_is_refused_where_no_bound_admits_it():
    assert RunConfig(completeness_warning=math.inf).completeness_warning == math.inf
    with pytest.raises(ValidationError, match="expected clip_percentile to be a finite "
                                              "number, got inf"):
        RenderConfig(clip_percentile=math.inf)


def test_every_key_has_one_rule_with_a_help_line_and_the_choices_of_the_pipeline():
    seen_checks, seen_choices = set(), {}
    for section, cls in SECTIONS.items():
        for key, field in key_fields(cls).items():
            rules = [m for m in field.metadata if isinstance(m, Rule)]
            assert len(rules) == 1 and rules[0] is rule_of(field), (section, key)
            assert rules[0].help.strip(), f"[{section}] {key} has no help line"
            if rules[0].check is not None:
                seen_checks.add((section, key))
            if rules[0].choices is not None:
                seen_choices[(section, key)] = rules[0].choices
    assert seen_checks == CHECKED
    assert seen_choices == CHOICES


def test_removed_keys_are_no_keys():
    assert set(RenderConfig.REMOVED) == {"dpi"}
    assert set(RunConfig.REMOVED) == {"prefetch"}
    for cls in SECTIONS.values():
        assert not set(getattr(cls, "REMOVED", {})) & set(key_fields(cls))


@pytest.mark.parametrize("section,key,value,message", [
    ("run", "shard_size", "many", "expected an integer, got 'many'"),
    ("run", "seed", True, "expected an integer, got True"),
    ("run", "streaming", 1, "expected true or false, got 1"),
    ("run", "precision", "fp16", "expected precision to be one of fp32, fp32-fwd, tf32, bf16, "
                                 "got 'fp16'"),
    ("run", "device", "tpu", "expected auto, cpu, cuda or cuda:N, got 'tpu'"),
    ("render", "clip_percentile", "p99", "expected a number, got 'p99'"),
    ("dataset", "root", "", "expected a path string, got ''"),
    ("model", "mean", [1, 2], "expected 3 numbers (one per RGB channel), got [1, 2]"),
    ("model", "std", ["a"], "expected a list of numbers, got ['a']"),
    ("evaluate", "metrics", ["pointing_gam"], "unknown metric 'pointing_gam'; did you mean "
                                              "`pointing_game`?"),
])
def test_a_bad_value_is_refused_by_the_one_validator(section, key, value, message):
    with pytest.raises(ValidationError) as info:
        _build(section, key, value)
    (error,) = info.value.errors()
    assert error["loc"] == (key,)
    assert error["type"] == sections.KEY_ERROR
    assert error["msg"].startswith(message)


def test_values_are_converted_after_the_check():
    run = RunConfig(completeness_warning=1, out="o")
    assert run.completeness_warning == 1.0 and isinstance(run.completeness_warning, float)
    assert run.out == Path("o")
    model = sections.ModelConfig(mean=[0, 1, 0.5])
    assert model.mean == (0.0, 1.0, 0.5) and all(isinstance(v, float) for v in model.mean)


def test_relative_paths_resolve_against_the_base_folder_only_when_given(tmp_path):
    adapter = TypeAdapter(DatasetConfig)
    read = adapter.validate_python({"name": "x", "root": "imgs"},
                                   context={BASE_FOLDER: tmp_path})
    assert read.root == (tmp_path / "imgs").resolve()
    assert adapter.validate_python({"name": "x", "root": "/abs"},
                                   context={BASE_FOLDER: tmp_path}).root == Path("/abs")
    assert DatasetConfig(name="x", root="imgs").root == Path("imgs")
    assert DatasetConfig(name="x").root is None


def test_sections_are_frozen_and_replace_validates_again():
    run = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.seed = 3  # type: ignore[misc]
    assert dataclasses.replace(run, seed=3).seed == 3
    with pytest.raises(ValidationError, match="expected seed >= 0, got -1"):
        dataclasses.replace(run, seed=-1)
    with pytest.raises(ValidationError):
        RunConfig(sed=1)  # type: ignore[call-arg]


def test_the_colormaps_accepted_without_matplotlib_are_matplotlibs():
    import matplotlib

    from workflows.config.key_checks import COMMON_COLORMAPS

    assert COMMON_COLORMAPS and all(n in matplotlib.colormaps for n in COMMON_COLORMAPS)
    assert RenderConfig(colormap="twilight").colormap == "twilight"  # asks matplotlib
