"""encode: drain the agent's events into one JSON body or SSE frames.

Streaming: the headers and the role chunk go out the moment the turn starts
(``ctx.headers_sent`` is then true, and any later failure becomes an SSE
error frame, written by the handler). Every frame is flushed as produced; a
``: ping`` comment keeps a silent stream (tools running) alive.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

from nanobot.agent.loop import ToolProgress, TurnDone
from nanobot.context import RequestContext
from nanobot.errors import ClientDisconnected
from nanobot.idle_clock import IdleClock
from nanobot.protocol import DONE_FRAME, PING_FRAME, ChunkEncoder, Usage, completion_body


class Heartbeat:
    """Writes ``: ping`` when nothing was sent for ``interval`` seconds.

    All of a loop's open streams share one timer (:class:`IdleClock`).
    """

    __slots__ = ("_ctx", "_loop", "_clock", "last")

    def __init__(self, ctx: RequestContext, interval: float) -> None:
        self._ctx = ctx
        self._loop = loop = asyncio.get_running_loop()
        self._clock = IdleClock.of(loop, interval)
        self.last = loop.time()
        self._clock.add(self, loop)

    def now(self) -> float:
        return self._loop.time()

    def touch(self) -> None:
        self.last = self._loop.time()

    def idle(self, now: float) -> bool:
        """Ping; False once the client has left (no more pings then)."""
        try:
            self._ctx.response.send_frame(PING_FRAME)
        except ClientDisconnected:
            # A loop callback has nobody to raise to: stop pinging; the
            # turn sees the closed connection at its next frame (or is
            # cancelled by the handler's on_connection_close).
            return False
        self.last = now
        return True

    def stop(self) -> None:
        self._clock.remove(self)


class Encode:
    name = "encode"
    requires = (
        "events",
        "stream",
        "model",
        "include_usage",
        "include_tool_events",
        "response",
        "response_headers",
        "started",
        "services",
    )
    provides = ("headers_sent",)

    async def __call__(self, ctx: RequestContext) -> None:
        # run_agent wrote it: the pipeline checked the order at start-up.
        events = cast(AsyncIterator[Any], ctx.events)
        if ctx.stream:
            await self._stream(ctx, events)
        else:
            await self._json(ctx, events)

    async def _json(self, ctx: RequestContext, events: AsyncIterator[Any]) -> None:
        done: TurnDone | None = None
        async for event in events:
            if type(event) is TurnDone:
                done = event
        assert done is not None
        response = ctx.response
        for name, value in ctx.response_headers.items():
            response.set_header(name, value)
        response.set_header("Content-Type", "application/json")
        response.write(completion_body(ctx.model, done.text, done.usage, done.tool_calls))

    async def _stream(self, ctx: RequestContext, events: AsyncIterator[Any]) -> None:
        response = ctx.response
        for name, value in ctx.response_headers.items():
            response.set_header(name, value)
        response.set_header("Content-Type", "text/event-stream; charset=utf-8")
        response.set_header("Cache-Control", "no-cache")
        response.set_header("X-Accel-Buffering", "no")
        encoder = ChunkEncoder(ctx.model, ctx.include_usage)
        response.write(encoder.role())
        ctx.headers_sent = True
        await response.flush()
        heartbeat = Heartbeat(ctx, ctx.services.config.api.ping_interval)
        tool_events = ctx.include_tool_events
        usage = Usage()
        calls = None
        metrics = ctx.services.metrics
        metrics.open_streams.inc()
        deltas = 0
        try:
            async for event in events:
                if type(event) is str:
                    if not deltas:
                        metrics.ttft.observe(heartbeat.now() - ctx.started)
                    deltas += 1
                    frame = encoder.content(event)
                elif type(event) is ToolProgress:
                    if not tool_events:
                        continue
                    frame = encoder.tool_event(event.name, event.status, event.id, event.ok)
                else:
                    usage = event.usage
                    calls = event.tool_calls
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
        if calls:  # the turn paused on the client's calls
            tail = encoder.tool_calls(calls) + encoder.stop("tool_calls")
        else:
            tail = encoder.stop()
        if ctx.include_usage:
            tail += encoder.usage(usage)
        response.write(tail + DONE_FRAME)


stage = Encode()
