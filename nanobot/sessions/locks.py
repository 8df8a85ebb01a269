"""Per-session ordering: one turn at a time per session, in arrival order.

Each key's lock lives only while someone holds or waits for it, so a million
distinct session ids cost nothing once their requests end.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class SessionOrdering(Protocol):
    """What a turn needs: ``async with ordering.hold(key):`` runs alone on ``key``."""

    def hold(self, key: str) -> "_Hold": ...


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # holders + waiters


class _Hold:
    """``async with`` for one key (a plain class: cheaper than a generator CM)."""

    __slots__ = ("_locks", "_key", "_entry")

    def __init__(self, locks: dict[str, _Entry], key: str) -> None:
        self._locks = locks
        self._key = key

    async def __aenter__(self) -> None:
        entry = self._locks.get(self._key)
        if entry is None:
            entry = self._locks[self._key] = _Entry()
        entry.users += 1
        self._entry = entry
        try:
            # asyncio.Lock hands over in FIFO order; a cancelled waiter (the
            # request's deadline) leaves the queue intact for the others.
            await entry.lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._entry.lock.release()
        self._leave()

    def _leave(self) -> None:
        entry = self._entry
        entry.users -= 1
        if entry.users == 0:
            del self._locks[self._key]


class SessionLocks:
    """The in-process :class:`SessionOrdering`."""

    def __init__(self) -> None:
        self._locks: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._locks)

    def hold(self, key: str) -> _Hold:
        return _Hold(self._locks, key)
