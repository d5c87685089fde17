"""The one registry pattern: a named table of entries, each registered beside its item.

Methods, metrics, model sources and stages each keep one :class:`Registry`. An entry is
added where it is defined (a decorator or a call at the bottom of its own module, as
zennit's ``@register_composite`` and timm's ``@register_model``), and the registry's package
imports its entry modules once, so that reading the registry sees them all. CLI choices,
configs, status and tests read the registry; no other code names an entry.

Torch-free: registries are read when a config loads.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Entries by name, in registration order.

    Parameters
    ----------
    kind
        What an entry is, for messages (``"method"``, ``"metric"``, ``"model source"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name``; a second entry of one name is a programming error.

        Returns
        -------
        The entry, so that ``add`` can end a module: ``X = REGISTRY.add("x", X)``.
        """
        if name in self._entries:
            raise ValueError(f"Expected one {self.kind} named {name!r}, got a second one")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda entry: self.add(name, entry)

    def get_or_raise(self, name: str, error: Callable[[str], Exception] = KeyError
                     ) -> T:
        """The entry ``name``, or ``error("Expected a <kind> in [...], got 'x'; did you
        mean ...")``."""
        if name in self._entries:
            return self._entries[name]
        raise error(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        """``Expected a <kind> in [a, b], got 'x'`` with a did-you-mean when one is close."""
        close = difflib.get_close_matches(name, list(self._entries), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return (f"Expected a {self.kind} in [{', '.join(self._entries)}], got {name!r}"
                f"{hint}")

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
