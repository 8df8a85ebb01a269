"""The tool framework: the ``Tool`` protocol, a turn's scope, and the registry.

A tool never kills a turn: bad arguments, an unknown name, a timeout or an
exception become an ``Error: ...`` result that the model reads and can react
to. The calls of one model reply run concurrently (at most
``ToolLimits.concurrency`` at once, at most ``max_calls`` at all); results go
back in call order. Cancelling the turn cancels every running call, and a
tool that owns processes kills them in its own cancellation path.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from nanobot.agent import untrusted
from nanobot.agent.tool_args import ArgsChecker, compile_checker
from nanobot.providers.base import ToolCall

log = logging.getLogger("nanobot.tools")

# Arguments above this are parsed off the event loop; above the cap, refused.
_INLINE_ARGS_CHARS = 64 * 1024
MAX_ARGS_CHARS = 32 * 1024 * 1024


# When the running tool call's time is up (monotonic). Threads started with
# ``asyncio.to_thread`` inherit it, so a long scan in a thread, which no
# cancellation reaches, can see it and stop (:func:`past_deadline`).
DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("nanobot_tool_deadline", default=None)


def past_deadline() -> bool:
    deadline = DEADLINE.get()
    return deadline is not None and time.monotonic() > deadline


@dataclass
class TurnScope:
    """Where a turn runs, and the text tools add to this turn's reply."""

    channel: str  # "api" or "cli": the synthetic channel of this turn
    chat_id: str
    session_key: str = ""  # picks the folder with tools.workspaceScope "session"
    inline: list[str] = field(default_factory=list)
    withheld: frozenset[str] = frozenset()  # tools.requireUserRequest names this turn did not ask for


class ToolResult(str):
    """A result's text that says whether the call failed.

    A ``str``, so it goes to the model and the session as it is; ``is_error``
    is set by whoever knows (the tool, or the registry for its own refusals),
    never read off the text, so honest output that begins with "Error" is not
    a failure. Failures still start with ``Error:`` toward the model (DESIGN).
    """

    is_error: bool

    def __new__(cls, text: str, is_error: bool = False) -> ToolResult:
        made = super().__new__(cls, text)
        made.is_error = is_error
        return made

    @property
    def text(self) -> str:
        return str.__str__(self)


def fail(text: str) -> ToolResult:
    """A failed call's result; ``text`` starts with ``Error:``."""
    return ToolResult(text, True)


def failed(result: str) -> bool:
    """The call failed: only a :class:`ToolResult` marked so (plain text is output)."""
    return isinstance(result, ToolResult) and result.is_error


class Tool(Protocol):
    """A callable the model may use. ``schema`` is the OpenAI ``tools`` entry.

    A tool may also carry ``timeout`` (seconds) to replace ``tools.timeout``
    for its calls (``exec`` has its own), and ``session_share`` (a pool name
    and a count): calls of one session to tools of that pool run at most that
    many at once, so one session cannot hold a shared pool (the file-I/O
    threads) that every session needs.
    """

    name: str
    schema: dict[str, Any]

    async def run(self, args: dict[str, Any], scope: TurnScope) -> str: ...


def loose_schema(tool: Tool) -> bool:
    """A schema not written here (an MCP server's): its arguments are the server's to check."""
    return bool(getattr(tool, "loose_schema", False))


@dataclass(frozen=True)
class ToolLimits:
    timeout: float = 60.0  # per call
    max_result_chars: int = 16000
    concurrency: int = 8  # calls of one reply running at once
    max_calls: int = 64  # calls of one reply that run at all; the rest get an error


