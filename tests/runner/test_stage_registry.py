"""The stage registry: ``after`` follows from what a stage reads and the others write, every
array has one writer, and a stage that cannot work is refused when it is registered, with a
message naming it and the array."""

from __future__ import annotations

import pytest

from pipeline.store.schema import SCHEMA, ArrayFamily
from workflows.runner.stage_api import Stage
from workflows.runner.stage_registry import RegistryError, StageRegistry


def _fresh() -> list[Stage]:
    from workflows.stages import STAGES

    return [type(s)() for s in STAGES]


def test_after_is_the_writers_of_what_a_stage_reads():
    from workflows.stages import REGISTRY

    writer = {name: stage.name for stage in REGISTRY for name in stage.writes}
    for stage in REGISTRY:
        writers = {writer[r] for r in stage.reads if not SCHEMA[r].with_store}
        assert set(stage.after) == writers, stage.name
        assert all(REGISTRY.index(up) < REGISTRY.index(stage.name) for up in stage.after)
        assert [f.name for f in stage.written_families] == \
            [f.name for f in SCHEMA if f.name in stage.writes], "schema order"


def test_every_array_has_exactly_one_writer_the_store_or_one_stage():
    from workflows.stages import REGISTRY

    for fam in SCHEMA:
        stages = [s.name for s in REGISTRY if fam.name in s.writes]
        assert len(stages) + fam.with_store == 1, (fam.name, stages)
        assert REGISTRY.writer_of(fam.name) == (stages[0] if stages else None)


def test_the_run_order_is_one_explicit_tuple_of_the_registered_stages():
    from workflows.runner.stage_api import STAGE_TYPES
    from workflows.stages import REGISTRY, RUN_ORDER, STAGES

    assert RUN_ORDER == ("ingest", "predict", "attribute", "aggregate", "normalize", "render",
                         "evaluate", "report")
    assert REGISTRY.names() == tuple(s.name for s in STAGES) == RUN_ORDER
    assert set(STAGE_TYPES) == set(RUN_ORDER)
    assert all(type(s) is STAGE_TYPES[s.name] for s in STAGES)


def test_a_registered_stage_missing_from_the_run_order_is_named(monkeypatch):
    import workflows.stages
    from pipeline.registry import Registry as Entries
    from workflows.runner.stage_api import STAGE_TYPES

    class Extra(Stage):
        name = "extra"

    types: Entries[type[Stage]] = Entries("stage")
    for name, cls in STAGE_TYPES.items():
        types.add(name, cls)
    types.add("extra", Extra)
    monkeypatch.setattr(workflows.stages, "STAGE_TYPES", types)
    with pytest.raises(RuntimeError, match=r"\['extra'\] in only one.*RUN_ORDER"):
        workflows.stages._in_run_order()


def test_a_read_that_no_earlier_stage_writes_is_refused_naming_both():
    class Early(Stage):
        name = "early"
        reads = ("normalized",)

    with pytest.raises(RegistryError) as info:
        StageRegistry([_fresh()[0], Early()])  # ingest, then a stage reading normalize's output
    text = str(info.value)
    assert "'early'" in text and "'normalized'" in text and "'normalize'" in text
    assert "before" in text


def test_a_read_no_registered_stage_declares_is_refused_naming_it():
    class Early(Stage):
        name = "early"
        reads = ("strategy",)

    class Reader(Stage):
        name = "reader"
        reads = ("brightness",)

    with pytest.raises(RegistryError, match=r"'early' reads 'strategy'.*'report' writes it"):
        StageRegistry([_fresh()[0], Early()])
    toy = ArrayFamily("brightness", ("image",), "float32", 0.0, "a plugin's array")
    with pytest.raises(RegistryError, match=r"'reader' reads 'brightness'.*no registered "
                                            r"stage names it in its writes"):
        StageRegistry([Reader()], SCHEMA.extended(toy))


def test_a_write_the_schema_does_not_declare_is_refused():
    class Lost(Stage):
        name = "lost"
        writes = ("brigthness",)

    with pytest.raises(RegistryError,
                       match=r"'lost' writes 'brigthness'.*does not declare.*SCHEMA.extended"):
        StageRegistry([Lost()])


def test_a_second_writer_of_an_array_is_refused_naming_the_first():
    class Again(Stage):
        name = "again"
        writes = ("delta",)

    class Axis(Stage):
        name = "axis"
        writes = ("explainer",)

    with pytest.raises(RegistryError, match=r"'again' writes 'delta', which stage "
                                            r"'attribute' writes already.*one writer"):
        StageRegistry([*_fresh(), Again()])
    with pytest.raises(RegistryError, match=r"'axis' writes 'explainer', which the store "
                                            r"itself writes"):
        StageRegistry([Axis()])


def test_a_read_the_schema_does_not_declare_is_refused():
    class Lost(Stage):
        name = "lost"
        reads = ("pixles",)

    with pytest.raises(RegistryError, match=r"'lost' reads 'pixles'.*does not declare"):
        StageRegistry([*_fresh(), Lost()])


def test_names_crash_points_and_units_are_checked():
    class Twice(Stage):
        name = "ingest"

    with pytest.raises(RegistryError, match="registered already"):
        StageRegistry([*_fresh(), Twice()])
    from workflows.stages import STAGES

    with pytest.raises(RegistryError, match=r"register a new one, Ingest\(\)"):
        StageRegistry([STAGES[0]])

    class Crashy(Stage):
        name = "crashy"
        crash_points = ("sometime",)

    with pytest.raises(RegistryError, match="crash points"):
        StageRegistry([Crashy()])

    class Odd(Stage):
        name = "odd"
        unit = "page"

    with pytest.raises(RegistryError, match="unit"):
        StageRegistry([Odd()])


def test_a_per_method_stage_must_write_explainer_split_arrays():
    shared = ArrayFamily("shared_map", ("explainer", "image"), "float32", 0.0,
                         "chunked across every explainer")

    class PerMethod(Stage):
        name = "permethod"
        per_method = True
        writes = ("shared_map",)

    with pytest.raises(RegistryError, match="two of its tasks would write one chunk"):
        StageRegistry([PerMethod()], SCHEMA.extended(shared))


def test_downstream_and_the_message_for_an_unknown_stage():
    from pipeline.errors import ConfigError
    from workflows.stages import REGISTRY

    assert REGISTRY.through("normalize", "--force")[:2] == ("normalize", "render")
    assert "predict" not in REGISTRY.through("normalize", "--force")
    with pytest.raises(ConfigError, match=r"Expected --force to name a stage \(ingest, "):
        REGISTRY.through("bogus", "--force")
