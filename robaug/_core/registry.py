"""Name -> object tables (models, recipes, solvers, corruptions, pretrained weights) with one way to register,
list and look up, and one error for an unknown name (which lists the known ones and the closest match)."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

__all__ = ["Registry", "unknown_name_message"]

T = TypeVar("T")


def unknown_name_message(kind: str, name: object, known: list[str]) -> str:
    """``unknown model 'resnt18'; did you mean 'resnet18'? Known: ...``"""
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    return f"unknown {kind} {name!r}{hint} Known: {', '.join(known)}"


class Registry(Generic[T]):
    """An ordered ``name -> T`` table. ``reg.register(name, obj)`` or ``@reg.register(name)``; ``reg[name]``
    raises ``KeyError`` with :func:`unknown_name_message`; ``reg.names()`` lists in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None, *, overwrite: bool = False):
        def add(o: T) -> T:
            if name in self._items and not overwrite:
                raise ValueError(f"a {self.kind} named {name!r} is already registered; pass overwrite=True")
            self._items[name] = o
            return o

        return add(obj) if obj is not None else add

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise KeyError(unknown_name_message(self.kind, name, self.names())) from None

    def get(self, name: str, default: T | None = None) -> T | None:
        return self._items.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self, filter: Callable[[str, T], bool] | None = None) -> list[str]:
        return [n for n, o in self._items.items() if filter is None or filter(n, o)]
