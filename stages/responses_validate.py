"""responses_validate: a ``POST /v1/responses`` body into the same checked turn as Chat Completions.

The wire format's rules are in ``nanobot/responses/request.py``; here the
turn's fields of the context are filled (text, files, instructions, model,
stream, session) and ``previous_response_id`` is looked up: the chain's
context (its last ``maxHistoryMessages``) and this request's earlier input
items become ``client_history``, so ``resolve_session`` and ``run_agent``
run the turn exactly as for a Chat Completions request that brings its
conversation. The session (tools, workspace, ordering) is the chain's.
"""

from __future__ import annotations

from typing import Any

from nanobot.client_messages import MAX_INSTRUCTION_CHARS
from nanobot.client_tools import client_tool, tool_set, with_choice
from nanobot.context import RequestContext
from nanobot.errors import InvalidRequest, UnsupportedMediaType
from nanobot.request_options import check_response_format, structured_output
from nanobot.responses.protocol import ResponseShape
from nanobot.responses.request import (
    TRUNCATIONS,
    InputReader,
    ResponsesRequest,
    Turn,
    read_metadata,
    read_text_format,
    read_tool_choice,
    read_tools,
)
from nanobot.sessions.budget import bound_chars, trim_window
from stages.validate import TURN_FIELDS, VALIDATE_REQUIRES, _check_model, _check_session_id


