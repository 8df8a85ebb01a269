"""The outbound queue's delivery worker, whatever database holds the rows.

One background task delivers due ``pending`` rows and retries failures with
capped, jittered exponential backoff. Delivery is *at least once*: a crash
(or a lost response) between a platform's "ok" and the write that records it
sends that message, or that Telegram piece, again on the next attempt.

A row is leased before it is sent, so two processes sharing the rows never
send one at the same time, and a crashed process's leases simply expire.
Subclasses say how rows are stored, found, leased and updated.
"""

from __future__ import annotations

import asyncio
import logging
import random
from functools import partial
from typing import Any

from nanobot.config import ChannelsConfig
from nanobot.errors import DatabaseUnavailable
from nanobot.outbound.base import FAILED, PENDING, UNDELIVERABLE, Due, Enqueued
from nanobot.outbound.channels import ChannelSenders, DeliveryError

log = logging.getLogger("nanobot.outbound")


class DeliveryWorker:
    """The :class:`~nanobot.outbound.base.Outbox` behaviour over storage hooks."""

    BATCH_SIZE = 50  # rows taken per query
    CONCURRENCY = 8  # deliveries in flight at once
    RENEW_EVERY: float | None = None  # seconds between lease renewals during a send

    def __init__(
        self,
        channels: ChannelsConfig,
        *,
        http_timeout: float = 10.0,
        max_attempts: int = 12,
        base_backoff: float = 1.0,
        max_backoff: float = 300.0,
        poll_interval: float = 30.0,
    ) -> None:
        self._senders = ChannelSenders(channels, http_timeout=http_timeout, max_clients=self.CONCURRENCY)
        self._max_attempts = max(1, max_attempts)
        self._base_backoff = base_backoff
        self._max_backoff = max_backoff
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Rows this process leased and is sending: id -> its lease.
        self._leases: dict[int, Any] = {}

    # --- storage hooks ------------------------------------------------------

    async def _insert(self, channel: str, chat_id: str, content: str, state: str, error: str | None) -> int:
        raise NotImplementedError

    async def _due(self, channels: tuple[str, ...]) -> list[Due]:
        """Up to ``BATCH_SIZE`` due rows (an implementation may lease them here)."""
        raise NotImplementedError

    async def _next_due_in(self, channels: tuple[str, ...]) -> float | None:
        """Seconds until the next pending row is due, None when there is none."""
        raise NotImplementedError

    async def _claim(self, row: Due) -> bool:
        """Lease ``row`` (noting it in ``_leases`` first); False if another process has it."""
        raise NotImplementedError

    async def _renew(self, row_id: int) -> None:
        """Push this process's lease on ``row_id`` further out."""

    async def _save_progress(self, row_id: int, progress: int) -> None:
        raise NotImplementedError

    async def _mark_delivered(self, row_id: int) -> None:
        raise NotImplementedError

    async def _mark_failure(self, row_id: int, state: str, error: str, retry_in: float) -> None:
        raise NotImplementedError

    async def _release(self, leases: list[tuple[int, Any]]) -> None:
        """Make rows whose send was cancelled due at once."""
        raise NotImplementedError

    # --- Outbox -------------------------------------------------------------

    def is_enabled(self, channel: str) -> bool:
        return self._senders.is_enabled(channel)

    async def enqueue(self, channel: str, chat_id: str, content: str) -> Enqueued:
        reason = self._senders.disabled_reason(channel)
        state = PENDING if reason is None else UNDELIVERABLE
        row_id = await self._insert(channel, chat_id, content, state, reason)
        if state == PENDING:
            self._wake.set()
        return Enqueued(id=row_id, state=state)

    def wake(self) -> None:
        """Look for due rows now (another process queued one)."""
        self._wake.set()

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
        leases, self._leases = list(self._leases.items()), {}
        if leases:
            try:
                await self._release(leases)
            except (RuntimeError, DatabaseUnavailable):
                pass  # database closed or gone: the leases expire on their own

    # --- the worker ---------------------------------------------------------

    async def _run(self) -> None:
        """Deliver what is due, then sleep until something may be due."""
        while True:
            try:
                delay = await self._step()
            except DatabaseUnavailable as exc:
                log.warning("outbox worker: %s", exc.message)
                delay = min(self._poll_interval, 2.0)
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
        due = await self._due(channels)
        if due:
            await self._deliver_batch(due)
            return 0.0
        wait = await self._next_due_in(channels)
        if wait is None:
            return self._poll_interval
        return min(self._poll_interval, max(0.0, wait))

    async def _sleep(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=delay)
        except TimeoutError:
            pass

    async def _deliver_batch(self, due: list[Due]) -> None:
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

    async def _deliver_one(self, row: Due) -> None:
        if not await self._claim(row):
            self._leases.pop(row.id, None)
            return  # another process took it first
        renewing = asyncio.create_task(self._keep_lease(row.id)) if self.RENEW_EVERY else None
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
            await self._mark_delivered(row.id)
        finally:
            if renewing is not None:
                renewing.cancel()
        # Not in a ``finally``: a cancelled send keeps its lease for close().
        del self._leases[row.id]

    async def _keep_lease(self, row_id: int) -> None:
        assert self.RENEW_EVERY is not None  # started only when set
        while True:
            await asyncio.sleep(self.RENEW_EVERY)
            try:
                await self._renew(row_id)
            except Exception as exc:  # the lease may run out: at worst the row is sent twice
                log.warning("outbox row %d: lease not renewed (%s)", row_id, type(exc).__name__)

    async def _record_failure(self, row: Due, error: str) -> None:
        attempts = row.attempts + 1
        if attempts >= self._max_attempts:
            log.warning("outbox row %d: giving up after %d attempts: %s", row.id, attempts, error)
            await self._mark_failure(row.id, FAILED, error, 0.0)
            return
        log.info("outbox row %d: attempt %d failed, retrying: %s", row.id, attempts, error)
        await self._mark_failure(row.id, PENDING, error, self._backoff(attempts))

    def _backoff(self, attempts: int) -> float:
        """Seconds before retry number ``attempts``; jitter spreads a burst."""
        delay = min(self._max_backoff, self._base_backoff * 2.0 ** min(attempts - 1, 60))
        return delay * random.uniform(0.8, 1.2)
