"""Client function tools: the tools a request brings, and a turn paused on their calls.

Independent of any wire format: the Chat Completions stages (and any other
API) read their own request shapes into :class:`ClientTool` objects with
:func:`client_tool`, and encode :class:`~nanobot.providers.base.ToolCall`
lists back; the agent loop works only with what is here. A reply that calls
a client tool pauses the turn (:class:`PausedTurn`); the next request on the
session resumes it with the client's results (:func:`check_results`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from nanobot.errors import InvalidRequest

MAX_CLIENT_TOOLS = 128  # as OpenAI
# One tool's JSON, and all of them: they ride along on every LLM call of the turn.
MAX_TOOL_BYTES = 64 * 1024
MAX_TOOLS_BYTES = 512 * 1024
TOOL_NAME_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
TOOL_NAME = re.compile(TOOL_NAME_PATTERN)
TOOL_CHOICE_MODES = ("auto", "none", "required")
NO_RESULT = "Error: no result from the client"


@dataclass(frozen=True, slots=True)
class ClientTool:
    """One function tool that runs on the client."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    def schema(self) -> dict[str, Any]:
        """The tool as the model is offered it (the Chat Completions ``tools`` entry)."""
        function: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            function["description"] = self.description
        if self.parameters is not None:
            function["parameters"] = self.parameters
        if self.strict is not None:
            function["strict"] = self.strict
        return {"type": "function", "function": function}


@dataclass(slots=True)
class ClientTools:
    """A request's client tools and how the model may use them.

    ``encoded`` is the tools' JSON, made once per request: the provider adds
    it beside the server tools' JSON (made once per process) on every call.
    """

    tools: tuple[ClientTool, ...] = ()
    names: frozenset[str] = frozenset()
    encoded: bytes = b""  # the JSON list items, without the brackets
    tool_choice: str | None = None  # "auto" | "none" | "required" | None (not sent)
    forced: str | None = None  # tool_choice naming one tool: its name
    parallel_tool_calls: bool | None = None

    def choice(self, first_call: bool) -> Any:
        """The ``tool_choice`` of one LLM call (None: not sent).

        A choice that forces a call ("required", a named tool) holds for the
        request's first call only: the calls after it would otherwise loop.
        """
        if self.forced is not None:
            return {"type": "function", "function": {"name": self.forced}} if first_call else None
        if self.tool_choice == "required" and not first_call:
            return None
        return self.tool_choice


def client_tool(
    name: Any, description: Any, parameters: Any, strict: Any, param: str, server: Any, seen: Any
) -> tuple[ClientTool, bytes]:
    """One checked tool and its JSON; ``server`` holds the server tools' names, ``seen`` the request's earlier ones."""
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{param}: a function tool needs a name.", param="tools", code="invalid_tool")
    if not TOOL_NAME.fullmatch(name):
        raise InvalidRequest(
            f"{param}: the tool name {name[:80]!r} must be 1 to 64 letters, digits, '_' or '-'.",
            param="tools",
            code="invalid_tool_name",
        )
    if name in server:
        raise InvalidRequest(
            f"{param}: the tool name {name!r} is one of this server's own tools; rename the client tool.",
            param="tools",
            code="tool_name_collision",
        )
    if name in seen:
        raise InvalidRequest(
            f"{param}: the tool name {name!r} is used by two tools.", param="tools", code="duplicate_tool_name"
        )
    if description is not None and not isinstance(description, str):
        raise InvalidRequest(f"{param}: description must be a string.", param="tools", code="invalid_tool")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidRequest(
            f"{param}: parameters of tool {name!r} must be a JSON Schema object.",
            param="tools",
            code="invalid_tool_parameters",
        )
    if strict is not None and not isinstance(strict, bool):
        raise InvalidRequest(f"{param}: strict must be a boolean.", param="tools", code="invalid_tool")
    tool = ClientTool(name, description, parameters, strict)
    try:
        encoded = orjson.dumps(tool.schema())
    except (TypeError, orjson.JSONEncodeError):  # nested too deep
        raise InvalidRequest(f"{param}: the schema of tool {name!r} cannot be read.", param="tools") from None
    if len(encoded) > MAX_TOOL_BYTES:
        raise InvalidRequest(
            f"{param}: the schema of tool {name!r} is {len(encoded)} bytes; at most {MAX_TOOL_BYTES} are accepted.",
            param="tools",
            code="tool_schema_too_large",
        )
    return tool, encoded


@dataclass(frozen=True, slots=True)
class ToolSet:
    """A checked list of client tools, whatever ``tool_choice`` a request pairs it with."""

    tools: tuple[ClientTool, ...]
    names: frozenset[str]
    encoded: bytes  # the JSON list items, without the brackets