def _optional(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = body.get(name)
    if value is not None and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
        raise InvalidRequest(f"{name} must be {what}.", param=name)
    return value


def client_function_tools(ctx: RequestContext, request: ResponsesRequest) -> None:
    """Client function tools on /v1/responses, through the same core as Chat Completions.

    ``request.function_tools`` are checked by ``nanobot.client_tools`` (the
    same names, limits and collisions) and offered beside the server's
    tools; ``function_call``/``function_call_output`` items are already in
    ``ctx.client_history`` as the assistant ``tool_calls`` and ``tool``
    messages they stand for, and an input that ends with outputs
    (``request.resumes``) goes on from them with no user message. Calls of
    the client's tools end the turn as ``TurnDone.tool_calls``, which
    ``responses_encode`` answers as ``function_call`` items.
    """
    shape = request.shape
    choice, forced = shape.tool_choice, None
    if isinstance(choice, dict):  # {"type": "function", "name": ...}: the Responses spelling
        name = choice.get("name")
        if choice.get("type") != "function" or not isinstance(name, str) or not name:
            raise InvalidRequest(
                'tool_choice must be "auto", "none", "required" or {"type": "function", "name": ...}.',
                param="tool_choice",
            )
        choice, forced = None, name
    ctx.resumes = request.resumes
    _check_outputs_answer_calls(ctx.client_history or [])
    if not request.function_tools and choice == "auto" and forced is None:
        return  # the server's own tools only: nothing to check
    server = ctx.services.agent.tools.names
    seen: set[str] = set()
    checked = []
    for i, tool in enumerate(request.function_tools):
        one = client_tool(tool.name, tool.description, tool.parameters, tool.strict, f"tools[{i}]", server, seen)
        seen.add(one[0].name)
        checked.append(one)
    ctx.client_tools = with_choice(tool_set(checked), choice, shape.parallel_tool_calls, forced)


def _check_outputs_answer_calls(conversation: list[dict[str, Any]]) -> None:
    """Each ``function_call_output`` answers a call of the chain or of this input (OpenAI refuses it otherwise)."""
    calls: set[str] = set()
    for message in conversation:
        for call in message.get("tool_calls") or ():
            calls.add(call["id"])
        if message.get("role") == "tool" and message.get("tool_call_id") not in calls:
            raise InvalidRequest(
                f"No function call with call_id {message.get('tool_call_id')!r} is found for a function_call_output "
                "item: send previous_response_id of the response that made the call, or the function_call item.",
                param="input",
                code="unknown_tool_call_id",
            )


class ResponsesValidate:
    name = "responses_validate"
    requires = VALIDATE_REQUIRES
    provides = (*TURN_FIELDS, "responses")

    async def __call__(self, ctx: RequestContext) -> None:
        body = ctx.payload
        if body is None:
            raise UnsupportedMediaType(
                "The Responses API takes a JSON body: send Content-Type: application/json.",
                code="unsupported_content_type",
            )
        services = ctx.services
        api = services.config.api
        _check_model(ctx, body.get("model"))
        ctx.stream = bool(_optional(body, "stream", bool, "a boolean"))
        options = _optional(body, "stream_options", dict, "an object")
        ctx.include_tool_events = bool(options) and options.get("include_tool_events") is True
        store = _optional(body, "store", bool, "a boolean")
        if _optional(body, "background", bool, "a boolean"):
            raise InvalidRequest(
                "background responses are not supported: the turn runs while the request is open.",
                param="background",
                code="unsupported_parameter",
            )
        if body.get("conversation") is not None:
            raise InvalidRequest(
                "conversation objects are not supported: chain responses with previous_response_id.",
                param="conversation",
                code="unsupported_parameter",
            )
        instructions = _optional(body, "instructions", str, "a string")
        previous = _optional(body, "previous_response_id", str, "a string")
        text_format, ctx.response_format = read_text_format(body.get("text"))
        if ctx.response_format is not None:
            try:
                check_response_format(ctx.response_format, structured_output(services.config))
            except InvalidRequest as err:
                err.param = "text.format"
                raise
        truncation = body.get("truncation")
        if truncation is not None and truncation not in TRUNCATIONS:
            raise InvalidRequest("truncation must be auto or disabled.", param="truncation")
        parallel = _optional(body, "parallel_tool_calls", bool, "a boolean")
        user = body.get("user")
        shape = ResponseShape(
            model=ctx.model,
            instructions=instructions,
            previous_response_id=previous,
            store=store is not False,
            metadata=read_metadata(body.get("metadata")),
            tool_choice=read_tool_choice(body.get("tool_choice")),
            parallel_tool_calls=parallel is not False,
            temperature=services.config.agents.defaults.temperature,
            max_output_tokens=services.config.agents.defaults.max_tokens,
            truncation=truncation or "disabled",
            user=user if isinstance(user, str) else None,
            text_format=text_format,
        )
        request = ResponsesRequest(shape=shape, previous_response_id=previous, store=shape.store)
        request.function_tools = read_tools(body.get("tools"))
        turn = Turn()
        InputReader(api.client_system).read(body.get("input"), request, turn)
        ctx.text, ctx.files = turn.text, turn.files
        ctx.instructions = self._instructions(api.client_system, instructions, turn.instructions)
        session_id = _check_session_id(body.get("session_id"))
        header = ctx.headers.get("X-Session-Id")
        if header is not None:
            from_header = _check_session_id(header, "X-Session-Id")
            session_id = session_id if session_id is not None else from_header
        history: list[dict[str, Any]] = []
        if previous is not None:
            session_id, history = await self._chain(ctx, previous, session_id)
        ctx.session_id = session_id
        ctx.client_history = history + request.prefix
        ctx.responses = request
        client_function_tools(ctx, request)

    @staticmethod
    def _instructions(mode: str, given: str | None, from_items: str | None) -> str | None:
        if given is not None and len(given) > MAX_INSTRUCTION_CHARS:
            raise InvalidRequest(
                f"instructions holds {len(given)} characters; at most {MAX_INSTRUCTION_CHARS} are accepted.",
                param="instructions",
                code="instructions_too_long",
            )
        if given and mode == "reject":
            raise InvalidRequest(
                'This server takes no client instructions (api.clientSystem is "reject").',
                param="instructions",
                code="system_message_not_allowed",
            )
        if mode != "append":
            return None
        texts = [t for t in (given, from_items) if t and t.strip()]
        return "\n\n".join(texts) or None

    @staticmethod
    async def _chain(ctx: RequestContext, previous: str, session_id: str | None) -> tuple[str | None, list[Any]]:
        services = ctx.services
        defaults = services.config.agents.defaults
        chain = await services.responses.chain(
            previous, defaults.max_history_messages, services.response_cleaner.since()
        )
        if chain is None:
            raise InvalidRequest(
                f"Previous response with id '{previous}' not found (never stored, deleted, or expired).",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        if session_id is not None and session_id != chain.session_id:
            raise InvalidRequest(
                "previous_response_id belongs to another session than the one this request names.",
                param="previous_response_id",
                code="session_mismatch",
            )
        limit = defaults.max_history_messages
        window = trim_window(chain.messages[-limit:]) if limit > 0 else []
        return chain.session_id, bound_chars(window, defaults.max_history_chars)


stage = ResponsesValidate()
