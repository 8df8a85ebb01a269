"""The outbound queue in the shared SQLite file, and its delivery worker.

``enqueue`` is one INSERT; one background task delivers due ``pending`` rows
and retries failures with capped, jittered exponential backoff. Rows live in
the file, so whatever a previous process left ``pending`` is sent after a
restart.

Delivery is *at least once*: a crash (or a lost response) between a
platform's "ok" and the UPDATE that records it sends that message, or that
Telegram piece, again on the next attempt.

A row is leased before it is sent (its ``next_attempt`` is pushed past the
longest the attempt can take), so two processes sharing the file, such as the
server and ``nanobot agent``, never send one row at the same time. A crashed
process's leases simply expire.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from functools import partial

from nanobot.config import ChannelsConfig
from nanobot.outbound import outbox_sql as sql
from nanobot.outbound.base import FAILED, PENDING, UNDELIVERABLE, Enqueued, OutboxRow
from nanobot.outbound.channels import KNOWN_CHANNELS, ChannelSenders, DeliveryError
from nanobot.storage.db import Database

log = logging.getLogger("nanobot.outbound")


class SqliteOutbox:
    """:class:`~nanobot.outbound.base.Outbox` in the ``outbox`` table."""

    BATCH_SIZE = 50  # rows taken per query
    CONCURRENCY = 8  # deliveries in flight at once

    def __init__(
        self,
        db: Database,
        channels: ChannelsConfig,
        *,
        http_timeout: float = 10.0,
        max_attempts: int = 12,
        base_backoff: float = 1.0,
        max_backoff: float = 300.0,
        poll_interval: float = 30.0,
    ) -> None:
        self._db = db
        self._senders = ChannelSenders(channels, http_timeout=http_timeout, max_clients=self.CONCURRENCY)
        self._max_attempts = max(1, max_attempts)
        self._base_backoff = base_backoff
        self._max_backoff = max_backoff
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Rows this process leased and is sending: id -> lease end.
        self._leases: dict[int, float] = {}
        db.call(sql.create_schema)

    # --- Outbox -------------------------------------------------------------

    def is_enabled(self, channel: str) -> bool:
        return self._senders.is_enabled(channel)

    async def enqueue(self, channel: str, chat_id: str, content: str) -> Enqueued:
        reason = self._senders.disabled_reason(channel)
        state = PENDING if reason is None else UNDELIVERABLE
        row_id = await self._db.run(sql.insert, channel, chat_id, content, state, reason, time.time())
        if state == PENDING:
            self._wake.set()
        return Enqueued(id=row_id, state=state)

    async def rows(self, states: tuple[str, ...] | None = None, limit: int = 100) -> list[OutboxRow]:
        if limit <= 0 or (states is not None and not states):
            return []
        return await self._db.run(sql.select, states, limit)

    async def counts(self) -> dict[tuple[str, str], int]:
        return await self._db.run(sql.counts, KNOWN_CHANNELS)

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="nanobot-outbox")

    async def close(self) -> None:
        """Stop the worker; rows being sent stay ``pending`` for the next run."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._senders.close()
        await self._release_leases()

    # --- the worker ---------------------------------------------------------

    async def _run(self) -> None:
        """Deliver what is due, then sleep until something may be due."""
        while True:
            try:
                delay = await self._step()
            except Exception:
                # A database hiccup must not end delivery for the process.
                log.exception("outbox worker: step failed")
                delay = min(self._poll_interval, 5.0)
            if delay > 0:
                await self._sleep(delay)

    async def _step(self) -> float:
        """One round: returns how long to wait before the next one."""
        # Cleared before the query: an enqueue after it sets the event again,
        # so the following sleep ends at once and nothing waits for the poll.
        self._wake.clear()
        channels = self._senders.enabled_channels()
        now = time.time()
        due = await self._db.run(sql.due_rows, channels, now, self.BATCH_SIZE)
        if due:
            await self._deliver_batch(due)
            return 0.0
        earliest = await self._db.run(sql.earliest, channels)
        if earliest is None:
            return self._poll_interval
        # Other processes may enqueue too; they cannot wake us, the poll does.
        return min(self._poll_interval, max(0.0, earliest - time.time()))

    async def _sleep(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=delay)
        except asyncio.TimeoutError:
            pass

    async def _deliver_batch(self, due: list[sql.Due]) -> None:
        """Deliver ``due`` with at most ``CONCURRENCY`` rows in flight."""
        rows = iter(due)  # shared by the lanes; each row is taken once

        async def lane() -> None:
            for row in rows:
                try:
                    await self._deliver_one(row)
                except Exception:
                    # The row stays leased and is retried once the lease ends.
                    log.exception("outbox row %d: bookkeeping failed", row.id)

        lanes = [asyncio.create_task(lane()) for _ in range(min(self.CONCURRENCY, len(due)))]
        try:
            await asyncio.gather(*lanes)
        finally:
            # On cancellation (close), wait until every lane has really ended.
            for task in lanes:
                task.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)

    async def _deliver_one(self, row: sql.Due) -> None:
        now = time.time()
        lease_end = now + self._senders.max_duration(row.channel, row.content)
        # Noted before the claim is awaited: a close() that cancels this
        # coroutine while the claim runs must still hand the lease back.
        self._leases[row.id] = lease_end
        if not await self._db.run(sql.claim, row.id, row.next_attempt, lease_end, now):
            del self._leases[row.id]
            return  # another process took it first
        try:
            await self._senders.send(
                row.channel, row.chat_id, row.content, row.progress, partial(self._save_progress, row.id)
            )
        except DeliveryError as exc:
            await self._record_failure(row, str(exc))
        except Exception as exc:
            # Unexpected: keep the details in the log, not in the row (they
            # might hold a secret), and let backoff handle it like any failure.
            log.exception("outbox row %d: delivery raised", row.id)
            await self._record_failure(row, f"internal error: {type(exc).__name__}")
        else:
            await self._db.run(sql.mark_delivered, row.id, time.time())
        # Not in a ``finally``: a cancelled send keeps its lease for close().
        del self._leases[row.id]

    async def _save_progress(self, row_id: int, progress: int) -> None:
        await self._db.run(sql.set_progress, row_id, progress, time.time())

    async def _record_failure(self, row: sql.Due, error: str) -> None:
        attempts = row.attempts + 1
        now = time.time()
        if attempts >= self._max_attempts:
            log.warning("outbox row %d: giving up after %d attempts: %s", row.id, attempts, error)
            await self._db.run(sql.mark_failure, row.id, FAILED, error, now, now)
            return
        retry_at = now + self._backoff(attempts)
        log.info("outbox row %d: attempt %d failed, retrying: %s", row.id, attempts, error)
        await self._db.run(sql.mark_failure, row.id, PENDING, error, retry_at, now)

    def _backoff(self, attempts: int) -> float:
        """Seconds before retry number ``attempts``; jitter spreads a burst."""
        delay = min(self._max_backoff, self._base_backoff * 2.0 ** min(attempts - 1, 60))
        return delay * random.uniform(0.8, 1.2)

    async def _release_leases(self) -> None:
        """Make rows whose send was cancelled due at once for the next start."""
        leases, self._leases = list(self._leases.items()), {}
        if not leases:
            return
        try:
            await self._db.run(sql.release, leases, time.time())
        except RuntimeError:
            pass  # database already closed: the leases expire on their own
