"""PostgreSQL: the connection pool, the schema, and whether the database answers.

One :class:`PgDatabase` per worker process (asyncpg pools do not survive a
fork). Every statement the application runs goes through :meth:`PgDatabase.run`,
which turns a lost or refused connection into :class:`DatabaseUnavailable`
(503 ``database_unavailable``) and keeps a cached state for ``/health``. While
the database is down, requests fail at once instead of each waiting for a
connect; a probe (every second while down, every few seconds while up) notices
when it is back. Connections in the pool that a database restart broke are
replaced on their next use.

The schema is versioned in ``nanobot_schema_version`` and upgraded at start
under a transaction-level advisory lock, so nodes starting together apply
each step once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from nanobot.errors import DatabaseUnavailable

log = logging.getLogger("nanobot.database")

T = TypeVar("T")

CONNECT_TIMEOUT = 5.0
# A statement that runs longer than this is treated as a database outage,
# so a wedged server cannot hold requests until their own deadline.
COMMAND_TIMEOUT = 30.0
PROBE_UP = 5.0
PROBE_DOWN = 0.5
# Taken with pg_advisory_xact_lock around a migration ("nanobot" in ASCII).
MIGRATION_LOCK = 0x6E616E6F626F74

# Each entry upgrades the schema by one version; never edit a shipped one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE nanobot_sessions (
        key text PRIMARY KEY,
        length integer NOT NULL,          -- messages so far; moved by every turn
        updated double precision NOT NULL
    );
    CREATE TABLE nanobot_messages (
        session text NOT NULL,
        n integer NOT NULL,               -- 1, 2, ... within the session
        data bytea NOT NULL,              -- the message as UTF-8 JSON
        created double precision NOT NULL,
        PRIMARY KEY (session, n)
    );
    CREATE TABLE nanobot_outbox (
        id bigserial PRIMARY KEY,
        channel text NOT NULL,
        chat_id text NOT NULL,
        content text NOT NULL,
        state text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        progress integer NOT NULL DEFAULT 0,
        next_attempt double precision NOT NULL,  -- a claimed row: its lease's end
        lease text,                              -- who claimed it
        last_error text,
        created double precision NOT NULL,
        updated double precision NOT NULL,
        origin text UNIQUE                       -- set for rows copied from SQLite
    );
    CREATE INDEX nanobot_outbox_due ON nanobot_outbox (next_attempt) WHERE state = 'pending';
    -- Take a session's turn lock; its length if granted, -1 if another
    -- backend has it. Volatile: the length is read with a snapshot taken
    -- after the lock, so a turn committed just before is always seen.
    CREATE FUNCTION nanobot_lock_session(lock_key bigint, session_key text) RETURNS integer
    LANGUAGE plpgsql VOLATILE AS $$
    BEGIN
        IF NOT pg_try_advisory_lock(lock_key) THEN
            RETURN -1;
        END IF;
        RETURN coalesce((SELECT length FROM nanobot_sessions WHERE key = session_key), 0);
    END;
    $$;
    """,
    # 2: a session's turn waiting for the client's tool results (its JSON).
    """
    CREATE TABLE nanobot_paused (
        session text PRIMARY KEY,
        data bytea NOT NULL,
        created double precision NOT NULL
    );
    """,
    # 3: scheduled jobs (nanobot/cron/pg_store.py)
    """
    CREATE TABLE nanobot_cron_jobs (
        id text PRIMARY KEY,
        session text NOT NULL,
        channel text NOT NULL,
        chat_id text NOT NULL,
        message text NOT NULL,
        kind text NOT NULL,
        every_seconds double precision,
        cron_expr text,
        tz text,
        at double precision,
        next_run double precision NOT NULL,   -- moved on by the claim of each fire
        created double precision NOT NULL,
        last_run double precision,
        last_status text,
        runs integer NOT NULL DEFAULT 0
    );
    CREATE INDEX nanobot_cron_jobs_session ON nanobot_cron_jobs (session);
    CREATE INDEX nanobot_cron_jobs_due ON nanobot_cron_jobs (next_run);
    """,
    # 4: stored responses (/v1/responses), see nanobot/responses/pg_store.py
    """
    CREATE TABLE nanobot_responses (
        id text PRIMARY KEY,
        session text,                     -- the session_id its turn ran in (NULL: the default)
        prev text,                        -- previous_response_id
        created double precision NOT NULL,
        body bytea NOT NULL,              -- the response object, UTF-8 JSON
        items bytea NOT NULL,             -- its input items
        messages bytea NOT NULL,          -- the chat messages it adds to its chain's context
        count integer NOT NULL            -- how many
    );
    CREATE INDEX nanobot_responses_created ON nanobot_responses (created);
    """,
    # 5: the lock's grant also says whether the session has a paused turn, so a
    # turn needs no query of its own to know (nanobot/sessions/pg_locks.py).
    # Its length times 2, plus 1 with a paused turn; -1 if another backend has it.
    """
    CREATE FUNCTION nanobot_grant_session(lock_key bigint, session_key text) RETURNS bigint
    LANGUAGE plpgsql VOLATILE AS $$
    BEGIN
        IF NOT pg_try_advisory_lock(lock_key) THEN
            RETURN -1;
        END IF;
        RETURN 2 * coalesce((SELECT length FROM nanobot_sessions WHERE key = session_key), 0)::bigint
            + (EXISTS (SELECT 1 FROM nanobot_paused WHERE session = session_key))::int;
    END;
    $$;
    """,
]

