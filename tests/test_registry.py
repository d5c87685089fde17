"""pipeline.registry: the one registry pattern, and the project's registries built on it."""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from pipeline.registry import Registry

FIXTURE_RUN = Path(__file__).parent / "fixtures" / "existing_runs" / "runs" / "defaults"


def colours() -> Registry[int]:
    reg: Registry[int] = Registry("colour")
    for value, name in enumerate(("red", "green", "blue")):
        reg.add(name, value)
    return reg


def test_add_keeps_registration_order_and_returns_the_entry() -> None:
    reg: Registry[object] = Registry("thing")
    entry = object()
    assert reg.add("zeta", entry) is entry
    reg.add("alpha", 1)
    reg.add("mid", 2)
    assert list(reg) == ["zeta", "alpha", "mid"]  # not sorted: as registered
    assert list(reg.values()) == [entry, 1, 2]


def test_a_second_entry_of_one_name_is_refused_and_the_first_kept() -> None:
    reg = colours()
    with pytest.raises(ValueError, match=r"^Expected one colour named 'green', got a second "
                                         r"one$"):
        reg.add("green", 99)
    assert reg["green"] == 1
    assert list(reg) == ["red", "green", "blue"]


def test_register_decorator_returns_the_item_and_adds_it() -> None:
    reg: Registry[type] = Registry("shape")

    @reg.register("square")
    class Square:
        pass

    assert isinstance(Square, type) and Square.__name__ == "Square"
    assert reg["square"] is Square
    with pytest.raises(ValueError, match="Expected one shape named 'square'"):
        reg.register("square")(int)


def test_get_or_raise_returns_the_entry() -> None:
    assert colours().get_or_raise("blue") == 2


def test_get_or_raise_says_what_there_is_and_what_was_meant() -> None:
    with pytest.raises(KeyError) as info:
        colours().get_or_raise("gren")
    assert info.value.args == (
        "Expected a colour in [red, green, blue], got 'gren'; did you mean 'green'?",)


def test_get_or_raise_without_a_close_name_gives_no_hint() -> None:
    assert colours().unknown_message("purple") == \
        "Expected a colour in [red, green, blue], got 'purple'"


def test_get_or_raise_with_a_custom_error_class() -> None:
    class UnknownColour(Exception):
        pass

    with pytest.raises(UnknownColour, match=r"^Expected a colour in \[red, green, blue\], "
                                            r"got 'bleu'; did you mean 'blue'\?$"):
        colours().get_or_raise("bleu", UnknownColour)


def test_a_registry_is_a_read_only_mapping() -> None:
    reg = colours()
    assert isinstance(reg, Mapping)
    assert len(reg) == 3
    assert "red" in reg and "pink" not in reg
    assert reg.get("pink") is None and reg.get("pink", -1) == -1
    assert dict(reg) == {"red": 0, "green": 1, "blue": 2}
    assert list(reg.items()) == [("red", 0), ("green", 1), ("blue", 2)]
    assert reg == {"red": 0, "green": 1, "blue": 2}  # Mapping equality: by content
    with pytest.raises(KeyError):
        reg["pink"]
    with pytest.raises(TypeError):
        reg["pink"] = 3  # type: ignore[index]
    assert repr(reg) == "Registry('colour', ['red', 'green', 'blue'])"


def test_an_empty_registry() -> None:
    reg: Registry[int] = Registry("metric")
    assert len(reg) == 0 and list(reg) == []
    assert reg.unknown_message("x") == "Expected a metric in [], got 'x'"


# ------------------------------------------------------------- the project's registries


def registry(module: str, attribute: str, filled_by: str) -> Registry[object]:
    """``module.attribute`` once ``filled_by`` (the package that imports its entries) is
    imported."""
    importlib.import_module(filled_by)
    reg = getattr(importlib.import_module(module), attribute)
    assert isinstance(reg, Registry), f"{module}.{attribute} is a {type(reg).__name__}"
    return reg


def fixture_config() -> dict[str, object]:
    """The resolved config of a run made by commit 6338a7c with every method and metric."""
    return json.loads((FIXTURE_RUN / "config.resolved.json").read_text())


def test_methods_registry_holds_every_method_an_existing_run_used() -> None:
    methods = registry("pipeline.attribution.method_registry", "METHODS",
                       "pipeline.attribution")
    assert methods.kind == "method"
    assert set(fixture_config()["methods"]) <= set(methods)  # type: ignore[arg-type]
    assert len(fixture_config()["methods"]) == 10  # type: ignore[arg-type]


def test_metrics_registry_holds_every_metric_an_existing_run_used() -> None:
    metrics = registry("pipeline.evaluation.metrics", "METRICS", "pipeline.evaluation")
    assert metrics.kind == "metric"
    used = fixture_config()["evaluate"]["metrics"]  # type: ignore[index]
    assert len(used) == 6 and set(used) <= set(metrics)


def test_model_sources_registry_holds_the_six_sources_in_order() -> None:
    sources = registry("pipeline.models.sources.base", "MODEL_SOURCES",
                       "pipeline.models.sources")
    assert sources.kind == "model source"
    assert list(sources) == ["torchvision", "timm", "evidence", "state-dict",
                             "exported-program", "huggingface"]


def test_stage_types_registry_holds_every_stage_of_the_run_order() -> None:
    stage_types = registry("workflows.runner.stage_api", "STAGE_TYPES", "workflows.stages")
    from workflows.stages import RUN_ORDER

    assert stage_types.kind == "stage"
    assert sorted(stage_types) == sorted(RUN_ORDER)
    assert len(RUN_ORDER) == 8


def test_baselines_registry_holds_the_baselines_an_existing_run_used() -> None:
    baselines = registry("pipeline.attribution.baselines", "BASELINES", "pipeline.attribution")
    assert baselines.kind == "baseline"
    # the fixture's runs use black (the default) and, in ``options``, blur, uniform and mean
    assert {"black", "blur", "uniform", "mean"} <= set(baselines)
