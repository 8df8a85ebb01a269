"""Jobs in PostgreSQL (``nanobot_cron_jobs``, schema version 2), shared by every node.

The claim is one ``UPDATE ... WHERE id = $1 AND next_run = $2``: nodes that
race for a due time serialise on the row, and all but the first find
``next_run`` moved and update nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from nanobot.cron.store import COLUMNS, CronJob
from nanobot.storage.pg import PgDatabase

CHANNEL = "nanobot_cron"

# Every node's scheduler hears of the new job (LISTEN on the lock
# connection), so its first fire is on time even if this node dies.
_ADD = f"""
WITH row AS (
    INSERT INTO nanobot_cron_jobs ({COLUMNS})
    SELECT {", ".join(f"${i}" for i in range(1, 16))}
    WHERE (SELECT count(*) FROM nanobot_cron_jobs WHERE session = $2) < $16
    RETURNING id
)
SELECT id, pg_notify('{CHANNEL}', '') FROM row
"""


class PgCronStore:
    """:class:`~nanobot.cron.store.CronStore` in ``nanobot_cron_jobs``."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        self._watchers: list[Callable[[], None]] = []

    def watch(self, callback: Callable[[], None]) -> None:
        self._watchers.append(callback)

    def notified(self, *_: Any) -> None:
        """LISTEN callback (a node added a job), and the database being back."""
        for callback in self._watchers:
            callback()

    async def add(self, job: CronJob, max_per_session: int) -> bool:
        # Turns of one session never overlap, so two adds of one session do not race.
        rows = await self._db.run(_fetch, _ADD, *job.values(), max_per_session)
        return len(rows) == 1

    async def jobs(self, session: str | None = None) -> list[CronJob]:
        if session is None:
            rows = await self._db.run(_fetch, f"SELECT {COLUMNS} FROM nanobot_cron_jobs ORDER BY next_run, id")
        else:
            rows = await self._db.run(
                _fetch, f"SELECT {COLUMNS} FROM nanobot_cron_jobs WHERE session = $1 ORDER BY next_run, id", session
            )
        return [CronJob.from_row(r) for r in rows]

    async def remove(self, job_id: str, session: str | None = None) -> bool:
        if session is None:
            status = await self._db.run(_execute, "DELETE FROM nanobot_cron_jobs WHERE id = $1", job_id)
        else:
            status = await self._db.run(
                _execute, "DELETE FROM nanobot_cron_jobs WHERE id = $1 AND session = $2", job_id, session
            )
        return status == "DELETE 1"

    async def due(self, now: float, limit: int) -> list[CronJob]:
        rows = await self._db.run(
            _fetch,
            f"SELECT {COLUMNS} FROM nanobot_cron_jobs WHERE next_run <= $1 ORDER BY next_run, id LIMIT $2",
            now,
            limit,
        )
        return [CronJob.from_row(r) for r in rows]

    async def next_due(self) -> float | None:
        rows = await self._db.run(_fetch, "SELECT min(next_run) FROM nanobot_cron_jobs")
        due: float | None = rows[0][0]
        return due

    async def claim(self, job: CronJob, next_run: float | None, now: float) -> bool:
        if next_run is None:
            status = await self._db.run(
                _execute, "DELETE FROM nanobot_cron_jobs WHERE id = $1 AND next_run = $2", job.id, job.next_run
            )
            return status == "DELETE 1"
        status = await self._db.run(
            _execute,
            "UPDATE nanobot_cron_jobs SET next_run = $3, last_run = $4, runs = runs + 1"
            " WHERE id = $1 AND next_run = $2",
            job.id,
            job.next_run,
            next_run,
            now,
        )
        return status == "UPDATE 1"

    async def finish(self, job_id: str, status: str) -> None:
        await self._db.run(_execute, "UPDATE nanobot_cron_jobs SET last_status = $2 WHERE id = $1", job_id, status)

    async def close(self) -> None:
        pass  # the pool is the storage's to close


async def _fetch(conn: asyncpg.Connection, query: str, *args: Any) -> list[Any]:
    rows: list[Any] = await conn.fetch(query, *args)
    return rows


async def _execute(conn: asyncpg.Connection, query: str, *args: Any) -> str:
    status: str = await conn.execute(query, *args)
    return status
