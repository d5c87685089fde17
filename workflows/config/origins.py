"""Where each entry of a config came from, and the error messages that say so.

An error names the file and the line (or the ``--set`` override) that wrote the entry, the
``[section] key``, and for an unknown name the closest known one ("did you mean").
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from workflows.config.overrides import parse_override


class Origins:
    """Who wrote each entry of the merged tables: a command-line option, else a ``--set``
    override, else the file (a run's saved config, a template, or the config given).

    An entry is a path of names: ``("run",)``, ``("run", "seed")``,
    ``("methods", "gradient", "abs")``.

    Parameters
    ----------
    path
        The config file.
    text
        Its text (to find the line of an entry).
    written
        Its tables as read, before any override.
    overrides
        The ``--set section.key=value`` texts, in the order given.
    options
        The entries that command-line options (or the environment) wrote, each with the
        option as typed: ``{("model", "arch"): "--arch resnet81"}``. They take precedence
        over ``--set`` and the file, as their values do.
    """

    def __init__(self, path: Path, text: str, written: Mapping[str, Any],
                 overrides: Sequence[str],
                 options: Mapping[tuple[str, ...], str] | None = None) -> None:
        self.path, self.text, self.written = path, text, written
        self.sets = [(o, tuple(parse_override(o)[0])) for o in overrides]
        self.options = dict(options or {})

    def override(self, *entry: str) -> str | None:
        """The last ``--set`` that wrote ``entry`` (or a table holding it, or created it)."""
        for text, parts in reversed(self.sets):
            common = min(len(parts), len(entry))
            if parts[:common] != entry[:common]:
                continue
            # A longer override wrote inside the entry: it made the entry only if the file
            # does not have it.
            if len(parts) <= len(entry) or not _has(self.written, entry):
                return text
        return None

    def __call__(self, *entry: str) -> str:
        """The command-line option, else ``--set OVERRIDE``, else ``FILE, line N`` (``FILE``
        when the line is not found)."""
        if entry in self.options:
            return self.options[entry]
        text = self.override(*entry)
        if text is not None:
            return f"--set {text}"
        line = line_of(self.text, entry) if entry else None
        return f"{self.path}, line {line}" if line else str(self.path)


def _has(tables: Mapping[str, Any], entry: Sequence[str]) -> bool:
    node: Any = tables
    for name in entry:
        if not isinstance(node, Mapping) or name not in node:
            return False
        node = node[name]
    return True


def line_of(text: str, entry: Sequence[str]) -> int | None:
    """The line of ``entry`` in a TOML text: its ``[a.b]`` header, or its ``key =`` inside
    its table, if it is written plainly."""
    table, name, whole = ".".join(entry[:-1]), entry[-1], ".".join(entry)
    current = ""
    for number, line in enumerate(text.splitlines(), start=1):
        header = re.match(r"\s*\[([^\[\]]+)\]\s*(#.*)?$", line)
        if header:
            current = header.group(1).strip()
            if current == whole:
                return number
        elif current == table and re.match(rf"\s*{re.escape(name)}\s*=", line):
            return number
    return None


def did_you_mean(name: str, allowed: Iterable[str], prefix: str = "") -> str:
    """``"; did you mean `<prefix><closest>`?"``, or empty when no known name is close."""
    close = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
    return f"; did you mean `{prefix}{close[0]}`?" if close else ""


def key_error(where: str, section: str, name: str, problem: str) -> ConfigError:
    """``<where>: [<section>] <name>: <problem>``."""
    return ConfigError(f"{where}: [{section}] {name}: {problem}")


def unknown_name(where: Origins, entry: tuple[str, ...], allowed: Sequence[str]
                 ) -> ConfigError:
    """``unknown <what>; did you mean ...? (<what is allowed>).``

    A ``--set`` is quoted as typed (a dotted path); a file's entry by its name and table.
    """
    name, dotted = entry[-1], ".".join(entry)
    typed = where.override(*entry) is not None
    if len(entry) == 1:
        what = f"section `{name}`" if typed else f"section or key {name!r}"
        hint = did_you_mean(name, allowed)
        context = f"allowed: {', '.join(sorted(allowed))}"
    elif entry[0] == "methods" and len(entry) == 2:
        what = f"method `{dotted}`" if typed else f"method {name!r} in [{dotted}]"
        hint = did_you_mean(name, allowed, "methods.")
        context = f"registered methods: {', '.join(allowed)}"
    else:
        table = ".".join(entry[:-1])
        what = f"key `{dotted}`"
        hint = did_you_mean(name, allowed, f"{table}.")
        context = f"in [{table}]; allowed keys: {', '.join(allowed) or 'none'}"
    return ConfigError(f"{where(*entry)}: unknown {what}{hint} ({context}).")


def no_methods(where: str, registered: Iterable[str]) -> ConfigError:
    """The error for a config without any ``[methods.<name>]`` table."""
    return ConfigError(f"{where}: expected at least one [methods.<name>] table, got none. "
                       f"Registered methods: {', '.join(registered)}.")


def as_table(value: Any, where: Origins, *entry: str) -> Mapping[str, Any]:
    """``value`` if it is a TOML table, else a :class:`ConfigError` naming ``entry``."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where(*entry)}: [{'.'.join(entry)}] expected a table, "
                          f"got {value!r}")
    return value
