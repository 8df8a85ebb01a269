"""The agent loop: one turn from the user message to the final reply.

It yields events as they happen (``str`` text deltas, :class:`ToolProgress`,
then one :class:`TurnDone`), and commits the whole turn to the session in one
transaction just before ``TurnDone``. A failed or cancelled turn commits
nothing, so history is always as it was or one whole turn longer.

A reply that calls the client's tools (``TurnInput.client_tools``) pauses the
turn once the server tools of that reply have run: the turn so far is kept
as the session's :class:`~nanobot.client_tools.PausedTurn` (not yet history)
and ``TurnDone.tool_calls`` hands the calls to the client. The request that
brings their results resumes it (``TurnInput.paused`` and ``results``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from nanobot.agent import untrusted
from nanobot.agent.context import WorkspaceContext
from nanobot.agent.tools import ToolRegistry, TurnScope
from nanobot.client_tools import ClientTools, PausedTurn
from nanobot.config import AgentDefaults
from nanobot.protocol import Usage
from nanobot.providers.base import ClientOffer, Completion, Provider, ToolCall
from nanobot.sessions.store import SessionStore

DEFAULT_SYSTEM_PROMPT = (
    "You are nanobot, a helpful assistant reached through an API. Answer clearly "
    "and concisely. Files the user sends appear as [file: NAME] blocks with their "
    "text, images as [image: NAME]. Use the message tool only to send something to "
    "another chat channel, or when asked to message someone.\n\n" + untrusted.NOTE
)


@dataclass(slots=True)
class ToolProgress:
    name: str
    status: str  # "started" | "finished"
    id: str = ""  # the tool call's id
    ok: bool | None = None  # when finished: False for an error result


@dataclass(slots=True)
class TurnDone:
    usage: Usage
    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)  # the client's calls: the turn paused on them
    # What the turn added to the conversation (user, assistant and tool messages),
    # for a caller that keeps the conversation itself (the Responses API's chains).
    messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class TurnInput:
    session_key: str
    history: list[dict[str, Any]]
    user_for_llm: dict[str, Any] | None  # may carry image parts; None: the turn goes on from tool results
    user_for_history: dict[str, Any] | None  # images replaced by [image: NAME]
    scope: TurnScope
    incremental: bool = True  # False: nobody reads the deltas as they come
    instructions: str | None = None  # the client's own, after the system prompt, this turn only
    remember: bool = True  # False: the history came from the client; the session's is not written
    # The client's json_object/json_schema format, on every call of the turn:
    # any call may be the last, whose text the client gets.
    response_format: dict[str, Any] | None = None
    client_tools: ClientTools | None = None  # offered beside the server's tools
    # A session's paused turn: resumed with ``results`` (call id -> the
    # client's result), else closed before this turn's user message.
    paused: PausedTurn | None = None
    results: dict[str, str] | None = None


class AgentLoop:
    def __init__(
        self,
        provider: Provider,
        store: SessionStore,
        tools: ToolRegistry,
        defaults: AgentDefaults,
        context: WorkspaceContext | None = None,
    ) -> None:
        self.provider = provider
        self.store = store
        self.tools = tools
        self.max_iterations = defaults.max_tool_iterations
        self.max_history = defaults.max_history_messages
        self.max_history_chars = defaults.max_history_chars
        self.system = {"role": "system", "content": defaults.system_prompt or DEFAULT_SYSTEM_PROMPT}
        self.context = context  # the workspace's AGENTS.md, memory and skills

    async def history(self, session_key: str) -> list[dict[str, Any]]:
        """What of the session's history the model is sent: its last messages, within both limits."""
        return await self.store.history(session_key, self.max_history, self.max_history_chars)

    async def run(self, turn: TurnInput) -> AsyncGenerator[str | ToolProgress | TurnDone, None]:
        system = self.system if self.context is None else await self.context.message(turn.scope.session_key)
        if turn.instructions:
            system = {"role": "system", "content": f"{system['content']}\n\n{turn.instructions}"}
        messages, new, first = _start(system, turn)
        usage = Usage()
        reply: list[str] = []
        turn.scope.withheld = self.tools.withheld(_user_text(new) or _user_text(turn.history))
        client = turn.client_tools
        offer = ClientOffer(client.encoded, client.choice(True), client.parallel_tool_calls) if client else None
        for iteration in range(first, self.max_iterations + 1):
            schemas = self.tools.offered(turn.scope.withheld) or None  # tools may come and go between calls
            completion: Completion | None = None
            if client is not None and iteration == first + 1:  # a forced choice held for the first call only
                offer = ClientOffer(client.encoded, client.choice(False), client.parallel_tool_calls)
            async with aclosing(
                self.provider.stream(messages, schemas, turn.incremental, turn.response_format, offer)
            ) as events:
                async for event in events:
                    if type(event) is str:
                        reply.append(event)
                        yield event
                    else:
                        assert isinstance(event, Completion)  # once per call: the stream's last event
                        completion = event
            assert completion is not None, "a provider stream must end with a Completion"
            usage.add(completion.usage)
            if not completion.tool_calls:
                new.append({"role": "assistant", "content": completion.text})
                break
            if iteration == self.max_iterations:
                note = (
                    f"[Stopped: this turn reached the limit of {self.max_iterations} model calls "
                    "while the model still wanted to use tools.]"
                )
                text = f"{completion.text}\n\n{note}" if completion.text else note
                piece = text[len(completion.text) :]
                reply.append(piece)
                yield piece
                new.append({"role": "assistant", "content": text})
                break
            call_msg = {
                "role": "assistant",
                "content": completion.text or None,
                "tool_calls": [c.as_message_part() for c in completion.tool_calls],
            }
            messages.append(call_msg)
            new.append(call_msg)
            calls = completion.tool_calls
            client_calls: list[ToolCall] = []
            if turn.client_tools is not None:
                names = turn.client_tools.names
                client_calls = [c for c in calls if c.name in names]
                if client_calls:
                    calls = [c for c in calls if c.name not in names]
            for call in calls:
                yield ToolProgress(call.name, "started", call.id)
            results: list[str] = [""] * len(calls)
            async with aclosing(self.tools.run_batch(calls, turn.scope)) as finished:
                async for index, result in finished:
                    results[index] = result.text  # plain text into the session
                    while turn.scope.inline:
                        piece = turn.scope.inline.pop(0)
                        if reply and not reply[-1].endswith("\n"):
                            piece = "\n" + piece
                        reply.append(piece)
                        yield piece
                    call = calls[index]
                    yield ToolProgress(call.name, "finished", call.id, not result.is_error)
            if client_calls:
                paused = PausedTurn(
                    messages=new,
                    results={call.id: result for call, result in zip(calls, results, strict=False)},
                    pending=[c.id for c in client_calls],
                    iterations=iteration,
                    names={c.id: c.name for c in client_calls},
                )
                if turn.remember:
                    _keep_user(paused, turn)
                    await self.store.pause_turn(turn.session_key, paused.to_json())
                # A caller keeping the conversation itself (a Responses chain) gets it
                # so far: the calls and the server's results; the client's come next.
                so_far = [*new, *_tool_messages(calls, results)]
                yield TurnDone(usage, "".join(reply), client_calls, messages=so_far)
                return
            for result_msg in _tool_messages(calls, results):
                messages.append(result_msg)
                new.append(result_msg)
        if turn.remember:
            await self.store.append_turn(turn.session_key, new, closes_paused=turn.paused is not None)
        yield TurnDone(usage, "".join(reply), messages=new)


