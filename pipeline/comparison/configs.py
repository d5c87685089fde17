"""What differs between two runs: their saved configs and store facts, side by side."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Keys that name where a run lives or what it was called, or hashes derived from the
#: settings that are listed themselves: never listed as a difference of the models.
SKIPPED_KEYS = ("run.out", "dataset.name", "source", "run_dir", "name", "requested",
                "stage_hashes", "config_hash")


@dataclass(frozen=True)
class Difference:
    """One setting that differs: its dotted key and each run's value as text (``absent``
    where a run has no such key)."""

    key: str
    a: str
    b: str


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"run": {"seed": 0}}`` -> ``{"run.seed": 0}``; lists and other values stay whole."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: value}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def differences(a: Mapping[str, Any], b: Mapping[str, Any],
                skip: tuple[str, ...] = SKIPPED_KEYS) -> list[Difference]:
    """Every key whose value differs between the nested mappings ``a`` and ``b`` (configs,
    or store attributes), in key order; keys starting with one of ``skip`` are left out."""
    fa, fb = flatten(a), flatten(b)
    out = []
    for key in sorted(set(fa) | set(fb)):
        if any(key == s or key.startswith(s + ".") for s in skip):
            continue
        va, vb = fa.get(key, "absent"), fb.get(key, "absent")
        if _text(va) != _text(vb):
            out.append(Difference(key, _text(va), _text(vb)))
    return out
