from pathlib import Path

from pipeline.attribution.method_registry import METHODS
from workflows.config.reference import COMMAND, REFERENCE, main, render_reference
from workflows.config.sections import SECTIONS, key_fields

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_reference_is_the_generated_one():
    committed = (REPO / REFERENCE).read_text(encoding="utf-8")
    assert committed == render_reference(), (
        f"{REFERENCE} is out of date with the config schema: regenerate it with `{COMMAND}` "
        "and commit the result.")


def test_the_reference_names_every_section_key_and_method():
    text = render_reference()
    for section, cls in SECTIONS.items():
        assert f"## `[{section}]`" in text
        for key in key_fields(cls):
            assert f"| `{key}` |" in text
        for removed in getattr(cls, "REMOVED", {}):
            assert f"- `{removed}`: " in text
    for name, spec in METHODS.items():
        assert f"### `[methods.{name}]`" in text
        for key in spec.params:
            assert f"| `{key}` |" in text
    assert "| `clip_percentile` | a number | `99.0` | `0 < clip_percentile <= 100` |" in text
    assert "| `resize` | an integer | the model's preprocessing | `resize >= 8` |" in text


def test_main_writes_the_reference_under_a_folder(tmp_path):
    (tmp_path / "docs").mkdir()
    assert main([str(tmp_path)]) == 0
    assert (tmp_path / REFERENCE).read_text(encoding="utf-8") == render_reference()