def function_schema(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """An OpenAI ``tools`` entry for a function taking one JSON object."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


def cut(result: str, limit: int) -> str:
    """``result`` within ``limit`` characters, with a note of what was left out."""
    if len(result) <= limit:
        return result
    left = len(result) - limit
    return f"{result[:limit]}\n[... {left} more characters cut: the result limit is {limit}]"


class ToolRegistry:
    """The tools offered to the model; ``schemas`` is recomputed only when the set changes.

    Tools may be added or removed after startup (servers that connect in the
    background): a turn reads ``schemas`` once per model call, and the list
    it got is never mutated, only replaced.
    """

    def __init__(
        self,
        tools: Iterable[Tool] = (),
        limits: ToolLimits | None = None,
        redact: Callable[[str], str] | None = None,
        require_request: Iterable[str] = (),
    ) -> None:
        self.limits = limits or ToolLimits()
        self.require_request = frozenset(require_request)
        # A result goes to the model, which may repeat it to the client: a
        # command that prints the config or a file that quotes a key must not
        # hand a configured secret on.
        self._redact = redact
        self._tools: dict[str, Tool] = {}
        self._checkers: dict[str, ArgsChecker] = {}
        self.schemas: list[dict[str, Any]] = []
        self._shares: dict[tuple[str, str], _Share] = {}
        for tool in tools:
            self._put(tool)
        self._recompute()

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def add(self, tool: Tool) -> None:
        """Offer ``tool`` from the next model call on (replaces one of the same name)."""
        self._put(tool)
        self._recompute()

    def _put(self, tool: Tool) -> None:
        # compiled here, once per tool, so a call only runs the checks
        self._checkers[tool.name] = compile_checker(tool.schema, loose=loose_schema(tool))
        self._tools[tool.name] = tool

    def remove(self, name: str) -> None:
        self._checkers.pop(name, None)
        if self._tools.pop(name, None) is not None:
            self._recompute()

    async def close(self) -> None:
        """Let tools that hold resources (worker processes, clients) release them."""
        for tool in list(self._tools.values()):
            close = getattr(tool, "close", None)
            if close is not None:
                await close()

    def _recompute(self) -> None:
        self.schemas = [t.schema for t in self._tools.values()]

    def withheld(self, user_text: str) -> frozenset[str]:
        """The ``require_request`` tools the turn's user message did not ask for."""
        return frozenset(n for n in self.require_request if not untrusted.requested(n, user_text))

    def offered(self, withheld: frozenset[str]) -> list[dict[str, Any]]:
        if not withheld:
            return self.schemas
        return [s for s in self.schemas if s["function"]["name"] not in withheld]

    async def run(self, call: ToolCall, scope: TurnScope) -> ToolResult:
        """One call's result (``Error: ...`` and ``is_error`` on any failure), cut to the limit."""
        tool = self._tools.get(call.name)
        if tool is None:
            return fail(f"Error: unknown tool '{call.name}'.")
        if call.name in scope.withheld:
            return fail(
                f"Error: tool '{call.name}' runs only when the user's message asks for it "
                "(tools.requireUserRequest); it was not called."
            )
        args = await _parse_args(call.arguments)
        if isinstance(args, str):
            return fail(args)
        checker = self._checkers.get(call.name)
        bad = checker.check(args) if checker is not None else None
        if bad is not None:
            return fail(bad)
        timeout = getattr(tool, "timeout", None) or self.limits.timeout
        share = getattr(tool, "session_share", None)
        token = DEADLINE.set(time.monotonic() + timeout)
        try:
            async with asyncio.timeout(timeout):
                if share is None:
                    result = await tool.run(args, scope)
                else:
                    result = await self._run_shared(tool, args, scope, share)
        except TimeoutError:
            return fail(f"Error: tool '{call.name}' took longer than {timeout:g} s and was stopped.")
        except Exception as exc:  # the model gets the error; the turn goes on
            log.warning("tool %s failed: %s", call.name, exc, exc_info=True)
            return fail(f"Error: tool '{call.name}' failed: {type(exc).__name__}: {exc}")
        finally:
            DEADLINE.reset(token)
        if not isinstance(result, str):
            return fail(f"Error: tool '{call.name}' returned no text.")
        error = failed(result)
        text = cut(str.__str__(result), self.limits.max_result_chars)
        if self._redact is not None:
            text = self._redact(text)
        if untrusted.is_untrusted(call.name):
            text = untrusted.frame(call.name, text, error)
        return ToolResult(text, error)

    async def _run_shared(self, tool: Tool, args: dict[str, Any], scope: TurnScope, share: tuple[str, int]) -> str:
        key = (scope.session_key, share[0])
        mine = self._shares.setdefault(key, _Share(asyncio.Semaphore(share[1])))
        mine.users += 1
        try:
            async with mine.gate:
                return await tool.run(args, scope)
        finally:
            mine.users -= 1
            if mine.users == 0:
                self._shares.pop(key, None)

    async def run_batch(self, calls: list[ToolCall], scope: TurnScope) -> AsyncGenerator[tuple[int, ToolResult], None]:
        """``(index, result)`` for every call of one reply, as each finishes.

        Calls past ``max_calls`` are answered at once with an error; the others
        run ``concurrency`` at a time. Closing the iterator early (a cancelled
        turn) cancels the calls still running and waits for them to clean up.
        """
        limits = self.limits
        for index in range(limits.max_calls, len(calls)):
            yield (
                index,
                fail(
                    f"Error: this reply asked for {len(calls)} tool calls; only the first "
                    f"{limits.max_calls} run, so this one (#{index + 1}) did not. Ask for fewer at once."
                ),
            )
        running = calls[: limits.max_calls]
        if len(running) == 1:  # the common case, without tasks and a queue
            yield 0, await self.run(running[0], scope)
            return
        gate = asyncio.Semaphore(limits.concurrency)
        finished: asyncio.Queue[tuple[int, ToolResult]] = asyncio.Queue()

        async def one(index: int, call: ToolCall) -> None:
            async with gate:
                result = await self.run(call, scope)
            finished.put_nowait((index, result))

        tasks = [asyncio.create_task(one(i, c)) for i, c in enumerate(running)]
        try:
            for _ in tasks:
                yield await finished.get()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class _Share:
    gate: asyncio.Semaphore
    users: int = 0


async def _parse_args(raw: str) -> dict[str, Any] | str:
    """The arguments object, or an error result."""
    if not raw:
        return {}
    if len(raw) > MAX_ARGS_CHARS:
        return f"Error: the tool arguments are too large ({len(raw)} characters; at most {MAX_ARGS_CHARS})."
    try:
        if len(raw) > _INLINE_ARGS_CHARS:
            args = await asyncio.to_thread(orjson.loads, raw)
        else:
            args = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "Error: the tool arguments are not valid JSON."
    if not isinstance(args, dict):
        return "Error: the tool arguments must be a JSON object."
    return args