def tool_set(tools: list[tuple[ClientTool, bytes]]) -> ToolSet:
    """The tools of one request (each checked by :func:`client_tool`) as one set, within the limits."""
    if len(tools) > MAX_CLIENT_TOOLS:
        raise InvalidRequest(
            f"tools holds {len(tools)} tools; at most {MAX_CLIENT_TOOLS} are accepted.",
            param="tools",
            code="too_many_tools",
        )
    encoded = b",".join(e for _, e in tools)
    if len(encoded) > MAX_TOOLS_BYTES:
        raise InvalidRequest(
            f"The tools' schemas hold {len(encoded)} bytes; at most {MAX_TOOLS_BYTES} are accepted.",
            param="tools",
            code="tool_schema_too_large",
        )
    return ToolSet(tuple(t for t, _ in tools), frozenset(t.name for t, _ in tools), encoded)


def with_choice(tools: ToolSet, tool_choice: Any, parallel_tool_calls: Any, forced: str | None) -> ClientTools:
    """``tools`` with a request's ``tool_choice`` (``forced``: the tool a named choice picks)."""
    if forced is not None and forced not in tools.names:
        raise InvalidRequest(
            f"tool_choice names the tool {forced!r}, which is not in this request's tools.",
            param="tool_choice",
            code="unknown_tool",
        )
    if tool_choice is not None and tool_choice not in TOOL_CHOICE_MODES:
        raise InvalidRequest('tool_choice must be "auto", "none", "required" or a named function.', param="tool_choice")
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise InvalidRequest("parallel_tool_calls must be a boolean.", param="parallel_tool_calls")
    return ClientTools(
        tools=tools.tools,
        names=tools.names,
        encoded=tools.encoded,
        tool_choice=tool_choice,
        forced=forced,
        parallel_tool_calls=parallel_tool_calls,
    )


@dataclass(slots=True)
class ClientResult:
    """The client's result for one call, and where the request carried it."""

    call_id: str
    content: str
    param: str


@dataclass(slots=True)
class PausedTurn:
    """A turn waiting for the client's results, kept in the session store.

    ``messages`` is the turn so far as history keeps it, ending with the
    assistant message whose calls wait; ``results`` the server tools' results
    of that message (by call id), ``pending`` the client's calls (in order).
    """

    messages: list[dict[str, Any]]
    results: dict[str, str]
    pending: list[str]
    iterations: int  # LLM calls the turn has made
    user_at: int = -1  # the user message's index in ``messages`` (-1: none)
    llm_user: dict[str, Any] | None = None  # that message as the model saw it, when it differs (images)
    names: dict[str, str] = field(default_factory=dict)  # call id -> tool name, for messages

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "messages": self.messages,
                "results": self.results,
                "pending": self.pending,
                "iterations": self.iterations,
                "user_at": self.user_at,
                "llm_user": self.llm_user,
                "names": self.names,
            }
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> PausedTurn:
        d = orjson.loads(data)
        return cls(
            messages=d["messages"],
            results=d["results"],
            pending=d["pending"],
            iterations=d["iterations"],
            user_at=d.get("user_at", -1),
            llm_user=d.get("llm_user"),
            names=d.get("names", {}),
        )

    def closed(self, client: dict[str, str]) -> list[dict[str, Any]]:
        """The turn so far with every call answered, in call order (a pending call without a result: NO_RESULT)."""
        calls = self.messages[-1].get("tool_calls") or []
        answers = []
        for call in calls:
            call_id = call["id"]
            content = self.results.get(call_id)
            if content is None:
                content = client.get(call_id, NO_RESULT)
            answers.append({"role": "tool", "tool_call_id": call_id, "content": content})
        return [*self.messages, *answers]

    def for_llm(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``messages`` (from :meth:`closed`) as the model is sent them: the user message with its images."""
        if self.llm_user is None or not 0 <= self.user_at < len(messages):
            return messages
        out = list(messages)
        out[self.user_at] = self.llm_user
        return out


def check_results(paused: PausedTurn | None, results: list[ClientResult], where: str) -> dict[str, str]:
    """The client's results by call id; 400 unless they answer exactly the pending calls.

    ``where`` is the request field that holds the results (``messages``).
    """
    if paused is None:
        first = results[0]
        raise InvalidRequest(
            f"The request carries the result of tool call {first.call_id!r}, but this session has no turn "
            "waiting for tool results: send a user message.",
            param=first.param,
            code="no_pending_tool_calls",
        )
    pending = set(paused.pending)
    out: dict[str, str] = {}
    for result in results:
        if result.call_id not in pending:
            waiting = ", ".join(paused.pending)
            raise InvalidRequest(
                f"The tool call {result.call_id!r} is not waiting for a result (waiting: {waiting}).",
                param=result.param,
                code="unknown_tool_call_id",
            )
        if result.call_id in out:
            raise InvalidRequest(
                f"The tool call {result.call_id!r} is answered twice.", param=result.param, code="duplicate_tool_result"
            )
        out[result.call_id] = result.content
    missing = [i for i in paused.pending if i not in out]
    if missing:
        named = ", ".join(f"{i} ({paused.names.get(i, 'tool')})" for i in missing)
        raise InvalidRequest(
            f"The results of tool calls {named} are missing: answer every pending call in one request.",
            param=where,
            code="missing_tool_results",
        )
    return out
