"""Per-session ordering across nodes: PostgreSQL advisory locks.

On one node, turns on a key still queue in arrival order in process
(:class:`~nanobot.sessions.locks.SessionLocks`); only the head of that queue
asks the database. Across nodes, a turn holds a session-level
``pg_advisory_lock`` on a 64-bit hash of its key for as long as it runs.

The locks of every turn of this process live on ONE dedicated connection
(the *lock connection*), not on a pooled connection per turn: a pool of 10
would otherwise cap the process at 10 running turns, and 500 open streams
would wait for each other. A backend counts advisory locks per key, so two
keys sharing a hash only ever share a slot, and the in-process queue keeps
two turns of one key apart. Requests for the lock connection are batched:
every lock and unlock asked for while one statement runs goes out in the
next one, so 1,000 turns cost a few round trips, not 2,000.

A waiter never holds a connection: ``pg_try_advisory_lock`` answers at
once, and a turn whose session is busy on another node polls (1 ms,
doubling to 20 ms) until the request's deadline cancels it.

When this process dies, or its lock connection is lost, PostgreSQL ends
the backend and every lock it held goes with it: other nodes take those
sessions at once. A turn that was running then has no lock any more
(:meth:`PgSessionOrdering.confirm` says so and takes it again before the
commit), and the session store's commit is a compare-and-set on the
session's length, so a half turn is never committed over another's.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

import asyncpg

from nanobot.errors import DatabaseUnavailable
from nanobot.sessions.locks import SessionLocks
from nanobot.storage.pg import PgDatabase, connect, is_unavailable

log = logging.getLogger("nanobot.database")

# The statement that carries one batch: locks (true) and unlocks (false) in
# queue order (the volatile calls run in scan order, before the sort).
_BATCH = """
SELECT CASE WHEN op THEN pg_try_advisory_lock(k) ELSE pg_advisory_unlock(k) END
FROM unnest($1::int8[], $2::bool[]) WITH ORDINALITY AS x(k, op, o) ORDER BY o
"""

# A dead machine (no FIN, no RST) is noticed by PostgreSQL through TCP
# keepalives: about 5 + 3 * 2 s instead of the two-hour system default.
_KEEPALIVE = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3"}


def lock_id(key: str) -> int:
    """The advisory lock key of a session: a signed 64-bit hash."""
    digest = hashlib.blake2b(key.encode(), digest_size=8, person=b"nanobot-session").digest()
    return int.from_bytes(digest, "big", signed=True)


class LockConnection:
    """The one connection holding this process's session locks, with batching."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        self._conn: asyncpg.Connection | None = None
        self.generation = 0  # moves on whenever the connection (and its locks) is lost
        self._queue: list[tuple[bool, int, asyncio.Future[int | None] | None]] = []
        db.on_up(self.ensure)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listeners: dict[str, Any] = {}

    def listen(self, channel: str, callback: Any) -> None:
        """LISTEN on ``channel`` on every lock connection from now on."""
        self._listeners[channel] = callback

    async def try_lock(self, key_id: int) -> int | None:
        """The generation of the connection that now holds the lock, or None if busy."""
        self._ensure_task()
        fut: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._queue.append((True, key_id, fut))
        self._wake.set()
        return await fut

    def unlock(self, key_id: int, generation: int) -> None:
        """Release a lock taken on connection ``generation`` (a no-op if it is gone)."""
        if generation != self.generation:
            return
        self._ensure_task()
        self._queue.append((False, key_id, None))
        self._wake.set()

    def ensure(self) -> None:
        """Open the connection if it is not (so LISTEN works without turns)."""
        self._ensure_task()
        if self._conn is None:
            self._wake.set()

    def _ensure_task(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="nanobot-session-locks")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._drop()
        for _, _, fut in self._queue:
            if fut is not None and not fut.done():
                fut.set_exception(DatabaseUnavailable("shutting down"))
        self._queue.clear()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._conn is None:
                await self._open()
            if not self._queue:
                continue
            batch, self._queue = self._queue, []
            await self._send(batch)

    async def _open(self) -> None:
        if self._db.problem is not None:
            return  # fail fast below; the probe tells us when it is back
        try:
            conn = await connect(self._db.url, **_KEEPALIVE)
            for channel, callback in self._listeners.items():
                await conn.add_listener(channel, callback)
        except Exception as exc:
            if not is_unavailable(exc):
                log.exception("lock connection failed")
            self._db.mark_down(exc)
            return
        conn.add_termination_listener(self._lost)
        self._conn = conn

    def _lost(self, conn: asyncpg.Connection) -> None:
        if conn is self._conn:
            self._conn = None
            self.generation += 1
            log.warning("lock connection lost: sessions held by this node are released")
            self._wake.set()  # reconnect, for LISTEN

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self.generation += 1
            conn.terminate()  # the backend ends, and its locks with it

    async def _send(self, batch: list[tuple[bool, int, asyncio.Future[int | None] | None]]) -> None:
        conn = self._conn
        if conn is None:
            # Locks are refused; unlocks of a lost connection are moot.
            error = DatabaseUnavailable(self._db.problem or "connection lost")
            for _, _, fut in batch:
                if fut is not None and not fut.done():
                    fut.set_exception(error)
            return
        generation = self.generation
        try:
            results = await conn.fetch(_BATCH, [k for _, k, _ in batch], [op for op, _, _ in batch])
        except Exception as exc:
            if not is_unavailable(exc):
                log.exception("session lock statement failed")
            error = self._db.mark_down(exc) if is_unavailable(exc) else DatabaseUnavailable("lock failed")
            await self._drop()
            for _, _, fut in batch:
                if fut is not None and not fut.done():
                    fut.set_exception(error)
            return
        for (op, key_id, fut), row in zip(batch, results):
            if fut is None:
                continue
            if fut.cancelled():
                if row[0]:  # the waiter left while it was being granted
                    self.unlock(key_id, generation)
                continue
            fut.set_result(generation if row[0] else None)


