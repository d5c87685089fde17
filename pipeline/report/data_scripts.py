"""The report's data as scripts: JSON wrapped in ``window.<NAME> = ...;`` (browsers refuse
``fetch`` of ``file://`` URLs, but load scripts from the page's folder).

Strings are JSON-escaped with ``<``, ``>`` and ``&`` as ``\\u003c``-style escapes, so no
string can close a tag; numbers are finite (JSON has no NaN).
"""

from __future__ import annotations

import json
import math
from typing import Any


def shard_data_path(shard: int) -> str:
    """Shard ``shard``'s gallery rows, relative to the report folder."""
    return f"data/shard-{shard:06d}.js"


def script_json(obj: Any) -> str:
    """JSON safe to embed in a script: ASCII only, no NaN, and ``<``, ``>``, ``&`` escaped."""
    text = json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def data_script(variable: str, obj: Any, append: bool = False) -> bytes:
    """A script that sets ``window.<variable>`` to ``obj`` (or appends it to a list)."""
    if not variable.isidentifier():
        raise ValueError(f"Expected a JavaScript identifier, got {variable!r}.")
    if append:
        return (f"(window.{variable} = window.{variable} || []).push("
                f"{script_json(obj)});\n").encode()
    return f"window.{variable} = {script_json(obj)};\n".encode()


def finite(value: Any, digits: int = 5) -> float | None:
    """A float rounded to ``digits`` significant digits, or None (JSON null) when not finite."""
    v = float(value)
    if not math.isfinite(v):
        return None
    return float(f"{v:.{digits}g}")
