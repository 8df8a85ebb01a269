"""``nanobot cron list|remove``: the jobs of every session, read from the configured database."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nanobot.config import Config
from nanobot.cron.schedule import iso
from nanobot.cron.store import CronJob, CronStore
from nanobot.errors import DatabaseUnavailable
from nanobot.redact import Redactor
from nanobot.storage.state import database_path

T = TypeVar("T")


async def with_store(config: Config, use: Callable[[CronStore], Awaitable[T]]) -> T | None:
    """``use(store)`` on the configured database; None when the SQLite file does not exist yet."""
    if url := config.database.url:
        # Imported only for a PostgreSQL deployment: asyncpg is not loaded otherwise.
        from nanobot.cron.pg_store import PgCronStore
        from nanobot.storage.pg import PgDatabase

        pg = PgDatabase(url, 1)
        await pg.start()
        try:
            return await use(PgCronStore(pg))
        finally:
            await pg.close()
    from nanobot.cron.sqlite_store import SqliteCronStore
    from nanobot.storage.db import Database

    path = database_path(config)
    if not path.exists():
        return None
    db = Database(path)
    try:
        return await use(SqliteCronStore(db))
    finally:
        db.close()


def print_jobs(jobs: list[CronJob], config: Config) -> None:
    redact = Redactor.from_config(config)  # a message may quote a configured secret
    print(f"{'id':<12}  {'session':<24} {'schedule':<34} {'next run (UTC)':<25} {'target':<20} message / last status")
    for job in jobs:
        target = f"{job.channel}:{job.chat_id}"
        preview = job.message.replace("\n", " ")[:40]
        last = f"  ({job.last_status})" if job.last_status else ""
        line = (
            f"{job.id:<12}  {job.session:<24} {job.schedule.describe():<34} {iso(job.next_run):<25} "
            f"{target:<20} {preview}{last}"
        )
        print(redact(line))


async def list_jobs(config: Config) -> int:
    try:
        jobs = await with_store(config, lambda store: store.jobs())
    except DatabaseUnavailable as exc:
        print(f"nanobot: {exc.message}", file=sys.stderr)
        return 1
    if not jobs:
        print("no cron jobs" + (" (no database yet)" if jobs is None else ""))
        return 0
    print_jobs(jobs, config)
    return 0


async def remove_job(config: Config, job_id: str) -> int:
    try:
        removed = await with_store(config, lambda store: store.remove(job_id))
    except DatabaseUnavailable as exc:
        print(f"nanobot: {exc.message}", file=sys.stderr)
        return 1
    if not removed:
        print(f"nanobot: no cron job '{job_id}' (nanobot cron list shows them)", file=sys.stderr)
        return 1
    print(f"removed job {job_id}")
    return 0