def _tool_messages(calls: list[ToolCall], results: list[str]) -> list[dict[str, Any]]:
    return [
        {"role": "tool", "tool_call_id": call.id, "content": text} for call, text in zip(calls, results, strict=False)
    ]


def _start(system: dict[str, Any], turn: TurnInput) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """The model's messages, the turn's new messages so far, and the number of its first LLM call."""
    paused = turn.paused
    if paused is not None and turn.results is not None:  # resumed with the client's results
        new = paused.closed(turn.results)
        return [system, *turn.history, *paused.for_llm(new)], new, paused.iterations + 1
    # A paused turn the client did not answer is closed first, its calls
    # answered with an error, and goes into history with this turn.
    before = paused.closed({}) if paused is not None else []
    llm_before = paused.for_llm(before) if paused is not None else []
    if turn.user_for_llm is None or turn.user_for_history is None:  # the client's own tool loop ("use")
        return [system, *turn.history, *llm_before], before, 1
    return [system, *turn.history, *llm_before, turn.user_for_llm], [*before, turn.user_for_history], 1


def _keep_user(paused: PausedTurn, turn: TurnInput) -> None:
    """Where the turn's user message is in the paused turn, and its images for the model."""
    if turn.paused is not None and turn.results is not None:  # paused again: as it was
        paused.user_at, paused.llm_user = turn.paused.user_at, turn.paused.llm_user
        return
    if turn.user_for_history is None:
        return
    paused.user_at = len(paused.messages) - 1
    while paused.user_at >= 0 and paused.messages[paused.user_at] is not turn.user_for_history:
        paused.user_at -= 1
    if turn.user_for_llm is not turn.user_for_history:
        paused.llm_user = turn.user_for_llm


def _user_text(new: list[dict[str, Any]]) -> str:
    """The text of the turn's user message (for tools.requireUserRequest)."""
    for m in reversed(new):
        if m.get("role") == "user":
            return _text(m.get("content"))
    return ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""