class PgSessionOrdering:
    """:class:`~nanobot.sessions.locks.SessionOrdering` across nodes."""

    POLL_FIRST = 0.001
    POLL_MAX = 0.02

    def __init__(self, db: PgDatabase) -> None:
        self._local = SessionLocks()
        self.connection = LockConnection(db)
        self._held: dict[str, int] = {}  # key -> generation of the connection holding it

    def __len__(self) -> int:
        return len(self._local)

    def hold(self, key: str) -> "_PgHold":
        return _PgHold(self, key)

    async def confirm(self, key: str) -> None:
        """Make sure this process still holds ``key``'s lock (before a commit).

        Free when the lock connection has not moved on since the lock was
        taken; otherwise the lock went with the old connection and is taken
        again, or :class:`DatabaseUnavailable` if another node has it now.
        """
        generation = self._held.get(key)
        if generation is None or generation == self.connection.generation:
            return
        generation = await self.connection.try_lock(lock_id(key))
        if generation is None:
            raise DatabaseUnavailable("session lock lost")
        self._held[key] = generation

    async def acquire(self, key: str) -> None:
        key_id = lock_id(key)
        delay = self.POLL_FIRST
        while True:
            generation = await self.connection.try_lock(key_id)
            if generation is not None:
                self._held[key] = generation
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.POLL_MAX)

    def release(self, key: str) -> None:
        generation = self._held.pop(key, None)
        if generation is not None:
            self.connection.unlock(lock_id(key), generation)

    async def close(self) -> None:
        await self.connection.close()


class _PgHold:
    __slots__ = ("_ordering", "_key", "_local")

    def __init__(self, ordering: PgSessionOrdering, key: str) -> None:
        self._ordering = ordering
        self._key = key
        self._local = ordering._local.hold(key)

    async def __aenter__(self) -> None:
        await self._local.__aenter__()
        try:
            await self._ordering.acquire(self._key)
        except BaseException:
            await self._local.__aexit__(None, None, None)
            raise

    async def __aexit__(self, *exc: object) -> None:
        # Not awaited: the next local turn on this key may ask for the lock
        # before the unlock has run, and the backend's per-key count keeps that right.
        self._ordering.release(self._key)
        await self._local.__aexit__(*exc)