# SQLSTATE classes that mean "no usable connection": 08 connection
# exception, 53 insufficient resources, 57P operator intervention (shutdown,
# crash), 28 invalid authorization (the reason shows in /health).
_UNAVAILABLE_STATES = ("08", "53", "57P", "28", "3D000")


def describe(exc: BaseException) -> str:
    """A short reason for ``exc`` that names no host, port or user."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "host name not resolved"
    state = getattr(exc, "sqlstate", None) or ""
    if state.startswith("28"):
        return "authentication failed"
    if state == "3D000":
        return "database does not exist"
    if state.startswith("57P"):
        return "server shutting down or restarting"
    if state.startswith("53"):
        return "server out of resources (too many connections?)"
    if isinstance(exc, OSError):
        return "network error"
    return "connection lost"


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` says the database cannot be used right now."""
    if isinstance(exc, (OSError, asyncio.TimeoutError, TimeoutError, asyncpg.exceptions.ConnectionDoesNotExistError)):
        return True
    if isinstance(exc, (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)):
        # "connection is closed", "pool is closing", a connection lost mid-statement.
        return True
    state = getattr(exc, "sqlstate", None) or ""
    return any(state.startswith(prefix) for prefix in _UNAVAILABLE_STATES)


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for ``config check``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def migrate(conn: asyncpg.Connection) -> int:
    """Bring the schema to the newest version; returns it. Safe to race."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS nanobot_schema_version (version integer PRIMARY KEY)")
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM nanobot_schema_version")
        if current > len(MIGRATIONS):
            log.warning("database schema version %d is newer than this server's %d", current, len(MIGRATIONS))
        for version in range(current + 1, len(MIGRATIONS) + 1):
            await conn.execute(MIGRATIONS[version - 1])
            await conn.execute("INSERT INTO nanobot_schema_version (version) VALUES ($1)", version)
            log.info("database schema upgraded to version %d", version)
        return max(int(current), len(MIGRATIONS))


async def connect(url: str, **settings: str) -> asyncpg.Connection:
    """One connection outside the pool (locks, LISTEN, the CLI)."""
    return await asyncpg.connect(
        url,
        timeout=CONNECT_TIMEOUT,
        command_timeout=COMMAND_TIMEOUT,
        server_settings={"application_name": "nanobot", **settings},
    )


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Pooled connections keep no session state (no SET, LISTEN or session
    lock: those live on the lock connection), so handing one back needs no
    reset statement, which would be one more round trip per query."""


