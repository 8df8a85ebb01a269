"""Session history in PostgreSQL.

``nanobot_sessions`` keeps each session's length (its message count), which
every turn moves on; ``nanobot_messages`` keeps the messages numbered 1, 2,
... within their session. A turn is one statement: a compare-and-set of the
length from what this turn read to the new one, and the insert of its
messages, so it lands whole or not at all, and never on top of a turn it
did not see (a node that lost its session lock mid-turn cannot commit).

A turn costs at most two round trips here: reading the window, skipped when
the session lock's grant carried a length this process's cached window
already has, and the commit. Whether the session has a paused turn comes
with the grant too; only a paused turn's data is read apart.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Protocol

import asyncpg
import orjson

from nanobot.errors import DatabaseUnavailable
from nanobot.sessions.budget import bound_sized, trim_window
from nanobot.sessions.store import Message
from nanobot.sessions.window_cache import WindowCache
from nanobot.storage.pg import PgDatabase

# The session's length, and its last ``$2`` messages unless the caller's
# cached window is already at that length (``$3``).
_WINDOW = """
SELECT s.length, m.data
FROM nanobot_sessions s
LEFT JOIN LATERAL (
    SELECT data, n FROM nanobot_messages
    WHERE session = s.key AND n > s.length - $2 AND s.length <> $3
) m ON true
WHERE s.key = $1
ORDER BY m.n
"""

# Compare-and-set of the length, then the messages, in one statement.
_APPEND = """
WITH moved AS (
    INSERT INTO nanobot_sessions AS s (key, length, updated) VALUES ($1, $3, $5)
    ON CONFLICT (key) DO UPDATE SET length = $3, updated = $5 WHERE s.length = $2
    RETURNING length
)
INSERT INTO nanobot_messages (session, n, data, created)
SELECT $1, $2 + m.o, m.data, $5 FROM moved, unnest($4::bytea[]) WITH ORDINALITY AS m(data, o)
"""

READ_AT_LIMIT = 65536

_LENGTH = "SELECT length FROM nanobot_sessions WHERE key = $1"
_PAUSED = "SELECT data FROM nanobot_paused WHERE session = $1"
_PAUSE = """
INSERT INTO nanobot_paused (session, data, created) VALUES ($1, $2, $3)
ON CONFLICT (session) DO UPDATE SET data = $2, created = $3
"""
_UNPAUSE = "DELETE FROM nanobot_paused WHERE session = $1"


class TurnFence(Protocol):
    """The session ordering, as far as the store relies on it."""

    def length(self, key: str) -> int | None:
        """``key``'s length read when this turn's lock was granted (None: unknown)."""

    def paused(self, key: str) -> bool | None:
        """Whether ``key`` had a paused turn when this turn's lock was granted (None: unknown)."""

    async def confirm(self, key: str) -> None:
        """Raise unless this process still holds ``key``'s turn lock."""


