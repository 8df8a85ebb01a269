"""responses_encode: drain the agent's events into one ``response`` object or its SSE events.

The same agent events as Chat Completions' ``encode``, in the Responses
wire format (``nanobot/responses/protocol.py``). With ``store`` the response
is saved before it is answered: once a client has the response (or its
``response.completed`` event), ``GET`` and ``previous_response_id`` find it.
Streaming: ``response.created`` and ``response.in_progress`` go out the
moment the turn starts; a failure after them is ``response.failed``
(``ctx.failure_frame``, written by the handler); pings and a client that
leaves are handled as for Chat Completions.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, cast

import orjson

from nanobot.agent.loop import ToolProgress, TurnDone
from nanobot.context import RequestContext
from nanobot.errors import ApiError
from nanobot.protocol import Usage
from nanobot.responses.protocol import (
    EventEncoder,
    function_call_item,
    message_item,
    new_function_call_id,
    new_message_id,
    new_response_id,
    now,
    output_text,
    response_object,
)
from nanobot.responses.request import ResponsesRequest
from nanobot.responses.store import StoredResponse
from stages.encode import Heartbeat


async def _store(
    ctx: RequestContext, request: ResponsesRequest, body: dict[str, Any], raw: bytes, done: TurnDone
) -> None:
    if not request.store:
        return
    await ctx.services.responses.save(
        StoredResponse(
            id=body["id"],
            session_id=ctx.session_id,
            previous_id=request.previous_response_id,
            created=time.time(),
            body=body,
            items=request.items,
            messages=request.prefix + done.messages,
            raw=raw,
        )
    )


# Opt-in (``stream_options.include_tool_events``): the server's tools as they run,
# in an event of this server's own (no OpenAI event says this).
TOOL_EVENT = "nanobot.tool"


def tool_event(event: ToolProgress) -> dict[str, Any]:
    body: dict[str, Any] = {"name": event.name, "status": event.status, "id": event.id}
    if event.ok is not None:
        body["ok"] = event.ok
    return body


def client_calls(done: TurnDone) -> list[Any]:
    """The client function calls the turn paused on (``TurnDone.tool_calls``, once the client-tools core is in)."""
    return list(getattr(done, "tool_calls", None) or [])


class ResponsesEncode:
    name = "responses_encode"
    requires = (
        "events",
        "stream",
        "responses",
        "session_id",
        "response",
        "response_headers",
        "started",
        "services",
        "include_tool_events",
    )
    provides = ("headers_sent", "failure_frame")

    async def __call__(self, ctx: RequestContext) -> None:
        # run_agent and responses_validate wrote these: the pipeline checked the order at start-up.
        events = cast(AsyncIterator[Any], ctx.events)
        request = cast(ResponsesRequest, ctx.responses)
        if ctx.stream:
            await self._stream(ctx, request, events)
        else:
            await self._json(ctx, request, events)

    async def _json(self, ctx: RequestContext, request: ResponsesRequest, events: AsyncIterator[Any]) -> None:
        response_id, created = new_response_id(), now()
        done: TurnDone | None = None
        async for event in events:
            if isinstance(event, TurnDone):
                done = event
        assert done is not None
        calls = client_calls(done)
        output = [message_item(new_message_id(), done.text)] if done.text or not calls else []
        output += [function_call_item(new_function_call_id(), c.id, c.name, c.arguments) for c in calls]
        body = response_object(
            request.shape,
            response_id,
            created,
            status="completed",
            output=output,
            usage=done.usage,
            completed_at=now(),
        )
        raw = orjson.dumps(body)
        await _store(ctx, request, body, raw, done)
        response = ctx.response
        for name, value in ctx.response_headers.items():
            response.set_header(name, value)
        response.set_header("Content-Type", "application/json")
        response.write(raw)

    async def _stream(self, ctx: RequestContext, request: ResponsesRequest, events: AsyncIterator[Any]) -> None:
        response = ctx.response
        for name, value in ctx.response_headers.items():
            response.set_header(name, value)
        response.set_header("Content-Type", "text/event-stream; charset=utf-8")
        response.set_header("Cache-Control", "no-cache")
        response.set_header("X-Accel-Buffering", "no")
        shape, response_id, created = request.shape, new_response_id(), now()
        enc = EventEncoder()
        started = orjson.dumps(response_object(shape, response_id, created, status="in_progress", output=[]))
        response.write(enc.lifecycle("response.created", started))
        ctx.headers_sent = True

        def failed(err: ApiError) -> bytes:
            body = response_object(shape, response_id, created, status="failed", output=[], error=err)
            return enc.lifecycle("response.failed", orjson.dumps(body))

        ctx.failure_frame = failed
        await response.flush()
        await _send(ctx, enc.lifecycle("response.in_progress", started))
        heartbeat = Heartbeat(ctx, ctx.services.config.api.ping_interval)
        metrics = ctx.services.metrics
        metrics.open_streams.inc()
        tool_events = ctx.include_tool_events
        item_id = ""
        deltas = 0
        usage = Usage()
        done: TurnDone | None = None
        try:
            async for event in events:
                if type(event) is str:
                    if not deltas:
                        metrics.ttft.observe(heartbeat.now() - ctx.started)
                        item_id = new_message_id()
                        for opening in self._open_message(enc, item_id):
                            await _send(ctx, opening)
                    frame = enc.delta(event)
                    deltas += 1
                elif type(event) is ToolProgress:
                    if not tool_events:
                        continue  # server tools are not in the standard events
                    frame = enc.frame(TOOL_EVENT, tool_event(event))
                else:
                    done = event
                    usage = event.usage
                    continue
                heartbeat.touch()
                backlog = response.send_frame(frame)
                if backlog is not None:
                    await backlog
        finally:
            heartbeat.stop()
            metrics.open_streams.dec()
            metrics.tokens.inc(deltas)
            metrics.completion_tokens.inc(usage.completion_tokens or deltas)
        assert done is not None
        calls = client_calls(done)
        output: list[dict[str, Any]] = []
        if item_id or not calls:
            if not item_id:  # an empty reply: its message item all the same
                item_id = new_message_id()
                for opening in self._open_message(enc, item_id):
                    await _send(ctx, opening)
            text = done.text
            where = {"item_id": item_id, "output_index": 0, "content_index": 0}
            item = message_item(item_id, text)
            await _send(ctx, enc.frame("response.output_text.done", {**where, "text": text, "logprobs": []}))
            await _send(ctx, enc.frame("response.content_part.done", {**where, "part": output_text(text)}))
            await _send(ctx, enc.frame("response.output_item.done", {"output_index": 0, "item": item}))
            output.append(item)
        for call in calls:
            output.append(await self._function_call(ctx, enc, len(output), call))
        body = response_object(
            shape, response_id, created, status="completed", output=output, usage=done.usage, completed_at=now()
        )
        raw = orjson.dumps(body)
        await _store(ctx, request, body, raw, done)
        await _send(ctx, enc.lifecycle("response.completed", raw))

    @staticmethod
    async def _function_call(ctx: RequestContext, enc: EventEncoder, index: int, call: Any) -> dict[str, Any]:
        """One client function call's events (its arguments in one delta: they arrive whole); its item."""
        item_id = new_function_call_id()
        started = function_call_item(item_id, call.id, call.name, "", "in_progress")
        where = {"item_id": item_id, "output_index": index}
        await _send(ctx, enc.frame("response.output_item.added", {"output_index": index, "item": started}))
        await _send(ctx, enc.frame("response.function_call_arguments.delta", {**where, "delta": call.arguments}))
        await _send(ctx, enc.frame("response.function_call_arguments.done", {**where, "arguments": call.arguments}))
        item = function_call_item(item_id, call.id, call.name, call.arguments)
        await _send(ctx, enc.frame("response.output_item.done", {"output_index": index, "item": item}))
        return item

    @staticmethod
    def _open_message(enc: EventEncoder, item_id: str) -> tuple[bytes, bytes]:
        enc.start_text(item_id, 0)
        added = enc.frame(
            "response.output_item.added", {"output_index": 0, "item": message_item(item_id, None, "in_progress")}
        )
        part = enc.frame(
            "response.content_part.added",
            {"item_id": item_id, "output_index": 0, "content_index": 0, "part": output_text("")},
        )
        return added, part


async def _send(ctx: RequestContext, frame: bytes) -> None:
    """One event, one write, at once (waiting only while the client is not keeping up)."""
    backlog = ctx.response.send_frame(frame)
    if backlog is not None:
        await backlog


stage = ResponsesEncode()
