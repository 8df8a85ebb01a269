"""Jobs in the SQLite file (``cron_jobs``), shared by the workers of one server."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from nanobot.cron.store import COLUMNS, CronJob
from nanobot.storage.db import Database
from nanobot.storage.sqlite_schema import migrate

# Each entry upgrades the table by one version; never edit a shipped one.
MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE cron_jobs (
            id TEXT PRIMARY KEY,
            session TEXT NOT NULL,
            channel TEXT NOT NULL,
            chat_id TEXT NOT NULL,
            message TEXT NOT NULL,
            kind TEXT NOT NULL,
            every_seconds REAL,
            cron_expr TEXT,
            tz TEXT,
            at REAL,
            next_run REAL NOT NULL,
            created REAL NOT NULL,
            last_run REAL,
            last_status TEXT,
            runs INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX cron_jobs_session ON cron_jobs(session)",
        "CREATE INDEX cron_jobs_due ON cron_jobs(next_run)",
    ),
]


class SqliteCronStore:
    """:class:`~nanobot.cron.store.CronStore` in ``<workspace>/nanobot.db``."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._watchers: list[Callable[[], None]] = []
        db.call(migrate, "cron_jobs", MIGRATIONS)

    def watch(self, callback: Callable[[], None]) -> None:
        # Adds in this process only: another worker's new job is seen at the
        # scheduler's next poll, and a worker that dies is replaced by one
        # whose scheduler looks at once.
        self._watchers.append(callback)

    async def add(self, job: CronJob, max_per_session: int) -> bool:
        added = await self._db.run(_add, job, max_per_session)
        if added:
            for callback in self._watchers:
                callback()
        return added

    async def jobs(self, session: str | None = None) -> list[CronJob]:
        return await self._db.run(_jobs, session)

    async def remove(self, job_id: str, session: str | None = None) -> bool:
        return await self._db.run(_remove, job_id, session)

    async def due(self, now: float, limit: int) -> list[CronJob]:
        return await self._db.run(_due, now, limit)

    async def next_due(self) -> float | None:
        return await self._db.run(_next_due)

    async def claim(self, job: CronJob, next_run: float | None, now: float) -> bool:
        return await self._db.run(_claim, job.id, job.next_run, next_run, now)

    async def finish(self, job_id: str, status: str) -> None:
        await self._db.run(_finish, job_id, status)

    async def close(self) -> None:
        pass  # the database is the storage's to close


def _add(conn: sqlite3.Connection, job: CronJob, cap: int) -> bool:
    conn.execute("BEGIN IMMEDIATE")  # the count and the insert as one: workers share the file
    try:
        (count,) = conn.execute("SELECT count(*) FROM cron_jobs WHERE session = ?", (job.session,)).fetchone()
        if count >= cap:
            conn.execute("ROLLBACK")
            return False
        conn.execute(f"INSERT INTO cron_jobs ({COLUMNS}) VALUES ({', '.join('?' * 15)})", job.values())
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return True


def _jobs(conn: sqlite3.Connection, session: str | None) -> list[CronJob]:
    if session is None:
        rows = conn.execute(f"SELECT {COLUMNS} FROM cron_jobs ORDER BY next_run, id")
    else:
        rows = conn.execute(f"SELECT {COLUMNS} FROM cron_jobs WHERE session = ? ORDER BY next_run, id", (session,))
    return [CronJob.from_row(r) for r in rows]


def _remove(conn: sqlite3.Connection, job_id: str, session: str | None) -> bool:
    if session is None:
        cur = conn.execute("DELETE FROM cron_jobs WHERE id = ?", (job_id,))
    else:
        cur = conn.execute("DELETE FROM cron_jobs WHERE id = ? AND session = ?", (job_id, session))
    return cur.rowcount == 1


def _due(conn: sqlite3.Connection, now: float, limit: int) -> list[CronJob]:
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM cron_jobs WHERE next_run <= ? ORDER BY next_run, id LIMIT ?", (now, limit)
    )
    return [CronJob.from_row(r) for r in rows]


def _next_due(conn: sqlite3.Connection) -> float | None:
    due: float | None = conn.execute("SELECT min(next_run) FROM cron_jobs").fetchone()[0]
    return due


def _claim(conn: sqlite3.Connection, job_id: str, seen: float, next_run: float | None, now: float) -> bool:
    # Compare-and-set on next_run (module docstring of nanobot.cron.store).
    if next_run is None:
        cur = conn.execute("DELETE FROM cron_jobs WHERE id = ? AND next_run = ?", (job_id, seen))
    else:
        cur = conn.execute(
            "UPDATE cron_jobs SET next_run = ?, last_run = ?, runs = runs + 1 WHERE id = ? AND next_run = ?",
            (next_run, now, job_id, seen),
        )
    return cur.rowcount == 1


def _finish(conn: sqlite3.Connection, job_id: str, status: str) -> None:
    conn.execute("UPDATE cron_jobs SET last_status = ? WHERE id = ?", (status, job_id))
