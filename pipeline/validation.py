"""The one validator of single values: a method's parameter and a config key alike.

A :class:`Rule` says what a value may be besides its type: a set of choices, and bounds. Its
bounds use one semantics everywhere, the one of pydantic and ``annotated_types``:
``ge``/``le`` are closed (the bound itself is allowed), ``gt``/``lt`` open. A rule spells out
which it means, so no reader has to remember a convention. NaN is never a value; an infinite
one only where a closed bound admits it (``le=math.inf``: "no upper limit, infinity too").

:func:`type_problem` checks the type against the Python type itself (``int``, ``float``,
``bool``, ``str``, ``Path``, ``tuple[str, ...]``, ``tuple[float, ...]``), never against the
text of an annotation. Both return a message in the house style, ``"expected X, got Y"``, or
None when the value is fine; the caller adds where the value came from.

Torch-free, numpy-free: configs and the CLI read it at start.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: ``check(value) -> why the value is not allowed, or None``: a rule's own extra test.
Check = Callable[[Any], str | None]


def _is_number(value: Any) -> bool:
    # bool is an int to Python, but true is no number.
    return isinstance(value, int | float) and not isinstance(value, bool)


def type_name(tp: Any) -> str:
    """How a type reads in a message: ``an integer``, ``a list of strings``, ..."""
    if typing.get_origin(tp) is tuple:
        (item, *_) = typing.get_args(tp) or (str,)
        return "a list of numbers" if item in (float, int) else "a list of strings"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            Path: "a path string"}.get(tp, getattr(tp, "__name__", str(tp)))


def type_problem(tp: Any, value: Any) -> str | None:
    """Why ``value`` is not of type ``tp``, or None.

    Parameters
    ----------
    tp
        ``bool``, ``int``, ``float`` (an integer is a fine float), ``str``, ``Path`` (a
        non-empty string), or ``tuple[T, ...]`` (a list or tuple of such values).
    value
        The value as read from TOML, ``--set`` or a Python call.
    """
    if typing.get_origin(tp) is tuple:
        (item, *_) = typing.get_args(tp) or (str,)
        ok = isinstance(value, list | tuple) and all(type_problem(item, v) is None
                                                     for v in value)
    elif tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = _is_number(value)
    elif tp is Path:
        ok = isinstance(value, str | Path) and bool(str(value))
    else:
        ok = isinstance(value, tp)
    return None if ok else f"expected {type_name(tp)}, got {value!r}"


@dataclass(frozen=True)
class Rule:
    """What a value may be besides its type.

    Attributes
    ----------
    choices
        The allowed values, or None for any.
    ge, le
        Closed bounds: ``value >= ge``, ``value <= le``.
    gt, lt
        Open bounds: ``value > gt``, ``value < lt``.
    check
        ``check(value) -> problem or None``, run after the checks above (a registry lookup,
        a cross-check). It imports what it needs when it runs.
    help
        One line on what the value is for (config reference, ``--help``).
    """

    choices: tuple[Any, ...] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    check: Check | None = None
    help: str = ""

    def bounds_text(self, name: str = "value") -> str:
        """The bounds as one inequality: ``0 < value <= 1`` with both, ``value >= 2`` with a
        lower bound only (an upper bound of infinity says nothing); empty without bounds."""
        le = None if self.le == math.inf else self.le
        low = (f"{self.ge:g} <= " if self.ge is not None
               else f"{self.gt:g} < " if self.gt is not None else "")
        high = (f" <= {le:g}" if le is not None
                else f" < {self.lt:g}" if self.lt is not None else "")
        if low and not high:  # read from the name: "n_steps >= 2"
            bound = self.ge if self.ge is not None else self.gt
            return f"{name} {'>=' if self.ge is not None else '>'} {bound:g}"
        return f"{low}{name}{high}" if low or high else ""

    def problem(self, value: Any, name: str = "value") -> str | None:
        """Why ``value`` (already of the right type) breaks this rule, or None."""
        if self.choices is not None and value not in self.choices:
            shown = ", ".join(str(c) for c in self.choices)
            return f"expected {name} to be one of {shown}, got {value!r}"
        if _is_number(value):
            admitted = value == self.le or value == self.ge
            if isinstance(value, float) and not math.isfinite(value) and not admitted:
                return f"expected {name} to be a finite number, got {value!r}"
            inside = ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                      and (self.le is None or value <= self.le)
                      and (self.lt is None or value < self.lt))
            if not inside:
                return f"expected {self.bounds_text(name)}, got {value!r}"
        return self.check(value) if self.check is not None else None


def rule(*, choices: Sequence[Any] | None = None, ge: float | None = None,
         gt: float | None = None, le: float | None = None, lt: float | None = None,
         check: Check | None = None, help: str = "") -> Rule:
    """A :class:`Rule`, with ``choices`` taken as any sequence."""
    return Rule(tuple(choices) if choices is not None else None, ge, gt, le, lt, check, help)


def value_problem(tp: Any, rule_: Rule | None, value: Any, name: str = "value") -> str | None:
    """The type's problem, else the rule's: the one check every caller runs."""
    return type_problem(tp, value) or (rule_.problem(value, name) if rule_ else None)
