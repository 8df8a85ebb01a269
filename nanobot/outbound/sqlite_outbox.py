"""The outbound queue in the shared SQLite file.

``enqueue`` is one INSERT; :class:`~nanobot.outbound.delivery.DeliveryWorker`
delivers. Rows live in the file, so whatever a previous process left
``pending`` is sent after a restart.

A row is leased before it is sent (its ``next_attempt`` is pushed past the
longest the attempt can take), so two processes sharing the file, such as the
server and ``nanobot agent``, never send one row at the same time.
"""

from __future__ import annotations

import time
from typing import Any

from nanobot.config import ChannelsConfig
from nanobot.outbound import sqlite_outbox_table as sql
from nanobot.outbound.base import Due, OutboxRow
from nanobot.outbound.channels import KNOWN_CHANNELS
from nanobot.outbound.delivery import DeliveryWorker
from nanobot.storage.db import Database


class SqliteOutbox(DeliveryWorker):
    """:class:`~nanobot.outbound.base.Outbox` in the ``outbox`` table."""

    def __init__(self, db: Database, channels: ChannelsConfig, **options: Any) -> None:
        super().__init__(channels, **options)
        self._db = db
        db.call(sql.create_schema)

    async def rows(self, states: tuple[str, ...] | None = None, limit: int = 100) -> list[OutboxRow]:
        if limit <= 0 or (states is not None and not states):
            return []
        return await self._db.run(sql.select, states, limit)

    async def counts(self) -> dict[tuple[str, str], int]:
        return await self._db.run(sql.counts, KNOWN_CHANNELS)

    # --- storage hooks ------------------------------------------------------

    async def _insert(self, channel: str, chat_id: str, content: str, state: str, error: str | None) -> int:
        return await self._db.run(sql.insert, channel, chat_id, content, state, error, time.time())

    async def _due(self, channels: tuple[str, ...]) -> list[Due]:
        return await self._db.run(sql.due_rows, channels, time.time(), self.BATCH_SIZE)

    async def _next_due_in(self, channels: tuple[str, ...]) -> float | None:
        earliest = await self._db.run(sql.earliest, channels)
        return None if earliest is None else earliest - time.time()

    async def _claim(self, row: Due) -> bool:
        now = time.time()
        lease_end = now + self._senders.max_duration(row.channel, row.content)
        # Noted before the claim is awaited: a close() that cancels this
        # coroutine while the claim runs must still hand the lease back.
        self._leases[row.id] = lease_end
        return await self._db.run(sql.claim, row.id, row.next_attempt, lease_end, now)

    async def _save_progress(self, row_id: int, progress: int) -> None:
        await self._db.run(sql.set_progress, row_id, progress, time.time())

    async def _mark_delivered(self, row_id: int) -> None:
        await self._db.run(sql.mark_delivered, row_id, time.time())

    async def _mark_failure(self, row_id: int, state: str, error: str, retry_in: float) -> None:
        now = time.time()
        await self._db.run(sql.mark_failure, row_id, state, error, now + retry_in, now)

    async def _release(self, leases: list[tuple[int, Any]]) -> None:
        await self._db.run(sql.release, leases, time.time())
