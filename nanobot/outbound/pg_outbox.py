"""The outbound queue in PostgreSQL, delivered by whichever node is alive.

Due rows are claimed in one statement (``FOR UPDATE SKIP LOCKED``, so nodes
never wait for each other's rows): each gets a lease of ``LEASE`` seconds,
written as its ``next_attempt``, and this process's token. A send that takes
longer renews the lease every few seconds; a node that dies stops renewing,
and its rows are due again when their lease ends. Times come from the
database's clock, so nodes whose clocks disagree still agree on leases.

An enqueue notifies the other nodes (``pg_notify``), which look for due rows
at once instead of at their next poll.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from nanobot.config import ChannelsConfig
from nanobot.outbound.base import DELIVERED, PENDING, Due, OutboxRow
from nanobot.outbound.channels import KNOWN_CHANNELS
from nanobot.outbound.delivery import DeliveryWorker
from nanobot.storage.pg import PgDatabase

CHANNEL = "nanobot_outbox"
_NOW = "extract(epoch from clock_timestamp())::float8"
_ROW_COLUMNS = "id, channel, chat_id, content, state, attempts, last_error, created, updated"

_INSERT = f"""
WITH row AS (
    INSERT INTO nanobot_outbox (channel, chat_id, content, state, next_attempt, last_error, created, updated)
    VALUES ($1, $2, $3, $4, {_NOW}, $5, {_NOW}, {_NOW}) RETURNING id
)
SELECT id, CASE WHEN $4 = '{PENDING}' THEN pg_notify('{CHANNEL}', '') END FROM row
"""

_CLAIM = f"""
UPDATE nanobot_outbox SET next_attempt = {_NOW} + $3, lease = $4, updated = {_NOW}
WHERE id IN (
    SELECT id FROM nanobot_outbox
    WHERE state = '{PENDING}' AND next_attempt <= {_NOW} AND channel = ANY($1::text[])
    ORDER BY next_attempt, id LIMIT $2
    FOR UPDATE SKIP LOCKED
)
RETURNING id, channel, chat_id, content, attempts, progress, next_attempt
"""

_COUNTS = """
SELECT CASE WHEN channel = ANY($1::text[]) THEN channel ELSE 'other' END AS c, state, count(*)
FROM nanobot_outbox GROUP BY c, state
"""

_NEXT_DUE = f"""
SELECT min(next_attempt) - {_NOW} FROM nanobot_outbox
WHERE state = '{PENDING}' AND channel = ANY($1::text[])
"""

_RENEW = f"""
UPDATE nanobot_outbox SET next_attempt = {_NOW} + $3, updated = {_NOW}
WHERE id = $1 AND lease = $2 AND state = '{PENDING}'
"""

_PROGRESS = f"UPDATE nanobot_outbox SET progress = $2, updated = {_NOW} WHERE id = $1"

# Results are written only over a pending row: one another node already
# settled (after this node's lease ran out) keeps that result.
_DELIVERED = f"""
UPDATE nanobot_outbox SET state = '{DELIVERED}', attempts = attempts + 1, last_error = NULL,
    lease = NULL, updated = {_NOW}
WHERE id = $1 AND state = '{PENDING}'
"""

_FAILURE = f"""
UPDATE nanobot_outbox SET state = $2, attempts = attempts + 1, last_error = $3,
    next_attempt = {_NOW} + $4, lease = NULL, updated = {_NOW}
WHERE id = $1 AND state = '{PENDING}'
"""

_RELEASE = f"""
UPDATE nanobot_outbox SET next_attempt = {_NOW}, lease = NULL, updated = {_NOW}
WHERE id = ANY($1::int8[]) AND lease = $2 AND state = '{PENDING}'
"""


class PgOutbox(DeliveryWorker):
    """:class:`~nanobot.outbound.base.Outbox` in ``nanobot_outbox``."""

    LEASE = 6.0  # seconds; a dead node's rows go out this long after its last renewal
    RENEW_EVERY = 2.0

    def __init__(self, db: PgDatabase, channels: ChannelsConfig, **options: Any) -> None:
        super().__init__(channels, **options)
        self._db = db
        self._token = uuid.uuid4().hex  # this process's leases

    async def rows(self, states: tuple[str, ...] | None = None, limit: int = 100) -> list[OutboxRow]:
        if limit <= 0 or (states is not None and not states):
            return []
        return await self._db.run(_select, states, limit)

    async def counts(self) -> dict[tuple[str, str], int]:
        """Rows by (channel, state); channels a model made up count as one ``other``."""
        rows = await self._db.run(_fetch, _COUNTS, list(KNOWN_CHANNELS))
        return {(channel, state): n for channel, state, n in rows}

    def notified(self, *_: Any) -> None:
        """LISTEN callback: another node queued a row."""
        self.wake()

    # --- storage hooks ------------------------------------------------------

    async def _insert(self, channel: str, chat_id: str, content: str, state: str, error: str | None) -> int:
        rows = await self._db.run(_fetch, _INSERT, channel, chat_id, content, state, error)
        return int(rows[0][0])

    async def _due(self, channels: tuple[str, ...]) -> list[Due]:
        rows = await self._db.run(_fetch, _CLAIM, list(channels), self.BATCH_SIZE, self.LEASE, self._token)
        for row in rows:
            self._leases[row[0]] = self._token
        return [Due(*row) for row in rows]

    async def _next_due_in(self, channels: tuple[str, ...]) -> float | None:
        rows = await self._db.run(_fetch, _NEXT_DUE, list(channels))
        due: float | None = rows[0][0]
        return due

    async def _claim(self, row: Due) -> bool:
        return True  # claimed with the batch

    async def _renew(self, row_id: int) -> None:
        await self._db.run(_execute, _RENEW, row_id, self._token, self.LEASE)

    async def _save_progress(self, row_id: int, progress: int) -> None:
        await self._db.run(_execute, _PROGRESS, row_id, progress)

    async def _mark_delivered(self, row_id: int) -> None:
        await self._db.run(_execute, _DELIVERED, row_id)

    async def _mark_failure(self, row_id: int, state: str, error: str, retry_in: float) -> None:
        await self._db.run(_execute, _FAILURE, row_id, state, error, retry_in)

    async def _release(self, leases: list[tuple[int, Any]]) -> None:
        await self._db.run(_execute, _RELEASE, [row_id for row_id, _ in leases], self._token)


async def _fetch(conn: asyncpg.Connection, query: str, *args: Any) -> list[Any]:
    rows: list[Any] = await conn.fetch(query, *args)
    return rows


async def _execute(conn: asyncpg.Connection, query: str, *args: Any) -> str:
    status: str = await conn.execute(query, *args)
    return status


async def _select(conn: asyncpg.Connection, states: tuple[str, ...] | None, limit: int) -> list[OutboxRow]:
    if states is None:
        rows = await conn.fetch(f"SELECT {_ROW_COLUMNS} FROM nanobot_outbox ORDER BY id DESC LIMIT $1", limit)
    else:
        rows = await conn.fetch(
            f"SELECT {_ROW_COLUMNS} FROM nanobot_outbox WHERE state = ANY($2::text[]) ORDER BY id DESC LIMIT $1",
            limit,
            list(states),
        )
    return [OutboxRow(*r) for r in rows]
