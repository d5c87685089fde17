"""What the command line writes into a config's tables: ``--set section.key=value``
overrides, and the options ``--data-dir``, ``--out``, ``--weights``, ``--device``, ``--arch``,
``--name`` (and ``$XAI_DATA_DIR``).

Both act on the raw TOML tables before validation, so that a value from the command line is
checked exactly like one from the file.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from workflows.config.paths import DATA_DIR_ENV


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` -> (``["section", "key"]``, value read as TOML, else as a string)."""
    name, sep, raw = text.partition("=")
    parts = [p.strip() for p in name.strip().split(".")]
    if not sep or len(parts) < 2 or not all(parts):
        raise ConfigError(
            f"--set {text!r}: expected section.key=value (e.g. run.shard_size=16 or "
            "methods.integrated_gradients.n_steps=32)."
        )
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to the raw TOML tables (copy)."""
    out = json.loads(json.dumps(raw, default=str))
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is not a table.")
            node = child
        node[parts[-1]] = value
    return out


def _absolute(cwd: Path, path: str | Path) -> str:
    return str((cwd / Path(path).expanduser()).resolve())


def apply_command_line(tables: dict[str, Any], overrides: Sequence[str],
                       env: Mapping[str, str], *, data_dir: Path | None, out: Path | None,
                       weights: str | None, device: str | None, arch: str | None = None,
                       name: str | None = None) -> None:
    """Write the command-line options and ``$XAI_DATA_DIR`` into the merged tables.

    Paths given on the command line (options, and ``--set`` of ``dataset.root`` or
    ``run.out``) resolve against the working directory, not the config's folder.
    """
    cwd = Path.cwd()
    dataset, run, model = (tables.setdefault(s, {}) for s in ("dataset", "run", "model"))
    set_paths = {tuple(parse_override(o)[0]) for o in overrides}
    for table, entry in ((dataset, ("dataset", "root")), (run, ("run", "out"))):
        if entry in set_paths and isinstance(table.get(entry[1]), str):
            table[entry[1]] = _absolute(cwd, table[entry[1]])
    if data_dir is not None:
        dataset["root"] = _absolute(cwd, data_dir)
    elif env.get(DATA_DIR_ENV) and ("dataset", "root") not in set_paths:
        dataset["root"] = _absolute(cwd, env[DATA_DIR_ENV])
    if out is not None:
        run["out"] = _absolute(cwd, out)
    for table, key, value in ((run, "device", device), (model, "weights", weights),
                              (model, "arch", arch), (dataset, "name", name)):
        if value is not None:
            table[key] = value
