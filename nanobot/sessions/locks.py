"""Per-session ordering: one turn at a time per session, in arrival order.

Each key's lock lives only while someone holds or waits for it, so a million
distinct session ids cost nothing once their requests end.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator


class SessionLocks:
    def __init__(self) -> None:
        # key -> [lock, number of holders + waiters]
        self._locks: dict[str, list] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Hold ``key``'s lock; waiters are served first come, first served.

        The caller bounds the wait (the request deadline); a cancelled wait
        leaves the queue intact for the others.
        """
        entry = self._locks.get(key)
        if entry is None:
            entry = self._locks[key] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._locks[key]