class PgSessionStore:
    """:class:`~nanobot.sessions.store.SessionStore` in PostgreSQL.

    The cached windows' versions are session lengths.
    """

    def __init__(
        self,
        db: PgDatabase,
        fence: TurnFence | None = None,
        cache_bytes: int = 64 * 1024 * 1024,
        cache_messages: int = 200,
    ) -> None:
        self._db = db
        self._fence = fence
        self._cache = WindowCache(cache_bytes, cache_messages)
        # The length each running turn read its history at: its commit's
        # expected value (one turn per key at a time in a process). Bounded:
        # a turn that fails leaves its entry until newer ones push it out.
        self._read_at: OrderedDict[str, int] = OrderedDict()

    async def history(self, key: str, limit: int, max_chars: int | None = None) -> list[Message]:
        cached = self._cache.get(key)
        known = self._fence.length(key) if self._fence is not None else None
        sizes: list[int]
        if known == 0:
            length, window, sizes = 0, [], []  # a new session
        elif (
            known is not None
            and cached is not None
            and cached.version == known
            and (len(cached.rows) >= min(limit, known))
        ):
            # The lock's grant says the cached window is current.
            length, window, sizes = known, cached.rows, cached.sizes
        else:
            want = max(limit, self._cache.keep)
            # The query leaves the messages out when the cached window is still
            # current: only worth asking of a window that holds enough of them.
            usable = cached is not None and len(cached.rows) >= min(limit, cached.version)
            rows = await self._db.run(_fetch, key, want, cached.version if cached is not None and usable else -1)
            length = rows[0][0] if rows else 0
            if cached is not None and usable and cached.version == length:
                window, sizes = cached.rows, cached.sizes
            else:
                data = [r[1] for r in rows if r[1] is not None]
                window, sizes = [orjson.loads(d) for d in data], [len(d) for d in data]
                self._cache.remember(key, length, window, sizes)
        self._read_at[key] = length
        self._read_at.move_to_end(key)
        if len(self._read_at) > READ_AT_LIMIT:
            self._read_at.popitem(last=False)
        if limit <= 0:
            return []
        return bound_sized(trim_window(window[-limit:]), sizes, max_chars)

    async def paused(self, key: str) -> bytes | None:
        # The lock's grant says whether there is one (another node may pause the
        # session without moving its length); only its data costs a round trip.
        if self._fence is not None and self._fence.paused(key) is False:
            return None
        return await self._db.run(_paused, key)

    async def pause_turn(self, key: str, data: bytes) -> None:
        if self._fence is not None:
            await self._fence.confirm(key)
        await self._db.run(_pause, key, data)

    async def append_turn(self, key: str, messages: list[Message], closes_paused: bool = False) -> None:
        if not messages:
            return
        expected = self._read_at.pop(key, None)
        if expected is None:  # history was not read in this turn: read the length now
            expected = await self._db.run(_length, key)
        if self._fence is not None:
            await self._fence.confirm(key)
        blobs = [orjson.dumps(m) for m in messages]
        try:
            done = await self._db.run(_append_closing if closes_paused else _append, key, expected, blobs)
        except DatabaseUnavailable:
            # The commit may have landed before the connection went: the
            # length says which (nobody else can move it while we hold the lock).
            done = await self._settle(key, expected, len(blobs))
        if not done:
            self._cache.drop(key)
            raise DatabaseUnavailable("the session moved on during this turn")
        cached = self._cache.get(key)
        sizes = [len(b) for b in blobs]
        if expected == 0:
            self._cache.remember(key, len(blobs), messages, sizes)
        elif cached is not None and cached.version == expected:
            self._cache.remember(key, expected + len(blobs), cached.rows + messages, cached.sizes + sizes)
        else:
            self._cache.drop(key)

    async def _settle(self, key: str, expected: int, count: int) -> bool:
        try:
            length = await self._db.run(_length, key)
        except DatabaseUnavailable:
            self._cache.drop(key)
            raise
        return length == expected + count

    async def close(self) -> None:
        self._cache.clear()


async def _fetch(conn: asyncpg.Connection, key: str, limit: int, cached_length: int) -> list[Any]:
    rows: list[Any] = await conn.fetch(_WINDOW, key, limit, cached_length)
    return rows


async def _length(conn: asyncpg.Connection, key: str) -> int:
    return int(await conn.fetchval(_LENGTH, key) or 0)


async def _paused(conn: asyncpg.Connection, key: str) -> bytes | None:
    data = await conn.fetchval(_PAUSED, key)
    return bytes(data) if data is not None else None


async def _pause(conn: asyncpg.Connection, key: str, data: bytes) -> None:
    await conn.execute(_PAUSE, key, data, time.time())


async def _append_closing(conn: asyncpg.Connection, key: str, expected: int, blobs: list[bytes]) -> bool:
    """The turn, and the paused turn it closes forgotten, in one transaction."""
    async with conn.transaction():
        done = await _append(conn, key, expected, blobs)
        if done:
            await conn.execute(_UNPAUSE, key)
    return done


async def _append(conn: asyncpg.Connection, key: str, expected: int, blobs: list[bytes]) -> bool:
    status = await conn.execute(_APPEND, key, expected, expected + len(blobs), blobs, time.time())
    return bool(status == f"INSERT 0 {len(blobs)}")
