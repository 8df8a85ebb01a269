"""A minimal HTTP/1.1 keep-alive client connection as an asyncio Protocol.

Why hand-written: a Python load generator is easily the bottleneck of the
benchmark it runs. A Protocol gets bytes straight from the event loop (no
StreamReader layers, no per-line coroutine switches) and the parser does the
least it can: httptools (llhttp) frames the response (Content-Length,
chunked or until-close, keep-alive or not). Streamed bodies are split into SSE events; only `data:`
payloads are decoded with orjson, and the arrival time of each content chunk
is the `perf_counter()` read when its bytes reached `data_received`.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httptools
import orjson

BODY_KEEP = 2048  # bytes of a response body kept (enough to check and to quote)
WRITE_SLICE = 256 * 1024


class RequestFailed(Exception):
    """The connection broke or timed out before the response was complete."""


class Response:
    """What one request produced; stream figures are filled for SSE bodies."""

    __slots__ = (
        "status",
        "body",
        "t0",
        "t_end",
        "ttft",
        "gaps",
        "tokens",
        "completion_tokens",
        "done",
        "sse_error",
        "_sse",
        "_last",
        "_on_data",
    )

    def __init__(self, t0: float, stream: bool, api: str = "chat") -> None:
        self.status = 0
        self.body = bytearray()
        self.t0 = t0
        self.t_end = 0.0
        self.ttft: float | None = None
        self.gaps: list[float] = []
        self.tokens = 0  # content deltas (a word each from the scripted upstream)
        self.completion_tokens = 0  # from the stream's usage chunk
        self.done = False
        self.sse_error: str | None = None
        self._sse: bytearray | None = bytearray() if stream else None
        self._last = 0.0
        # Chosen once per response, so the per-event code does not test the api.
        self._on_data = self._responses_data if api == "responses" else self._data

    def feed(self, data: bytes, now: float) -> None:
        """Body bytes arrived at `now` (already de-chunked)."""
        if self._sse is None or self.status != 200:  # an error answer to a stream request is not SSE: keep it
            if len(self.body) < BODY_KEEP:
                self.body += data[: BODY_KEEP - len(self.body)]
            return
        sse = self._sse
        sse += data
        if b"\r" in data:
            sse[:] = sse.replace(b"\r\n", b"\n")
        on_data = self._on_data
        while (end := sse.find(b"\n\n")) != -1:
            event = bytes(sse[:end])
            del sse[: end + 2]
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    on_data(line[5:].strip(), now)

    def _data(self, payload: bytes, now: float) -> None:
        if payload == b"[DONE]":
            self.done = True
            return
        obj = self._decoded(payload)
        if not isinstance(obj, dict):
            return
        if obj.get("error") is not None:
            error = obj["error"]
            kind = error.get("type") if isinstance(error, dict) else None
            self.sse_error = f"SSE error frame: {kind or error}"
            return
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.completion_tokens += int(usage.get("completion_tokens") or 0)
        choices = obj.get("choices")
        if not choices:
            return
        delta = choices[0].get("delta") or {}
        if delta.get("content"):
            self._token(now)

    def _decoded(self, payload: bytes) -> Any:
        """One event's JSON (None if it is not JSON, noted once), its start kept for the report."""
        if len(self.body) < BODY_KEEP:
            self.body += payload[: BODY_KEEP - len(self.body)]
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            self.sse_error = self.sse_error or "bad SSE JSON"
            return None

    def _token(self, now: float) -> None:
        self.tokens += 1
        if self.ttft is None:
            self.ttft = now - self.t0
        else:
            self.gaps.append(now - self._last)
        self._last = now

    def _responses_data(self, payload: bytes, now: float) -> None:
        """One Responses API event (`data:` holds its `type`; no `[DONE]`, `response.completed` ends it)."""
        if payload.startswith(_DELTA):  # the server writes `type` first: no JSON decode per token
            self._token(now)
            return
        obj = self._decoded(payload)
        kind = obj.get("type") if isinstance(obj, dict) else None
        if kind == "response.output_text.delta":
            self._token(now)
        elif kind == "response.completed":
            self.done = True
            usage = (obj.get("response") or {}).get("usage")
            if isinstance(usage, dict):
                self.completion_tokens += int(usage.get("output_tokens") or 0)
        elif kind in ("response.failed", "error"):
            error = obj.get("error") or (obj.get("response") or {}).get("error") or {}
            code = error.get("code") if isinstance(error, dict) else error
            self.sse_error = f"SSE {kind}: {code}"


