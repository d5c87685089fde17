"""The resolved config as a TOML file (``config.toml`` in a run folder), written by tomli-w.

:func:`workflows.config.loading.load_config` reads it back to an equal config. Nothing
hashes or compares the file's text (the stage hashes are made of :meth:`Config.to_dict`), so
its layout is tomli-w's.
"""

from __future__ import annotations

from typing import Any

import tomli_w

from workflows.config.run_config import Config


def _toml_value(value: Any) -> Any:
    """A value TOML can hold: anything else (a path) as its text."""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_toml_value(v) for v in value]
    return str(value)


def _table(values: dict[str, Any]) -> dict[str, Any]:
    # TOML has no null: an unset key (None) is left out, and reads back as its default.
    return {k: _toml_value(v) for k, v in values.items() if v is not None}


def config_toml(cfg: Config) -> str:
    """The resolved config as TOML that :func:`~workflows.config.loading.load_config` reads
    back to an equal Config (what a run saves as ``config.toml``; unset keys, None, are left
    out)."""
    plain = cfg.to_dict()
    source = plain.pop("source")
    methods = plain.pop("methods")
    tables: dict[str, Any] = {section: _table(table) for section, table in plain.items()}
    if methods:
        tables["methods"] = {name: _table(params) for name, params in methods.items()}
    header = (f"# The resolved config of this run, from {source}: what every later command "
              "(xai status/report/clean RUN_DIR) reads.\n\n")
    return header + tomli_w.dumps(tables)
