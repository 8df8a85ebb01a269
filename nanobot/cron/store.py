"""A job as stored, and what any store of jobs offers (SQLite or PostgreSQL).

Firing is a compare-and-set on ``next_run`` in the database: the process
whose ``claim`` moves a job from the due time it read to the next one fires
it; every other worker or node finds the row changed and leaves it. So a
job fires once per due time wherever it runs, and a process that dies while
running a job's turn has already moved the job on: it fires again at its
next due time, never twice for one and never lost for the next.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from nanobot.cron.schedule import Schedule

# Columns in the order :meth:`CronJob.from_row` reads them.
COLUMNS = (
    "id, session, channel, chat_id, message, kind, every_seconds, cron_expr, tz, at,"
    " next_run, created, last_run, last_status, runs"
)


@dataclass(frozen=True, slots=True)
class CronJob:
    id: str
    session: str  # the session key whose turn it runs (e.g. api:abc)
    channel: str  # where the reply is queued; the session's own channel ("api"): recorded only
    chat_id: str
    message: str
    schedule: Schedule
    next_run: float
    created: float
    last_run: float | None = None
    last_status: str | None = None
    runs: int = 0

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(6)

    @classmethod
    def from_row(cls, row: Any) -> CronJob:
        (job_id, session, channel, chat_id, message, kind, every, expr, tz, at, nxt, created, last, status, runs) = row
        schedule = Schedule(kind, every_seconds=every, cron_expr=expr, tz=tz, at=at)
        return cls(job_id, session, channel, chat_id, message, schedule, nxt, created, last, status, runs)

    def values(self) -> tuple[Any, ...]:
        s = self.schedule
        return (
            self.id,
            self.session,
            self.channel,
            self.chat_id,
            self.message,
            s.kind,
            s.every_seconds,
            s.cron_expr,
            s.tz,
            s.at,
            self.next_run,
            self.created,
            self.last_run,
            self.last_status,
            self.runs,
        )


class CronStore(Protocol):
    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever a job was added, here or (PostgreSQL) on any node."""

    async def add(self, job: CronJob, max_per_session: int) -> bool:
        """Store ``job`` unless its session has ``max_per_session`` jobs already."""

    async def jobs(self, session: str | None = None) -> list[CronJob]:
        """The jobs of ``session`` (None: all), soonest first."""

    async def remove(self, job_id: str, session: str | None = None) -> bool:
        """Delete the job (only if it belongs to ``session``, when given)."""

    async def due(self, now: float, limit: int) -> list[CronJob]:
        """Jobs whose due time has come, soonest first."""

    async def next_due(self) -> float | None:
        """The earliest due time of any job."""

    async def claim(self, job: CronJob, next_run: float | None, now: float) -> bool:
        """Move ``job`` from the due time it was read with to ``next_run`` (None:
        a one-shot job, deleted). True for the one process that did."""

    async def finish(self, job_id: str, status: str) -> None:
        """Note how the fire went (``cron list`` shows it)."""

    async def close(self) -> None: ...
