"""The one hash of JSON-able values that stage hashes and run records are made of."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def stable_hash(obj: Any) -> str:
    """A short, stable hash of a JSON-able value.

    Keys are sorted and separators fixed, so equal values hash equally whatever their order;
    anything JSON cannot write (a path) is hashed as its ``str``. Changing this changes every
    stage hash, and so makes every existing run compute again.
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
