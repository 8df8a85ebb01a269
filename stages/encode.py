"""encode: drain the agent's events into one JSON body or SSE frames.

Streaming: the headers and the role chunk go out the moment the turn starts
(``ctx.headers_sent`` is then true, and any later failure becomes an SSE
error frame, written by the handler). Every frame is flushed as produced; a
``: ping`` comment keeps a silent stream (tools running) alive.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from typing import Any, cast

from nanobot.agent.loop import ToolProgress, TurnDone
from nanobot.context import RequestContext
from nanobot.errors import ClientDisconnected
from nanobot.protocol import DONE_FRAME, PING_FRAME, ChunkEncoder, Usage, completion_body


class Heartbeat:
    """Writes ``: ping`` when nothing was sent for ``interval`` seconds."""

    __slots__ = ("_ctx", "_loop", "_clock", "last")

    def __init__(self, ctx: RequestContext, interval: float) -> None:
        self._ctx = ctx
        self._loop = loop = asyncio.get_running_loop()
        self._clock = PingClock.of(loop, interval)
        self.last = loop.time()
        self._clock.add(self)

    def now(self) -> float:
        return self._loop.time()

    def touch(self) -> None:
        self.last = self._loop.time()

    def ping(self, now: float) -> bool:
        """Send a ping; False once the client has left (no more pings then)."""
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


class PingClock:
    """One timer for the heartbeats of all of a loop's open streams (per interval).

    A timer per stream costs ~0.5 KB and a schedule and a cancel per stream.
    This one fires when the longest-silent stream is due, pings every stream
    silent for ``interval``, then waits for the next one due, and stops when
    no stream is left: each ping still goes out when its stream's silence
    reaches ``interval``. It holds no reference to its loop (the registry
    is keyed by the loop, weakly).
    """

    _clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, PingClock]] = weakref.WeakKeyDictionary()

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._streams: dict[Heartbeat, None] = {}  # an ordered set
        self._handle: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop, interval: float) -> PingClock:
        """``loop``'s clock for ``interval``."""
        clocks = cls._clocks.get(loop)
        if clocks is None:
            clocks = cls._clocks[loop] = {}
        clock = clocks.get(interval)
        if clock is None:
            clock = clocks[interval] = cls(interval)
        return clock

    def add(self, heartbeat: Heartbeat) -> None:
        self._streams[heartbeat] = None
        if self._handle is None:
            self._handle = heartbeat._loop.call_at(heartbeat.last + self._interval, self._tick)

    def remove(self, heartbeat: Heartbeat) -> None:
        self._streams.pop(heartbeat, None)
        if not self._streams and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        self._handle = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = now - self._interval * 0.999
        for heartbeat in list(self._streams):
            if heartbeat.last <= due and not heartbeat.ping(now):
                self._streams.pop(heartbeat, None)
        if self._handle is not None:  # a stream added by a ping's side effects already set one
            self._handle.cancel()
            self._handle = None
        if self._streams:
            oldest = min(heartbeat.last for heartbeat in self._streams)
            self._handle = loop.call_at(oldest + self._interval, self._tick)


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
