"""The one check that every name in a config exists: sections, their keys, methods and their
keys; an unknown one is reported with the closest known name and where it was written."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.attribution.method_registry import METHODS
from pipeline.errors import ConfigError
from workflows.config.origins import Origins, as_table, no_methods, unknown_name
from workflows.config.sections import SECTIONS, key_fields


def check_names(tables: Mapping[str, Any], where: Origins) -> None:
    """Check that every section, key, method and method parameter in ``tables`` exists.

    ``tables`` are the file's tables with the ``--set`` overrides applied, so an unknown name
    is reported once, wherever it was written (``where`` says which).

    Raises
    ------
    ConfigError
        For an unknown or removed name, or a section or method that is not a table.
    """
    for section, table in tables.items():
        if section == "methods":
            _check_method_names(table, where)
        elif section in SECTIONS:
            _check_section_keys(SECTIONS[section], section, as_table(table, where, section),
                                where)
        else:
            raise unknown_name(where, (section,), [*SECTIONS, "methods"])


def _check_section_keys(cls: type[Any], section: str, table: Mapping[str, Any],
                        where: Origins) -> None:
    keys = list(key_fields(cls))
    removed: Mapping[str, str] = getattr(cls, "REMOVED", {})
    for name in table:
        if name in removed:
            raise ConfigError(f"{where(section, name)}: [{section}] {name}: no longer used: "
                              f"{removed[name]}.")
        if name not in keys:
            raise unknown_name(where, (section, name), keys)


def _check_method_names(table: Any, where: Origins) -> None:
    if not isinstance(table, Mapping):
        raise no_methods(where("methods"), METHODS)
    for name, params in table.items():
        if name not in METHODS:
            raise unknown_name(where, ("methods", name), list(METHODS))
        spec = METHODS[name]
        for key in as_table(params, where, "methods", name):
            if spec.param_name(key) is None:  # a parameter's name, or the key it is stored as
                raise unknown_name(where, ("methods", name, key), list(spec.params))
