"""A read-only, hashable, picklable mapping: what a config keeps its methods' parameters in."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any


class FrozenMap(Mapping[str, Any]):
    """A read-only, hashable, picklable mapping (``MappingProxyType`` cannot be pickled).

    Parameters
    ----------
    items
        A mapping or ``(key, value)`` pairs; copied, so later changes to it do not show.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        self._items: dict[str, Any] = dict(items)

    def __getitem__(self, name: str) -> Any:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"

    def __hash__(self) -> int:
        # Equal maps have equal items whatever their order; an unhashable value raises
        # TypeError, as a dict would.
        return hash(tuple(sorted(self._items.items())))

    def __reduce__(self) -> tuple[type[FrozenMap], tuple[dict[str, Any]]]:
        return (FrozenMap, (self._items,))


def frozen_methods(methods: Mapping[str, Mapping[str, Any]]) -> FrozenMap:
    """Method name -> its parameters, both levels frozen."""
    return FrozenMap((name, FrozenMap(params)) for name, params in methods.items())
