"""The stage registry: ``after`` follows from ``reads`` through the schema, and a stage that
cannot work is refused when it is registered, with a message naming it and the array."""

from __future__ import annotations

import pytest

from pipeline.store.zarr_store import SCHEMA, ArrayFamily
from workflows.runner.planning import Registry, RegistryError
from workflows.runner.stage_api import Stage


def _fresh() -> list[Stage]:
    from workflows.stages import STAGES

    return [type(s)() for s in STAGES]


def test_after_is_the_writers_of_what_a_stage_reads():
    from workflows.stages import REGISTRY

    for stage in REGISTRY:
        writers = {SCHEMA[r].writer for r in stage.reads} - {None}
        assert set(stage.after) == writers, stage.name
        assert all(REGISTRY.index(up) < REGISTRY.index(stage.name) for up in stage.after)
        assert {f.name for f in stage.writes} == {f.name for f in SCHEMA if f.writer ==
                                                  stage.name}


def test_the_stage_list_is_one_tuple_in_run_order():
    from workflows.stages import REGISTRY, STAGES

    assert REGISTRY.names() == tuple(s.name for s in STAGES)
    assert REGISTRY.names()[:6] == ("ingest", "predict", "attribute", "aggregate",
                                    "normalize", "render")


def test_a_read_that_no_earlier_stage_writes_is_refused_naming_both():
    class Early(Stage):
        name = "early"
        reads = ("normalized",)

    with pytest.raises(RegistryError) as info:
        Registry([_fresh()[0], Early()])  # ingest, then a stage reading normalize's output
    text = str(info.value)
    assert "'early'" in text and "'normalized'" in text and "'normalize'" in text
    assert "before" in text


def test_a_read_the_schema_does_not_declare_is_refused():
    class Lost(Stage):
        name = "lost"
        reads = ("pixles",)

    with pytest.raises(RegistryError, match=r"'lost' reads 'pixles'.*does not declare"):
        Registry([*_fresh(), Lost()])


def test_names_crash_points_and_units_are_checked():
    class Twice(Stage):
        name = "ingest"

    with pytest.raises(RegistryError, match="registered already"):
        Registry([*_fresh(), Twice()])
    from workflows.stages import STAGES

    with pytest.raises(RegistryError, match=r"register a new one, Ingest\(\)"):
        Registry([STAGES[0]])

    class Crashy(Stage):
        name = "crashy"
        crash_points = ("sometime",)

    with pytest.raises(RegistryError, match="crash points"):
        Registry([Crashy()])

    class Odd(Stage):
        name = "odd"
        unit = "page"

    with pytest.raises(RegistryError, match="unit"):
        Registry([Odd()])


def test_a_per_method_stage_must_write_explainer_split_arrays():
    shared = ArrayFamily("shared_map", ("explainer", "image"), "float32", 0.0, "permethod",
                         "chunked across every explainer")

    class PerMethod(Stage):
        name = "permethod"
        per_method = True

    with pytest.raises(RegistryError, match="two of its tasks would write one chunk"):
        Registry([PerMethod()], SCHEMA.extended(shared))


def test_downstream_and_the_message_for_an_unknown_stage():
    from pipeline.errors import ConfigError
    from workflows.stages import REGISTRY

    assert REGISTRY.through("normalize", "--force")[:2] == ("normalize", "render")
    assert "predict" not in REGISTRY.through("normalize", "--force")
    with pytest.raises(ConfigError, match=r"Expected --force to name a stage \(ingest, "):
        REGISTRY.through("bogus", "--force")
