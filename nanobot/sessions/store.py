"""Session history: the interface, and the embedded SQLite implementation.

A turn is appended as one transaction (user message, every assistant and
tool message, the final reply), so history never holds half a turn. A small
in-memory window per recently used session saves a query per turn; it is
bounded (LRU) and only ever filled from what was committed. With several
worker processes, each cached window carries the session's version
(:class:`SessionVersions`) and is read again from SQLite once another worker
has moved it on.
"""

from __future__ import annotations

import sqlite3
import time
from collections import OrderedDict
from typing import Any, Protocol

import orjson

from nanobot.storage.db import Database

Message = dict[str, Any]


class SessionStore(Protocol):
    async def history(self, key: str, limit: int) -> list[Message]:
        """The last ``limit`` messages of ``key``, trimmed to a valid window."""

    async def append_turn(self, key: str, messages: list[Message]) -> None:
        """Append one whole turn atomically."""

    async def close(self) -> None: ...


class SessionVersions(Protocol):
    """A counter per session that every writer moves on, shared by the processes.

    Both calls are made while the session's lock is held.
    """

    def current(self, key: str) -> int: ...

    def bump(self, key: str) -> int: ...


def trim_window(messages: list[Message]) -> list[Message]:
    """Move the window forward so it never starts inside a tool exchange.

    A window that starts with ``tool`` results (their assistant call cut off)
    is invalid for every OpenAI-compatible API.
    """
    start = 0
    while start < len(messages) and messages[start].get("role") == "tool":
        start += 1
    return messages[start:] if start else messages


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
"""


class SqliteSessionStore:
    """Sessions in ``<workspace>/nanobot.db``."""

    def __init__(
        self, db: Database, cache_sessions: int = 4096, cache_messages: int = 200,
        versions: SessionVersions | None = None,
    ) -> None:
        self._db = db
        self._cache: OrderedDict[str, tuple[int, list[Message]]] = OrderedDict()  # key -> (version, window)
        self._cache_sessions = cache_sessions
        self._cache_messages = cache_messages
        self._versions = versions
        db.call(lambda conn: conn.executescript(_SCHEMA))

    async def history(self, key: str, limit: int) -> list[Message]:
        if limit <= 0:
            return []
        version = self._versions.current(key) if self._versions is not None else 0
        cached = self._cache.get(key)
        if cached is not None and cached[0] == version:
            rows = cached[1]
            if len(rows) >= limit or len(rows) < self._cache_messages:
                # Either the cache holds more than asked, or it holds the whole session.
                self._cache.move_to_end(key)
                return trim_window(rows[-limit:])
        rows = await self._db.run(_load, key, max(limit, self._cache_messages))
        self._remember(key, version, rows)
        return trim_window(rows[-limit:])

    async def append_turn(self, key: str, messages: list[Message]) -> None:
        if not messages:
            return
        # Moved on before the commit: a worker that dies between the two
        # leaves the others re-reading, never trusting a window it outdated.
        version = self._versions.bump(key) if self._versions is not None else 0
        await self._db.run(_append, key, [orjson.dumps(m) for m in messages])
        cached = self._cache.get(key)
        if cached is not None:
            self._remember(key, version, cached[1] + messages)

    def _remember(self, key: str, version: int, rows: list[Message]) -> None:
        self._cache[key] = (version, rows[-self._cache_messages :])
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_sessions:
            self._cache.popitem(last=False)

    async def close(self) -> None:
        self._cache.clear()


def _load(conn: sqlite3.Connection, key: str, limit: int) -> list[Message]:
    rows = conn.execute(
        "SELECT data FROM messages WHERE session = ? ORDER BY id DESC LIMIT ?", (key, limit)
    ).fetchall()
    return [orjson.loads(r[0]) for r in reversed(rows)]


def _append(conn: sqlite3.Connection, key: str, blobs: list[bytes]) -> None:
    now = time.time()
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            "INSERT INTO messages (session, data, created) VALUES (?, ?, ?)",
            [(key, b, now) for b in blobs],
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
