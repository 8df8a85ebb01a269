"""The ``spawn`` tool: a background subagent for one task (nanobot's names: ``task``, ``label``).

The subagent is a turn in its own session (``subagent:<id>``) with the same
tools but ``spawn`` and ``cron``, working in its parent's folder and
channel. ``spawn`` returns at once; the subagent is this process's task, not
the request's, so a client that disconnects does not stop it and
``api.timeout`` does not bound it; ``tools.spawn.timeout`` does. Its result
(or why there is none: timeout, failure, shutdown) is recorded in the
parent session, in order with the parent's turns, and queued to the
parent's channel like a cron reply.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nanobot.agent.tools import Tool, ToolRegistry, ToolResult, TurnScope, fail, function_schema
from nanobot.config import Config, SpawnToolConfig
from nanobot.metrics import Metrics
from nanobot.outbound.channels import KNOWN_CHANNELS
from nanobot.providers.base import ToolCall
from nanobot.tools.base import BuiltinTool, ToolDeps

if TYPE_CHECKING:  # the agent's modules import the tools package
    from nanobot.agent.background import BackgroundTurns
    from nanobot.agent.loop import AgentLoop

log = logging.getLogger("nanobot.spawn")

HIDDEN = frozenset({"spawn", "cron"})  # a subagent neither spawns nor schedules
SHUTDOWN_RECORD_WAIT = 5.0  # seconds to wait for a parent's session lock when shutting down
INSTRUCTIONS = (
    "You are a subagent: you work alone on the one task in the user message, for another "
    "conversation. Nobody reads your intermediate messages; your final reply is handed back "
    "as the result, so make it complete and self-contained."
)


class HiddenTools(ToolRegistry):
    """``base``'s tools but ``hidden``: a view, so tools that connect later show up too."""

    def __init__(self, base: ToolRegistry, hidden: frozenset[str] = HIDDEN) -> None:
        super().__init__((), base.limits)
        self._base = base
        self._hidden = hidden

    @property
    def names(self) -> list[str]:
        return [n for n in self._base.names if n not in self._hidden]

    def get(self, name: str) -> Any:
        return None if name in self._hidden else self._base.get(name)

    def add(self, tool: Any) -> None:
        self._base.add(tool)

    def remove(self, name: str) -> None:
        self._base.remove(name)

    async def close(self) -> None:
        pass  # the base registry's owner closes the tools

    def withheld(self, user_text: str) -> frozenset[str]:
        return self._base.withheld(user_text) | self._hidden

    def offered(self, withheld: frozenset[str]) -> list[dict[str, Any]]:
        return self._base.offered(withheld)

    async def run(self, call: ToolCall, scope: TurnScope) -> ToolResult:
        if call.name in self._hidden:
            return fail(f"Error: tool '{call.name}' is not available to a subagent.")
        return await self._base.run(call, scope)


@dataclass
class _Run:
    id: str
    label: str
    task: str
    parent: TurnScope


class Subagents:
    """The subagents running in this process: at most ``maxConcurrent``, each within ``timeout``."""

    def __init__(self, config: SpawnToolConfig, turns: BackgroundTurns, metrics: Metrics) -> None:
        self._config = config
        self._turns = turns
        self._metrics = metrics
        self.agent: AgentLoop | None = None  # the loop with HiddenTools, bound once built
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.on_report: Callable[[str], None] | None = None  # nanobot agent prints each result

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, task: str, label: str, parent: TurnScope) -> _Run | str:
        """Start a subagent; an ``Error:`` text when ``maxConcurrent`` are running."""
        cap = self._config.max_concurrent
        if len(self._tasks) >= cap:
            return (
                f"Error: {cap} subagents are running already (tools.spawn.maxConcurrent); "
                "wait for one to finish, or do the task yourself."
            )
        run = _Run(secrets.token_hex(6), label, task, parent)
        # A task of the process, not of the request: the parent's turn may end, or its client leave.
        self._tasks[run.id] = asyncio.create_task(self._run(run), name=f"nanobot-subagent-{run.id}")
        self._metrics.subagents.set(len(self._tasks))
        return run

    async def wait(self) -> None:
        """Until every running subagent has ended (``nanobot agent -m`` before it exits)."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def close(self) -> None:
        """Cancel every running subagent; each records that in its parent session."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, run: _Run) -> None:
        parent = run.parent
        # The parent's channel and folder; its own history.
        scope = TurnScope(parent.channel, parent.chat_id, session_key=parent.session_key)
        timeout = self._config.timeout
        cancelled = False
        try:
            async with asyncio.timeout(timeout):
                result = await self._turns.run(f"subagent:{run.id}", scope, run.task, self.agent, INSTRUCTIONS)
            outcome = "finished"
        except TimeoutError:
            outcome, result = "timed out", f"It took longer than tools.spawn.timeout ({timeout:g} s) and was stopped."
        except asyncio.CancelledError:
            cancelled = True
            outcome, result = "cancelled", "It was cancelled: the server shut down before it finished."
        except Exception as exc:
            log.exception("subagent %s failed", run.id)
            outcome, result = "failed", f"It failed: {type(exc).__name__}."
        try:
            await self._report(run, outcome, result, SHUTDOWN_RECORD_WAIT if cancelled else None)
        except Exception as exc:
            log.warning("subagent %s: result not recorded (%s)", run.id, type(exc).__name__)
        finally:
            del self._tasks[run.id]
            self._metrics.subagents.set(len(self._tasks))
        if cancelled:
            raise asyncio.CancelledError

    async def _report(self, run: _Run, outcome: str, result: str, wait: float | None) -> None:
        head = f"[subagent {run.id} '{run.label}' {outcome}] task: {run.task}"
        messages = [{"role": "user", "content": head}, {"role": "assistant", "content": result}]
        await self._turns.record(run.parent.session_key, messages, wait)
        text = f"Subagent '{run.label}' {outcome}:\n\n{result}"
        await self._turns.deliver(run.parent.channel, run.parent.chat_id, text)
        if self.on_report is not None:
            self.on_report(text)


class SpawnTool(BuiltinTool):
    name = "spawn"
    schema = function_schema(
        "spawn",
        "Hand a task to a subagent that works on it in the background with the same tools; returns at once. "
        "Its result is added to this conversation (and sent to this chat's channel) when it finishes.",
        {
            "task": {"type": "string", "description": "The task, complete and self-contained."},
            "label": {"type": "string", "description": "A short name for the task."},
        },
        ["task"],
    )

    def __init__(self, subagents: Subagents) -> None:
        self._subagents = subagents

    @classmethod
    def enabled(cls, config: Config) -> bool:
        return config.tools.spawn.enabled

    @classmethod
    def build(cls, deps: ToolDeps) -> Tool:
        if not isinstance(deps.subagents, Subagents):
            raise ValueError("the spawn tool needs the server's subagents")
        return cls(deps.subagents)

    async def run(self, args: dict[str, Any], scope: TurnScope) -> str:
        task = args.get("task")
        if not isinstance(task, str) or not task.strip():
            return fail("Error: 'task' must be a non-empty string.")
        label = args.get("label")
        if label in (None, ""):
            label = " ".join(task.split())[:30]
        elif not isinstance(label, str):
            return fail("Error: 'label' must be a string.")
        started = self._subagents.start(task, label[:80], scope)
        if isinstance(started, str):
            return fail(started)
        to = f" and sent to {scope.channel}:{scope.chat_id}" if scope.channel in KNOWN_CHANNELS else ""
        return (
            f"Subagent {started.id} ('{started.label}') started in the background. Its result will be added "
            f"to this conversation{to} when it finishes; you need not wait for it."
        )
