"""docs/store-format.md is generated from the store schema and the stages' writes."""

from __future__ import annotations

import pytest

from pipeline.store.schema import SCHEMA, STORE_ATTRIBUTES, ArrayFamily
from tests.workflow_helpers import ROOT
from workflows.commands.store_format import COMMAND, array_rows, store_format
from workflows.runner.stage_api import Stage
from workflows.runner.stage_registry import StageRegistry


def test_the_committed_store_format_page_is_the_generated_one():
    committed = (ROOT / "docs" / "store-format.md").read_text()
    assert committed == store_format(), \
        f"docs/store-format.md is out of date: regenerate it with `{COMMAND}`"


def test_every_array_and_attribute_has_a_row_naming_its_writer():
    from workflows.stages import REGISTRY

    page = store_format()
    for fam in SCHEMA:
        row = next(line for line in page.splitlines() if line.startswith(f"| `{fam.shown}` |"))
        writer = "the store" if fam.with_store else f"`{REGISTRY.writer_of(fam.name)}`"
        assert f"| {writer} | {fam.meaning} |" in row, fam.name
    for name in STORE_ATTRIBUTES:
        assert f"| `{name}` |" in page


def test_a_plugin_s_array_shows_its_stage_and_an_unwritten_one_is_refused():
    toy = ArrayFamily("brightness", ("image",), "float32", 0.0, "mean pixel value")

    class Toy(Stage):
        name = "toy"
        writes = ("brightness",)

    from workflows.stages import STAGES

    schema = SCHEMA.extended(toy)
    rows = array_rows(StageRegistry([*(type(s)() for s in STAGES), Toy()], schema), schema)
    assert rows[-1] == "| `brightness` | (image,) | float32 | one shard | `toy` | " \
                       "mean pixel value |"
    with pytest.raises(ValueError, match=r"Expected a stage that writes 'pixels'"):
        array_rows(StageRegistry([Toy()], schema), schema)  # no ingest: pixels has no writer
