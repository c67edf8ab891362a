"""Latest wins: the one rule for requests and images that a newer one makes obsolete.

Requests carry increasing ids. Per key (a face's target name), only the item of the newest
id is kept: the worker's queue keeps the newest request per target (an older one queued is
cancelled, a running one is cancelled between synthesis blocks), the client keeps the newest
image per face until Blender's main thread takes it. A stale item (an id older than the one
held) is refused, so out-of-order arrivals cannot roll a face back.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestWins(Generic[T]):
    """Newest item per key, oldest key first. Not thread-safe: callers hold their lock."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, tuple[int, T]] = OrderedDict()

    def put(self, key: str, ident: int, item: T) -> tuple[bool, T | None]:
        """File ``item`` (request ``ident``) under ``key``. Returns (accepted, displaced):
        accepted is False when ``key`` holds a newer id (``item`` is stale and dropped);
        displaced is the older item it replaced, if any. A replaced key moves to the end."""
        held = self._items.get(key)
        if held is not None and held[0] > ident:
            return False, None
        self._items.pop(key, None)
        self._items[key] = (ident, item)
        return True, None if held is None else held[1]

    def pop(self, key: str) -> T | None:
        held = self._items.pop(key, None)
        return None if held is None else held[1]

    def pop_oldest(self) -> tuple[str, T]:
        """The key filed longest ago and its item (KeyError when empty)."""
        key, (_ident, item) = self._items.popitem(last=False)
        return key, item

    def take_all(self) -> list[T]:
        items = [item for _ident, item in self._items.values()]
        self._items.clear()
        return items

    def keys(self) -> list[str]:
        return list(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def clear(self) -> None:
        self._items.clear()


def obsolete(requests: dict[int, str], key: str, newest: int) -> list[int]:
    """Ids of ``requests`` (id -> key) for ``key`` up to ``newest``: done once the result of
    ``newest`` is shown (older ones may never be reported: their images were superseded)."""
    return [ident for ident, held in requests.items() if held == key and ident <= newest]
