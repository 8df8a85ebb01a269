"""The scheduler: one task per server process that fires due jobs as turns.

It sleeps until the earliest due time of any job, at most ``POLL`` seconds
(jobs another process added are seen within that), and wakes at once when
this process adds one: no busy loop, one query a poll at rest. A due job is
fired by the process that wins its claim (see :mod:`nanobot.cron.store`),
as a turn in the job's session bounded by ``api.timeout``; the reply is
recorded there and queued to the job's channel. Nothing a job does can end
the scheduler: a failed fire is counted and noted on the job.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nanobot.agent.background import BackgroundTurns
from nanobot.agent.tools import TurnScope
from nanobot.cron.schedule import iso
from nanobot.cron.store import CronJob, CronStore
from nanobot.errors import DatabaseUnavailable
from nanobot.metrics import Metrics

log = logging.getLogger("nanobot.cron")


def job_prompt(job: CronJob) -> str:
    """The user message of a fire (``job.next_run``: the due time claimed), marked as what it is."""
    due = iso(job.next_run, job.schedule.tz)
    return f"[scheduled job {job.id}, {job.schedule.describe()}, due {due}] {job.message}"


class Scheduler:
    POLL = 30.0  # seconds between looks at the table when nothing is due sooner
    MAX_RUNNING = 8  # fires running at once in one process; the rest wait for a slot, unclaimed
    RETRY = 2.0  # after a database outage or a failed step

    def __init__(self, store: CronStore, turns: BackgroundTurns, metrics: Metrics, timeout: float) -> None:
        self._store = store
        self._turns = turns
        self._metrics = metrics
        self._timeout = timeout
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Look again now (a job was added)."""
        self._wake.set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="nanobot-cron")

    async def close(self) -> None:
        """Stop; fires cut short commit nothing and wait for their job's next due time."""
        task, self._task = self._task, None
        running = [*self._running, *([task] if task else [])]
        for t in running:
            t.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            self._wake.clear()  # before the query: an add during it wakes the sleep below
            try:
                delay = await self._step()
            except DatabaseUnavailable as exc:
                log.warning("scheduler: %s", exc.message)
                delay = self.RETRY
            except Exception:
                log.exception("scheduler: step failed")
                delay = self.RETRY
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def _step(self) -> float:
        """Claim and start what is due; seconds until the next look."""
        free = self.MAX_RUNNING - len(self._running)
        if free <= 0:
            return self.POLL  # a fire that ends wakes the loop
        now = time.time()
        for job in await self._store.due(now, free):
            try:
                following = job.schedule.after(job.next_run, now)
            except Exception:  # e.g. a time zone the system no longer knows
                log.warning("cron job %s: cannot compute its next time; it is removed", job.id, exc_info=True)
                following = None
            if await self._store.claim(job, following, now):
                task = asyncio.create_task(self._fire(job), name=f"nanobot-cron-{job.id}")
                self._running.add(task)
                task.add_done_callback(self._ended)
        earliest = await self._store.next_due()
        if earliest is None:
            return self.POLL
        # Never 0: a job another process is claiming right now is left to it.
        return min(self.POLL, max(0.05, earliest - time.time()))

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wake.set()

    async def _fire(self, job: CronJob) -> None:
        self._metrics.cron_fired.inc()
        scope = TurnScope(job.channel, job.chat_id, session_key=job.session)
        try:
            async with asyncio.timeout(self._timeout):
                reply = await self._turns.run(job.session, scope, job_prompt(job))
                outcome = await self._turns.deliver(job.channel, job.chat_id, reply)
            status = f"ok: {outcome}"
        except TimeoutError:
            status = f"failed: the turn took longer than api.timeout ({self._timeout:g} s)"
        except DatabaseUnavailable as exc:
            status = f"failed: database unavailable ({exc.message})"
        except Exception as exc:
            log.exception("cron job %s: the turn failed", job.id)
            status = f"failed: {type(exc).__name__}"
        if status.startswith("failed"):
            self._metrics.cron_failures.inc()
            log.warning("cron job %s: %s", job.id, status)
        try:
            await self._store.finish(job.id, status)
        except Exception as exc:  # only the note is lost; the schedule moved on at the claim
            log.warning("cron job %s: status not saved (%s)", job.id, type(exc).__name__)
