"""Stored responses in PostgreSQL (``nanobot_responses``, schema version 2 in ``nanobot.storage.pg``).

The same rows and the same recursive chain query as the SQLite store, so
any node serves any chain.
"""

from __future__ import annotations

import asyncpg
import orjson

from nanobot.responses.store import Chain, StoredResponse, joined, row_values
from nanobot.storage.pg import PgDatabase

_CHAIN = """
WITH RECURSIVE chain(id, prev, messages, n, depth) AS (
    SELECT id, prev, messages, count, 0 FROM nanobot_responses WHERE id = $1 AND created >= $3
    UNION ALL
    SELECT r.id, r.prev, r.messages, chain.n + r.count, chain.depth + 1
    FROM nanobot_responses r JOIN chain ON r.id = chain.prev
    WHERE chain.n < $2 AND r.created >= $3
)
SELECT messages FROM chain ORDER BY depth DESC
"""


class PgResponseStore:
    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def save(self, response: StoredResponse) -> None:
        await self._db.run(_save, response)

    async def get(self, response_id: str, since: float) -> StoredResponse | None:
        return await self._db.run(_get, response_id, since)

    async def chain(self, response_id: str, limit: int, since: float) -> Chain | None:
        return await self._db.run(_chain, response_id, limit, since)

    async def delete(self, response_id: str) -> bool:
        return await self._db.run(_delete, response_id)

    async def expire(self, before: float) -> int:
        return await self._db.run(_expire, before)


async def _save(conn: asyncpg.Connection, r: StoredResponse) -> None:
    await conn.execute("INSERT INTO nanobot_responses VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", *row_values(r))


async def _get(conn: asyncpg.Connection, response_id: str, since: float) -> StoredResponse | None:
    row = await conn.fetchrow(
        "SELECT id, session, prev, created, body, items, messages FROM nanobot_responses"
        " WHERE id = $1 AND created >= $2",
        response_id,
        since,
    )
    if row is None:
        return None
    return StoredResponse(
        row[0], row[1], row[2], row[3], orjson.loads(row[4]), orjson.loads(row[5]), orjson.loads(row[6])
    )


async def _chain(conn: asyncpg.Connection, response_id: str, limit: int, since: float) -> Chain | None:
    head = await conn.fetchrow(
        "SELECT session FROM nanobot_responses WHERE id = $1 AND created >= $2", response_id, since
    )
    if head is None:
        return None
    rows = await conn.fetch(_CHAIN, response_id, max(limit, 1), since)
    return Chain(head[0], joined([r[0] for r in rows]))


async def _delete(conn: asyncpg.Connection, response_id: str) -> bool:
    status = await conn.execute("DELETE FROM nanobot_responses WHERE id = $1", response_id)
    return bool(status != "DELETE 0")


async def _expire(conn: asyncpg.Connection, before: float) -> int:
    status = await conn.execute("DELETE FROM nanobot_responses WHERE created < $1", before)
    return int(status.rsplit(" ", 1)[-1])
