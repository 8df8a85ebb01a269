"""The ``cron`` tool: the agent schedules turns of its own session (nanobot's names).

``add`` stores a job with one of ``every_seconds``, ``cron_expr`` (+ ``tz``)
or ``at``; ``list`` and ``remove`` see only this session's jobs. A job's
reply goes to ``channel``/``chat_id`` when given (the same allowed targets as
the ``message`` tool), else to the session's own channel, which for an API
session means it is only recorded in the session. The scheduler
(:mod:`nanobot.cron.scheduler`) fires the jobs.
"""

from __future__ import annotations

import time
from typing import Any

from nanobot.agent.tools import Tool, ToolResult, TurnScope, fail, function_schema
from nanobot.config import ChannelsConfig, Config, CronToolConfig
from nanobot.cron import schedule
from nanobot.cron.store import CronJob, CronStore
from nanobot.outbound.channels import KNOWN_CHANNELS
from nanobot.tools.base import BuiltinTool, ToolDeps
from nanobot.tools.message import target_refusal

_PREVIEW = 60  # characters of a job's message shown by list


class CronTool(BuiltinTool):
    name = "cron"
    schema = function_schema(
        "cron",
        "Schedule work for later, in this conversation: at each due time you get the job's message as a "
        "new turn and your reply is delivered. Actions: add (message and one of every_seconds, cron_expr "
        "with optional tz, or at), list, remove (job_id).",
        {
            "action": {"type": "string", "enum": ["add", "list", "remove"]},
            "message": {"type": "string", "description": "add: what to do at each due time."},
            "every_seconds": {"type": "integer", "description": "add: repeat every N seconds."},
            "cron_expr": {"type": "string", "description": "add: a cron expression, e.g. '0 9 * * 1-5'."},
            "tz": {"type": "string", "description": "add: IANA time zone of cron_expr or at (default UTC)."},
            "at": {"type": "string", "description": "add: one time, ISO 8601, e.g. '2026-12-24T18:00:00+01:00'."},
            "channel": {"type": "string", "description": "add: deliver replies to this channel, e.g. telegram."},
            "chat_id": {"type": "string", "description": "add: the chat on that channel."},
            "job_id": {"type": "string", "description": "remove: the job's id (from add or list)."},
        },
        ["action"],
    )

    def __init__(self, store: CronStore, config: CronToolConfig, channels: ChannelsConfig) -> None:
        self._store = store  # an add wakes the schedulers (CronStore.watch)
        self._config = config
        self._channels = channels

    @classmethod
    def enabled(cls, config: Config) -> bool:
        return config.tools.cron.enabled

    @classmethod
    def build(cls, deps: ToolDeps) -> Tool:
        if deps.cron is None:
            raise ValueError("the cron tool needs the server's job store")
        return cls(deps.cron, deps.config.tools.cron, deps.config.channels)

    async def run(self, args: dict[str, Any], scope: TurnScope) -> str:
        return _marked(await self._run(args, scope))

    async def _run(self, args: dict[str, Any], scope: TurnScope) -> str:
        action = args.get("action")
        if action == "add":
            return await self._add(args, scope)
        if action == "list":
            return await self._list(scope)
        if action == "remove":
            return await self._remove(args, scope)
        return "Error: 'action' must be one of 'add', 'list', 'remove'."

    async def _add(self, args: dict[str, Any], scope: TurnScope) -> str:
        message = args.get("message")
        if not isinstance(message, str) or not message.strip():
            return "Error: 'message' must be a non-empty string: what to do at each due time."
        target = self._target(args, scope)
        if isinstance(target, str):
            return target
        now = time.time()
        parsed = schedule.parse(args, now, self._config.min_interval_seconds)
        if isinstance(parsed, str):
            return parsed
        channel, chat_id = target
        job = CronJob(CronJob.new_id(), scope.session_key, channel, chat_id, message, parsed, parsed.first(now), now)
        cap = self._config.max_jobs_per_session
        if not await self._store.add(job, cap):
            return (
                f"Error: this session has {cap} jobs already (tools.cron.maxJobsPerSession); "
                "remove one first (cron list shows them)."
            )
        where = (
            f"replies go to {channel}:{chat_id}"
            if channel in KNOWN_CHANNELS
            else "replies are recorded in this conversation"
        )
        return (
            f"Scheduled job {job.id}: {parsed.describe()}; next run {schedule.iso(job.next_run, parsed.tz)}; {where}."
        )

    def _target(self, args: dict[str, Any], scope: TurnScope) -> tuple[str, str] | str:
        channel, chat_id = args.get("channel"), args.get("chat_id")
        if channel in (None, "", scope.channel):
            return scope.channel, scope.chat_id
        if not isinstance(channel, str):
            return "Error: 'channel' must be a string."
        if isinstance(chat_id, int) and not isinstance(chat_id, bool):
            chat_id = str(chat_id)
        if not isinstance(chat_id, str) or not chat_id:
            return f"Error: 'chat_id' is required to deliver to channel '{channel}'."
        refused = target_refusal(self._channels, channel, chat_id, scope)
        if refused is not None:
            return refused.replace("nothing was sent or stored", "no job was added")
        return channel, chat_id

    async def _list(self, scope: TurnScope) -> str:
        jobs = await self._store.jobs(scope.session_key)
        if not jobs:
            return "No scheduled jobs in this conversation."
        return "\n".join(describe(job) for job in jobs)

    async def _remove(self, args: dict[str, Any], scope: TurnScope) -> str:
        job_id = args.get("job_id")
        if not isinstance(job_id, str) or not job_id.strip():
            return "Error: 'job_id' must be the id of a job (cron list shows them)."
        if await self._store.remove(job_id.strip(), scope.session_key):
            return f"Removed job {job_id.strip()}."
        return f"Error: no job '{job_id.strip()}' in this conversation (cron list shows its jobs)."


def describe(job: CronJob) -> str:
    """One line for a job (the tool's list; the CLI prints its own columns)."""
    preview = job.message.replace("\n", " ")
    if len(preview) > _PREVIEW:
        preview = preview[: _PREVIEW - 1] + "…"
    where = f" -> {job.channel}:{job.chat_id}" if job.channel in KNOWN_CHANNELS else ""
    last = f"; last: {job.last_status}" if job.last_status else ""
    when = schedule.iso(job.next_run, job.schedule.tz)
    return f"{job.id}: {job.schedule.describe()}, next {when}{where}: {preview}{last}"


def _marked(text: str) -> str:
    """This tool's own refusals (all written here and in ``nanobot.cron.schedule``) as failures.

    Its other texts are its own too (job lines start with the job's id), so
    no outside text that happens to begin with "Error" can be taken for one.
    """
    if isinstance(text, ToolResult) or not text.startswith("Error: "):
        return text
    return fail(text)
