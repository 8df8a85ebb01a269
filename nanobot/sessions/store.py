"""Session history: the interface, and the embedded SQLite implementation.

A turn is appended as one transaction (user message, every assistant and
tool message, the final reply), so history never holds half a turn. A small
in-memory window per recently used session saves a query per turn; it is
bounded in bytes (LRU: a session of a few huge messages weighs what it
costs, not one slot) and only ever filled from what was committed. With several
worker processes, each cached window carries the session's version
(:class:`SessionVersions`) and is read again from SQLite once another worker
has moved it on.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Protocol

import orjson

from nanobot.sessions.budget import bound_sized, trim_window
from nanobot.sessions.window_cache import WindowCache
from nanobot.storage.db import Database

Message = dict[str, Any]


class SessionStore(Protocol):
    async def history(self, key: str, limit: int, max_chars: int | None = None) -> list[Message]:
        """The last ``limit`` messages of ``key``, trimmed to a valid window.

        With ``max_chars`` (not negative), what ``bound_chars`` keeps of them within
        that many characters: the store knows the messages' JSON sizes, and
        ``bound_sized`` counts no character when those say the window fits.
        """

    async def append_turn(self, key: str, messages: list[Message], closes_paused: bool = False) -> None:
        """Append one whole turn atomically (``closes_paused``: and forget the paused turn it ends)."""

    async def paused(self, key: str) -> bytes | None:
        """``key``'s turn waiting for client tool results (``PausedTurn`` JSON), if any."""

    async def pause_turn(self, key: str, data: bytes) -> None:
        """Keep ``data`` as ``key``'s paused turn (replacing any), its history unchanged."""

    async def close(self) -> None: ...


class SessionVersions(Protocol):
    """A counter per session that every writer moves on, shared by the processes.

    Both calls are made while the session's lock is held.
    """

    def current(self, key: str) -> int: ...

    def bump(self, key: str) -> int: ...


# Plain rowids, not AUTOINCREMENT: rows are never deleted, so ids still only
# grow, and a commit writes one page fewer (no sqlite_sequence update).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    session TEXT NOT NULL,
    data BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_session ON messages(session, id);
CREATE TABLE IF NOT EXISTS paused_turns (
    session TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    created REAL NOT NULL
);
"""


class SqliteSessionStore:
    """Sessions in ``<workspace>/nanobot.db``."""

    def __init__(
        self,
        db: Database,
        cache_bytes: int = 64 * 1024 * 1024,
        cache_messages: int = 200,
        versions: SessionVersions | None = None,
    ) -> None:
        self._db = db
        self._cache = WindowCache(cache_bytes, cache_messages)
        self._cache_messages = cache_messages
        self._versions = versions
        db.call(lambda conn: conn.executescript(_SCHEMA))

    def __len__(self) -> int:
        return len(self._cache)  # sessions cached

    @property
    def cached_bytes(self) -> int:
        return self._cache.cached_bytes

    async def history(self, key: str, limit: int, max_chars: int | None = None) -> list[Message]:
        if limit <= 0:
            return []
        version = self._versions.current(key) if self._versions is not None else 0
        cached = self._cache.get(key)
        if cached is not None and cached.version == version:
            rows = cached.rows
            if len(rows) >= limit or len(rows) < self._cache_messages:
                # Either the cache holds more than asked, or it holds the whole session.
                return bound_sized(trim_window(rows[-limit:]), cached.sizes, max_chars)
        rows, sizes, paused = await self._db.run(_load, key, max(limit, self._cache_messages))
        self._cache.remember(key, version, rows, sizes, paused)
        return bound_sized(trim_window(rows[-limit:]), sizes, max_chars)

    async def paused(self, key: str) -> bytes | None:
        # Read with the window (``history`` came first in this turn): no query of its own.
        version = self._versions.current(key) if self._versions is not None else 0
        cached = self._cache.get(key)
        if cached is not None and cached.version == version:
            return cached.paused
        return await self._db.run(_paused, key)

    async def pause_turn(self, key: str, data: bytes) -> None:
        version = self._versions.bump(key) if self._versions is not None else 0
        await self._db.run(_pause, key, data)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.remember(key, version, cached.rows, cached.sizes, data)

    async def append_turn(self, key: str, messages: list[Message], closes_paused: bool = False) -> None:
        if not messages:
            return
        # Moved on before the commit: a worker that dies between the two
        # leaves the others re-reading, never trusting a window it outdated.
        version = self._versions.bump(key) if self._versions is not None else 0
        # Serialised in the database's thread: a turn can be tens of MB.
        sizes = await self._db.run(_append, key, messages, closes_paused)
        cached = self._cache.get(key)
        if cached is not None:
            # A turn appended leaves nothing paused: it closed the paused turn, or there was none.
            self._cache.remember(key, version, cached.rows + messages, cached.sizes + sizes)

    async def close(self) -> None:
        self._cache.clear()


def _load(conn: sqlite3.Connection, key: str, limit: int) -> tuple[list[Message], list[int], bytes | None]:
    rows = conn.execute("SELECT data FROM messages WHERE session = ? ORDER BY id DESC LIMIT ?", (key, limit)).fetchall()
    rows.reverse()
    return [orjson.loads(r[0]) for r in rows], [len(r[0]) for r in rows], _paused(conn, key)


def _paused(conn: sqlite3.Connection, key: str) -> bytes | None:
    row = conn.execute("SELECT data FROM paused_turns WHERE session = ?", (key,)).fetchone()
    return bytes(row[0]) if row else None


def _pause(conn: sqlite3.Connection, key: str, data: bytes) -> None:
    conn.execute(
        "INSERT INTO paused_turns (session, data, created) VALUES (?, ?, ?) "
        "ON CONFLICT (session) DO UPDATE SET data = excluded.data, created = excluded.created",
        (key, data, time.time()),
    )


def _append(conn: sqlite3.Connection, key: str, messages: list[Message], closes_paused: bool) -> list[int]:
    """Insert one turn in one transaction; the size of each message's JSON."""
    blobs = [orjson.dumps(m) for m in messages]
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            "INSERT INTO messages (session, data, created) VALUES (?, ?, ?)",
            [(key, b, now) for b in blobs],
        )
        if closes_paused:
            conn.execute("DELETE FROM paused_turns WHERE session = ?", (key,))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return [len(b) for b in blobs]
