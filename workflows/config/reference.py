"""docs/configuration.md, generated from the config schema and the method registry.

Every section's keys with their type, default, allowed values and help line come from
:mod:`workflows.config.sections`; the ``[methods.<name>]`` keys from
:data:`pipeline.attribution.method_registry.METHODS`. ``tests/config/test_reference.py`` fails when
the committed file differs from what this module writes. Regenerate it with::

    .venv/bin/python -m workflows.config.reference
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pipeline.attribution.method_registry import METHODS
from pipeline.validation import Rule, type_name
from workflows.config.paths import DATA_DIR_ENV
from workflows.config.sections import SECTIONS, key_fields, key_type, rule_of

#: The generated file, relative to the repository.
REFERENCE = Path("docs") / "configuration.md"
#: The command that regenerates it (said in the file and by the test that keeps it in sync).
COMMAND = ".venv/bin/python -m workflows.config.reference"

_INTRO = f"""\
# Configuration reference

<!-- Generated from the config schema (workflows/config/sections.py) and the method
registry by `{COMMAND}`.
Do not edit by hand: tests/config/test_reference.py fails when this file and the schema
differ. -->

A run is configured by one TOML file: `configs/<name>.toml` (`--dataset NAME`), any file
(`--config FILE`), or a run folder's saved `config.toml` (`xai status RUN_DIR`). Every key is
optional except what a dataset needs (`[dataset] root`, and at least one `[methods.<name>]`
table); a key left out takes its default.

- **Precedence**: command-line options (`--data-dir`, `--out`, `--weights`, `--device`,
  `--arch`, `--name`) > `--set section.key=value` overrides > `${DATA_DIR_ENV}` > the file.
  A `--set` value is read as TOML (`--set run.shard_size=16`,
  `--set "evaluate.metrics=['deletion']"`), else as a string (`--set run.device=cpu`).
- **Paths** written in the file resolve against the file's folder; paths given on the
  command line resolve against the working directory.
- **Errors** name the file and line, or the `--set` that wrote the key, and the closest known
  name for a misspelt one.
- **Bounds** are written as inequalities: `0 < value <= 100` allows 100 but not 0. Numbers
  are always finite.
"""


def _markdown(text: str) -> str:
    """A docstring's reStructuredText literals (double backticks) as Markdown's."""
    return text.replace("``", "`")


def _cell(text: str) -> str:
    """Text fit for a Markdown table cell."""
    return " ".join(_markdown(text).split()).replace("|", "\\|")


def _default_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple | list):
        return f"`[{', '.join(_default_text(v).strip('`') for v in value)}]`"
    if isinstance(value, str | Path):
        return f"`{json.dumps(str(value))}`"
    return f"`{value!r}`"


def _allowed(rule: Rule, name: str) -> str:
    """The rule's choices or bounds, and what its extra check accepts."""
    parts = []
    if rule.choices is not None:
        parts.append(", ".join(f"`{c}`" for c in rule.choices))
    bounds = rule.bounds_text(name)
    if bounds:
        parts.append(f"`{bounds}`")
    if rule.check is not None:
        parts.append((inspect.getdoc(rule.check) or "").split("\n")[0])
    return "; ".join(p for p in parts if p)


def _table(rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| key | type | default | allowed | what it is for |",
             "| --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _section_lines(section: str, cls: type[Any]) -> list[str]:
    resolved: dict[str, str] = getattr(cls, "RESOLVED_ON_LOAD", {})
    rows = []
    for name, field in key_fields(cls).items():
        tp, _ = key_type(field)
        rule = rule_of(field)
        default = resolved.get(name) or _default_text(field.default)
        rows.append((f"`{name}`", type_name(tp), default, _allowed(rule, name), rule.help))
    about = _markdown(inspect.cleandoc(cls.__doc__ or "")).removeprefix(f"`[{section}]`: ")
    lines = [f"## `[{section}]`", "", about[:1].upper() + about[1:], "", *_table(rows)]
    removed: dict[str, str] = getattr(cls, "REMOVED", {})
    if removed:
        lines += ["", "Keys no longer read (a config that sets one is refused, saying why):", ""]
        lines += [f"- `{name}`: {why}." for name, why in removed.items()]
    return [*lines, ""]


def _param_help(param: Any) -> str:
    """A method parameter's help line, with the spellings stores keep that it accepts too."""
    also = [f"`{param.stored_as}` for the key"] if param.stored_as else []
    also += [f"`{stored}` for `{value}`" for value, stored in param.stored_values.items()]
    return f"{param.help} (also accepted: {', '.join(also)})" if also else param.help


def _methods_lines() -> list[str]:
    lines = ["## `[methods.<name>]`", "",
             "One table per attribution method; the tables present are the methods that run "
             "(at least one). A table may be empty: every parameter has a default.", ""]
    for name, spec in METHODS.items():
        lines += [f"### `[methods.{name}]`", "", _cell(spec.description), ""]
        if not spec.params:
            lines += ["No parameters.", ""]
            continue
        rows = [(f"`{key}`", type_name(param.type), _default_text(param.default),
                 _allowed(param.allowed, key), _param_help(param))
                for key, param in spec.params.items()]
        lines += [*_table(rows), ""]
    return lines


def render_reference() -> str:
    """The text of docs/configuration.md."""
    lines = [_INTRO]
    for section, cls in SECTIONS.items():
        lines += _section_lines(section, cls)
    lines += _methods_lines()
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: Sequence[str] = ()) -> int:
    """Write docs/configuration.md under the repository (or the folder given)."""
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[2]
    (root / REFERENCE).write_text(render_reference(), encoding="utf-8")
    print(f"wrote {root / REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