async def probe(url: str) -> int:
    """Connect once; the schema version (0: no tables yet). Raises when it does not answer."""
    conn = await connect(url)
    try:
        exists = await conn.fetchval("SELECT to_regclass('nanobot_schema_version') IS NOT NULL")
        return await conn.fetchval("SELECT max(version) FROM nanobot_schema_version") if exists else 0
    finally:
        await conn.close()


class PgDatabase:
    """The pool of one worker process, and the database's state as last seen."""

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = url
        self.pool_size = max(1, pool_size)
        self._pool: asyncpg.Pool | None = None
        self._problem: str | None = "not connected yet"
        self._schema_ready = False
        self._probe: asyncio.Task[None] | None = None
        self._up_listeners: list[Callable[[], Any]] = []
        self._expiring: asyncio.Future[None] | None = None

    # --- state ----------------------------------------------------------------

    @property
    def problem(self) -> str | None:
        """None while the database answers, else why not (for ``/health``)."""
        return self._problem

    def on_up(self, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` whenever the database is found answering again."""
        self._up_listeners.append(callback)

    def mark_down(self, exc: BaseException) -> DatabaseUnavailable:
        reason = describe(exc)
        if self._problem is None:
            log.warning("database unavailable: %s (%s)", reason, type(exc).__name__)
            if self._pool is not None:
                # Every idle connection may be dead (a restart): replace them
                # on their next use rather than fail one request per each.
                self._expiring = asyncio.ensure_future(self._pool.expire_connections())
        self._problem = reason
        return DatabaseUnavailable(reason)

    def _mark_up(self) -> None:
        if self._problem is not None:
            if self._schema_ready and self._problem != "not connected yet":
                log.warning("database available again")
            self._problem = None
            for callback in self._up_listeners:
                callback()

    # --- life -----------------------------------------------------------------

    async def start(self) -> None:
        """Make the pool (no connection yet) and try the schema; never raises
        for an outage: the probe keeps trying and ``/health`` says why."""
        self._pool = await asyncpg.create_pool(
            self.url,
            min_size=0,
            max_size=self.pool_size,
            timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
            max_inactive_connection_lifetime=60.0,
            server_settings={"application_name": "nanobot"},
            reset=_no_reset,
        )
        await self._check()
        self._probe = asyncio.create_task(self._probe_loop(), name="nanobot-db-probe")

    async def close(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 5.0)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pool.terminate()

    async def _check(self) -> None:
        assert self._pool is not None, "start() makes the pool"
        try:
            async with self._pool.acquire() as conn:
                if not self._schema_ready:
                    await migrate(conn)
                    self._schema_ready = True
                else:
                    await conn.fetchval("SELECT 1")
        except Exception as exc:
            if not is_unavailable(exc):
                log.exception("database check failed")
            self.mark_down(exc)
        else:
            self._mark_up()

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(PROBE_UP if self._problem is None else PROBE_DOWN)
            await self._check()

    # --- statements -----------------------------------------------------------

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(conn, *args)`` on a pooled connection.

        Raises :class:`DatabaseUnavailable` at once while the database is
        known to be down, or when this call finds it so.
        """
        if self._problem is not None or self._pool is None:
            raise DatabaseUnavailable(self._problem or "not started")
        pool = self._pool
        try:
            conn = await pool.acquire()
        except Exception as exc:
            if is_unavailable(exc):
                raise self.mark_down(exc) from None
            raise
        try:
            return await fn(conn, *args)
        except Exception as exc:
            if is_unavailable(exc):
                raise self.mark_down(exc) from None
            raise
        finally:
            try:
                await pool.release(conn)
            except Exception as exc:  # the pool has dropped the connection; the result stands
                if not is_unavailable(exc):
                    log.warning("connection not returned to the pool: %s", type(exc).__name__)
