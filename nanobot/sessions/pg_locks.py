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
next one, and an unlock waits up to 5 ms for a lock to travel with, so
1,000 turns cost a few round trips, not 2,000.

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
from dataclasses import dataclass
from typing import Any

import asyncpg

from nanobot.errors import DatabaseUnavailable
from nanobot.sessions.locks import SessionLocks
from nanobot.storage.pg import PgDatabase, connect, is_unavailable

log = logging.getLogger("nanobot.database")

# The statement that carries one batch: locks (true) and unlocks (false) in
# queue order (the volatile calls run in scan order, before the sort). A
# granted lock comes back with its session's length and whether it has a
# paused turn, both read under it (``2 * length + paused``, migration 5), so
# a turn whose cached history is still current needs no query to know them.
_BATCH = """
SELECT CASE WHEN op THEN nanobot_grant_session(k, s) ELSE pg_advisory_unlock(k)::int - 2 END
FROM unnest($1::int8[], $2::bool[], $3::text[]) WITH ORDINALITY AS x(k, op, s, o) ORDER BY o
"""

# A dead machine (no FIN, no RST) is noticed by PostgreSQL through TCP
# keepalives: about 5 + 3 * 2 s instead of the two-hour system default.
_KEEPALIVE = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2", "tcp_keepalives_count": "3"}


# How long an unlock may wait for a lock to share a statement with: what
# another node waiting for that session may lose at most.
UNLOCK_DELAY = 0.005


def lock_id(key: str) -> int:
    """The advisory lock key of a session: a signed 64-bit hash."""
    digest = hashlib.blake2b(key.encode(), digest_size=8, person=b"nanobot-session").digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True, slots=True)
class Grant:
    generation: int  # of the lock connection holding it
    length: int  # the session's length when the lock was granted
    paused: bool  # whether it had a paused turn then

    @classmethod
    def of(cls, generation: int, value: int) -> Grant:
        """From ``nanobot_grant_session``'s answer (``2 * length + paused``)."""
        return cls(generation, value >> 1, bool(value & 1))


# A queued request: (lock?, lock key, session key, connection generation, waiter).
_Op = tuple[bool, int, str, int, "asyncio.Future[Grant | None] | None"]


class LockConnection:
    """The one connection holding this process's session locks, with batching."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        self._conn: asyncpg.Connection | None = None
        self.generation = 0  # moves on whenever the connection (and its locks) is lost
        self._queue: list[_Op] = []
        db.on_up(self.ensure)
        self._wake = asyncio.Event()
        self._flush: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._listeners: dict[str, Any] = {}

    def listen(self, channel: str, callback: Any) -> None:
        """LISTEN on ``channel`` on every lock connection from now on."""
        self._listeners[channel] = callback

    async def try_lock(self, key: str) -> Grant | None:
        """The lock of ``key`` if it was free, or None if another backend has it."""
        self._ensure_task()
        fut: asyncio.Future[Grant | None] = asyncio.get_running_loop().create_future()
        self._queue.append((True, lock_id(key), key, self.generation, fut))
        self._wake.set()
        return await fut

    def unlock(self, key_id: int, generation: int) -> None:
        """Release a lock taken on connection ``generation`` (a no-op if it is gone)."""
        if generation != self.generation:
            return
        self._ensure_task()
        self._queue.append((False, key_id, "", generation, None))
        # Sent with the next lock, or after UNLOCK_DELAY at the latest: under
        # load that saves a statement per turn, here and in the database.
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(UNLOCK_DELAY, self._wake.set)

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
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        await self._drop()
        for *_, fut in self._queue:
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
            if self._flush is not None:
                self._flush.cancel()
                self._flush = None
            # An unlock queued before the connection was lost is moot, and
            # must not release a lock the new connection took since.
            batch = [op for op in self._queue if op[0] or op[3] == self.generation]
            self._queue = []
            if batch:
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

    async def _send(self, batch: list[_Op]) -> None:
        conn = self._conn
        if conn is None:
            # Locks are refused; unlocks of a lost connection are moot.
            error = DatabaseUnavailable(self._db.problem or "connection lost")
            for *_, fut in batch:
                if fut is not None and not fut.done():
                    fut.set_exception(error)
            return
        generation = self.generation
        try:
            results = await conn.fetch(_BATCH, [b[1] for b in batch], [b[0] for b in batch], [b[2] for b in batch])
        except Exception as exc:
            if not is_unavailable(exc):
                log.exception("session lock statement failed")
            error = self._db.mark_down(exc) if is_unavailable(exc) else DatabaseUnavailable("lock failed")
            await self._drop()
            for *_, fut in batch:
                if fut is not None and not fut.done():
                    fut.set_exception(error)
            return
        for (_, key_id, _, _, fut), row in zip(batch, results, strict=False):
            if fut is None:
                continue
            granted = row[0] >= 0
            if fut.cancelled():
                if granted:  # the waiter left while it was being granted
                    self.unlock(key_id, generation)
                continue
            fut.set_result(Grant.of(generation, row[0]) if granted else None)


class PgSessionOrdering:
    """:class:`~nanobot.sessions.locks.SessionOrdering` across nodes."""

    POLL_FIRST = 0.001
    POLL_MAX = 0.02

    def __init__(self, db: PgDatabase) -> None:
        self._local = SessionLocks()
        self.connection = LockConnection(db)
        self._held: dict[str, Grant] = {}

    def __len__(self) -> int:
        return len(self._local)

    def hold(self, key: str) -> _PgHold:
        return _PgHold(self, key)

    def length(self, key: str) -> int | None:
        """``key``'s length when this process's turn took its lock (None: not held)."""
        grant = self._held.get(key)
        return None if grant is None else grant.length

    def paused(self, key: str) -> bool | None:
        """Whether ``key`` had a paused turn when this process's turn took its lock (None: not held).

        Only a holder of the lock pauses or resumes a session, so it stays
        true for the turn, until the turn itself pauses or resumes it.
        """
        grant = self._held.get(key)
        return None if grant is None else grant.paused

    async def confirm(self, key: str) -> None:
        """Make sure this process still holds ``key``'s lock (before a commit).

        Free when the lock connection has not moved on since the lock was
        taken; otherwise the lock went with the old connection and is taken
        again, or :class:`DatabaseUnavailable` if another node has it now.
        """
        grant = self._held.get(key)
        if grant is None or grant.generation == self.connection.generation:
            return
        again = await self.connection.try_lock(key)
        if again is None:
            raise DatabaseUnavailable("session lock lost")
        self._held[key] = again

    async def acquire(self, key: str) -> None:
        delay = self.POLL_FIRST
        while True:
            grant = await self.connection.try_lock(key)
            if grant is not None:
                self._held[key] = grant
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.POLL_MAX)

    def release(self, key: str) -> None:
        grant = self._held.pop(key, None)
        if grant is not None:
            self.connection.unlock(lock_id(key), grant.generation)

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
