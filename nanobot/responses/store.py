"""Stored responses (``/v1/responses`` with ``store``): the interface, and SQLite.

One row per response: the response object as it was sent, its input items
(for ``GET .../input_items``), the chat messages it adds to its chain's
context (its input before the turn, the user message, every assistant and
tool message of the turn), and the link to the response it continued. A
chain's context is read in one recursive query, from the newest response
back until enough messages are found. Rows older than the retention are
neither read nor kept (:class:`ResponseCleaner`).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from nanobot.storage.db import Database

log = logging.getLogger("nanobot.responses")

DAY = 86400.0


@dataclass(slots=True)
class StoredResponse:
    id: str
    session_id: str | None  # the session its turn ran in (tools, workspace, ordering)
    previous_id: str | None
    created: float
    body: dict[str, Any]  # the response object
    items: list[dict[str, Any]]  # its input items
    messages: list[dict[str, Any]]  # what it adds to its chain's context
    raw: bytes | None = None  # ``body`` as already serialised for the client (then not serialised again)


@dataclass(slots=True)
class Chain:
    """What a new response continuing ``previous_response_id`` starts from."""

    session_id: str | None
    messages: list[dict[str, Any]]  # the chain's context, oldest first (at least the last ``limit``)


class ResponseStore(Protocol):
    async def save(self, response: StoredResponse) -> None: ...

    async def get(self, response_id: str, since: float) -> StoredResponse | None:
        """The response if stored after ``since`` (older ones count as gone)."""

    async def chain(self, response_id: str, limit: int, since: float) -> Chain | None:
        """The context ending with ``response_id`` (None: not stored); walks back until ``limit`` messages."""

    async def delete(self, response_id: str) -> bool: ...

    async def expire(self, before: float) -> int:
        """Remove responses created before ``before``; how many."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    session TEXT,
    prev TEXT,
    created REAL NOT NULL,
    body BLOB NOT NULL,
    items BLOB NOT NULL,
    messages BLOB NOT NULL,
    count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created ON responses(created);
"""

# From the response back along ``prev``, while fewer than ``limit`` messages were found.
_CHAIN = """
WITH RECURSIVE chain(id, prev, messages, n, depth) AS (
    SELECT id, prev, messages, count, 0 FROM responses WHERE id = ?1 AND created >= ?3
    UNION ALL
    SELECT r.id, r.prev, r.messages, chain.n + r.count, chain.depth + 1
    FROM responses r JOIN chain ON r.id = chain.prev
    WHERE chain.n < ?2 AND r.created >= ?3
)
SELECT messages FROM chain ORDER BY depth DESC
"""


def row_values(r: StoredResponse) -> tuple[Any, ...]:
    return (
        r.id,
        r.session_id,
        r.previous_id,
        r.created,
        r.raw if r.raw is not None else orjson.dumps(r.body),
        orjson.dumps(r.items),
        orjson.dumps(r.messages),
        len(r.messages),
    )


def joined(blobs: list[bytes]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for blob in blobs:
        out.extend(orjson.loads(blob))
    return out


class SqliteResponseStore:
    """Responses in the same ``nanobot.db`` as sessions."""

    def __init__(self, db: Database) -> None:
        self._db = db
        db.call(lambda conn: conn.executescript(_SCHEMA))

    async def save(self, response: StoredResponse) -> None:
        # Serialised on the database's thread: input items may hold megabytes of files.
        await self._db.run(_save, response)

    async def get(self, response_id: str, since: float) -> StoredResponse | None:
        return await self._db.run(_get, response_id, since)

    async def chain(self, response_id: str, limit: int, since: float) -> Chain | None:
        return await self._db.run(_chain, response_id, limit, since)

    async def delete(self, response_id: str) -> bool:
        return await self._db.run(_delete, response_id)

    async def expire(self, before: float) -> int:
        return await self._db.run(_expire, before)


def _save(conn: sqlite3.Connection, r: StoredResponse) -> None:
    conn.execute("INSERT INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row_values(r))


def _get(conn: sqlite3.Connection, response_id: str, since: float) -> StoredResponse | None:
    row = conn.execute(
        "SELECT id, session, prev, created, body, items, messages FROM responses WHERE id = ? AND created >= ?",
        (response_id, since),
    ).fetchone()
    if row is None:
        return None
    return StoredResponse(
        row[0], row[1], row[2], row[3], orjson.loads(row[4]), orjson.loads(row[5]), orjson.loads(row[6])
    )


def _chain(conn: sqlite3.Connection, response_id: str, limit: int, since: float) -> Chain | None:
    head = conn.execute("SELECT session FROM responses WHERE id = ? AND created >= ?", (response_id, since)).fetchone()
    if head is None:
        return None
    blobs = [r[0] for r in conn.execute(_CHAIN, (response_id, max(limit, 1), since))]
    return Chain(head[0], joined(blobs))


def _delete(conn: sqlite3.Connection, response_id: str) -> bool:
    return conn.execute("DELETE FROM responses WHERE id = ?", (response_id,)).rowcount > 0


def _expire(conn: sqlite3.Connection, before: float) -> int:
    return conn.execute("DELETE FROM responses WHERE created < ?", (before,)).rowcount


class ResponseCleaner:
    """Removes responses older than ``api.responses.retentionDays``, hourly (0: kept for good)."""

    INTERVAL = 3600.0

    def __init__(self, store: ResponseStore, retention_days: float) -> None:
        self._store = store
        self.max_age = retention_days * DAY
        self._task: asyncio.Task[None] | None = None

    def since(self) -> float:
        """Responses created before this count as gone, even before a pass removes them."""
        return time.time() - self.max_age if self.max_age > 0 else 0.0

    def start(self) -> None:
        if self.max_age > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="nanobot-response-cleaner")

    async def _run(self) -> None:
        while True:
            try:
                removed = await self._store.expire(self.since())
                if removed:
                    log.info("removed %d stored response(s) older than %g days", removed, self.max_age / DAY)
            except Exception as exc:  # the database down: try again next time
                log.warning("stored response cleanup failed: %s", type(exc).__name__)
            await asyncio.sleep(self.INTERVAL)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