_DELTA = b'{"type":"response.output_text.delta"'


class Conn(asyncio.Protocol):
    """One client connection; `request()` sends a request and awaits its response.

    Responses are parsed by httptools (llhttp): status, Content-Length,
    chunked or until-close framing, keep-alive. Each body piece is timed at
    the `data_received` that brought it.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.keep_alive = True
        self.closed = False
        self.resp: Response | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.fail_reason = "connection closed"
        self._drain: asyncio.Future[None] | None = None
        self._paused = False
        self._now = 0.0
        self._head_done = False
        self._framed = False  # Content-Length or chunked: the body does not end at close

    @classmethod
    async def open(cls, host: str, port: int) -> Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(cls, host, port)
        return conn

    # -- asyncio.Protocol ------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.resp is not None and self._head_done and not self._framed:
            self._finish()  # a body delimited by the close
        elif self.waiter is not None and not self.waiter.done():
            reason = self.fail_reason if exc is None else f"{self.fail_reason}: {exc}"
            self.waiter.set_exception(RequestFailed(reason))
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.resp is None:
            return  # nothing asked: bytes after a finished response are dropped
        self._now = time.perf_counter()
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:  # not a subclass
            reason = f"malformed response: {exc}"
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(RequestFailed(reason))
            self.abort(reason)

    # -- httptools callbacks -----------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        assert self.resp is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            self._framed = False
            return
        self.resp.status = status
        self.keep_alive = self.parser.should_keep_alive()
        self._head_done = True

    def on_body(self, body: bytes) -> None:
        if self.resp is not None:
            self.resp.feed(body, self._now)

    def on_message_complete(self) -> None:
        if self.resp is not None and self._head_done:  # else the end of an interim answer
            self._finish()

    # -- client side ------------------------------------------------------
    def _finish(self) -> None:
        resp, waiter = self.resp, self.waiter
        self.resp, self.waiter = None, None
        assert resp is not None
        resp.t_end = time.perf_counter()
        if not self.keep_alive and self.transport is not None:
            self.transport.close()
            self.closed = True
        if waiter is not None and not waiter.done():
            waiter.set_result(resp)

    def abort(self, reason: str) -> None:
        """Drop the connection; a pending request fails with `reason`."""
        self.fail_reason = reason
        if self.transport is not None:
            self.transport.abort()

    async def request(
        self, head: bytes, body: bytes = b"", stream: bool = False, timeout: float = 60.0, api: str = "chat"
    ) -> Response:
        """Send `head` + `body`, await the whole response (at most `timeout` s)."""
        if self.closed or self.transport is None:
            raise RequestFailed("connection closed")
        loop = asyncio.get_running_loop()
        resp = Response(time.perf_counter(), stream, api)
        self.resp, self._head_done, self._framed = resp, False, False
        waiter: asyncio.Future[Response] = loop.create_future()
        self.waiter = waiter
        timer = loop.call_later(timeout, self.abort, "timeout")
        try:
            if len(body) <= WRITE_SLICE:
                self.transport.write(head + body)
            else:
                await self._write_big(head, body)
            return await waiter
        finally:
            timer.cancel()

    async def _write_big(self, head: bytes, body: bytes) -> None:
        """Write a large body in slices, honouring the transport's flow control."""
        assert self.transport is not None
        self.transport.write(head)
        view = memoryview(body)
        for offset in range(0, len(view), WRITE_SLICE):
            if self.closed:
                return
            self.transport.write(view[offset : offset + WRITE_SLICE])
            if self._paused:
                self._drain = asyncio.get_running_loop().create_future()
                await self._drain
                self._drain = None

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
            self.closed = True
