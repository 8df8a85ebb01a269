"""``POST /v1/chat/completions``: the body read as it arrives, then the pipeline.

The handler is a thin Tornado adapter: it counts the body against the
limits, builds the :class:`~nanobot.context.RequestContext`, runs the
pipeline under the request's deadline, and leaves how a failure ends to
:func:`~nanobot.server.lifecycle.ending`. Streamed frames go straight to the
socket (:meth:`ChatCompletionsHandler.send_frame`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from tornado.iostream import IOStream, StreamClosedError

from nanobot.context import RequestContext
from nanobot.errors import ApiError, ClientDisconnected, TooLarge, UpstreamError
from nanobot.multipart import MultipartReader
from nanobot.server.handlers import BaseHandler
from nanobot.server.lifecycle import CLIENT_CLOSED, Ending, ending
from nanobot.server.render import render_error

log = logging.getLogger("nanobot.server")


class ChatCompletionsHandler(BaseHandler):
    """``POST /v1/chat/completions``: run the pipeline, cancel it if the client leaves."""

    route = "/v1/chat/completions"

    _task: asyncio.Task[Any] | None = None
    _gated = False
    _held = 0  # body bytes counted against the "bodies" budget
    _ctx: RequestContext | None = None
    _multipart: MultipartReader | None = None
    _chunks: list[bytes]  # set by prepare() for each POST
    _size = 0
    _limit = 0
    _shutdown = False

    def end_for_shutdown(self) -> None:
        """Cancel this request's run; it answers 503 (or an SSE error frame)."""
        if self._task is not None and not self._task.done():
            self._shutdown = True
            self._task.cancel()

    def prepare(self) -> None:
        super().prepare()
        if self.request.method != "POST":
            return
        api = self.services.config.api
        self._chunks = []
        self._limit = api.max_body_bytes
        length = self.request.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > self._limit:
            raise self._too_large()
        content_type = self.request.headers.get("Content-Type", "")
        if content_type.split(";", 1)[0].strip().lower() == "multipart/form-data":
            self._multipart = MultipartReader(content_type, api.max_file_bytes)

    def _too_large(self) -> TooLarge:
        return TooLarge(f"The request body is larger than the limit of {self._limit} bytes.", code="body_too_large")

    def data_received(self, chunk: bytes) -> None:
        if self._finished or self.request.method != "POST":
            return  # other methods answer 405 and their bodies are dropped
        self._size += len(chunk)
        try:
            if self._size > self._limit:
                raise self._too_large()
            self.application.settings["bodies"].take(len(chunk))
            self._held += len(chunk)
            if self._multipart is not None:
                self._multipart.feed(chunk)
            else:
                self._chunks.append(chunk)
        except ApiError as err:
            self._chunks.clear()
            self._multipart = None
            # Finishing now makes Tornado drop the rest and close the connection.
            self.send_api_error(err)

    async def post(self) -> None:
        self._body_read = True
        if self._finished:
            return
        # The body is in: from now on the request counts against
        # api.maxConcurrentRequests instead of the bytes in flight.
        self._give_back_body()
        try:
            self.application.settings["gate"].enter(self)
        except ApiError as err:
            self.send_api_error(err)
            return
        self._gated = True
        services = self.services
        services.metrics.in_flight.inc()
        loop = asyncio.get_running_loop()
        chunks, self._chunks = self._chunks, []
        # Joining 10 MB is a copy long enough to notice on the loop (a
        # multipart body was parsed as it came and left no chunks).
        big = self._multipart is None and self._size >= 1024 * 1024
        body = await asyncio.to_thread(b"".join, chunks) if big else b"".join(chunks)
        now = loop.time()
        ctx = self._ctx = RequestContext(
            services=services,
            method="POST",
            path=self.request.path,
            headers=self.request.headers,
            body=body,
            response=self,
            request_id=self.request_id,
            started=now,
            deadline=now + services.config.api.timeout,
            multipart=self._multipart,
        )
        task = self._task = asyncio.current_task()
        assert task is not None
        try:
            async with asyncio.timeout_at(ctx.deadline):
                async with ctx.exit_stack:
                    await self.application.settings["pipeline"](ctx)
        except BaseException as exc:
            end = ending(
                exc,
                timeout=services.config.api.timeout,
                shutting_down=self._shutdown,
                client_gone=self._stream().closed(),
            )
            if end is None:
                raise
            self._end(ctx, end, task)
            return
        if not self._finished:
            self.finish()

    def _stream(self) -> IOStream:
        """The client's connection; Tornado types it loosely (any HTTP connection)."""
        stream: IOStream = self.request.connection.stream  # type: ignore[union-attr]
        return stream

    def _end(self, ctx: RequestContext, end: Ending, task: asyncio.Task[Any]) -> None:
        if end.consumed_cancel:
            task.uncancel()
        if end.unexpected:
            log.exception("turn failed (request %s)", self.request_id)
        if end.client_left:
            # The run is cancelled and the request is over: nothing to send.
            self._finished = True
            self.services.metrics.requests.labels(self.route, str(CLIENT_CLOSED)).inc()
        elif end.error is not None:
            self._fail(ctx, end.error)

    def send_frame(self, frame: bytes) -> Awaitable[None] | None:
        """One piece of a streamed (SSE) body, straight to the socket.

        Bypasses RequestHandler.write/flush and the HTTP/1.1 connection's
        per-call bookkeeping, which cost more than the send itself at one
        frame per token; the framing is Tornado's: a chunk for HTTP/1.1, the
        bare bytes for HTTP/1.0 (whose body ends when the connection closes,
        see :meth:`finish`; a proxy at its defaults speaks 1.0). With nothing
        queued the frame goes out in one ``send``; IOStream (its Future, its
        buffer) only takes what the socket would not. Only after flush()
        has sent the headers.
        """
        stream = self._stream()
        data = b"%x\r\n%s\r\n" % (len(frame), frame) if self.request.version == "HTTP/1.1" else frame
        if type(stream) is IOStream and not stream.writing() and not stream.closed():
            try:
                sent = stream.socket.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                stream.close(exc_info=exc)
                raise ClientDisconnected() from None
            if sent == len(data):
                return None
            data = data[sent:]
        try:
            fut = stream.write(data)
        except StreamClosedError:
            raise ClientDisconnected() from None
        return fut if stream.writing() else None

    def finish(self, chunk: Any = None) -> Any:
        """Finish; an HTTP/1.0 stream also closes the connection once it is sent.

        Such a body has neither length nor chunks, so the close is what ends
        it, even for a client that asked for keep-alive.
        """
        sent = super().finish(chunk)
        if self._ctx is not None and self._ctx.headers_sent and self.request.version != "HTTP/1.1":
            stream = self._stream()
            sent.add_done_callback(lambda _: stream.close())
        return sent

    def _fail(self, ctx: RequestContext, err: ApiError) -> None:
        if self._finished:
            return
        if err.status in (502, 504):
            # One line per failed turn, at the default level (the log filter masks secrets).
            log.warning(
                "request %s failed: HTTP %d %s (provider %s): %s",
                self.request_id,
                err.status,
                err.code,
                self.services.provider.name,
                err.message,
            )
        if isinstance(err, UpstreamError):
            self.services.metrics.upstream_errors.labels(err.code or "other").inc()
        if ctx.headers_sent:
            render_error(self, err, stream_started=True, redact=self.services.redact)
        else:
            self.clear()
            for name, value in ctx.response_headers.items():
                self.set_header(name, value)
            self.send_api_error(err)

    def on_connection_close(self) -> None:
        # Tornado's own fails the body future a streamed request waits on:
        # without it a body cut short keeps its coroutine, and everything
        # received so far, alive for good.
        super().on_connection_close()
        if self._task is not None and not self._task.done() and not self._finished:
            self._task.cancel()
        self._chunks = []
        self._multipart = None
        self._release()

    def on_finish(self) -> None:
        super().on_finish()
        self._release()

    def _give_back_body(self) -> None:
        if self._held:
            self.application.settings["bodies"].give_back(self._held)
            self._held = 0

    def _release(self) -> None:
        self._give_back_body()
        if self._gated:
            self._gated = False
            self.application.settings["gate"].leave(self)
            self.services.metrics.in_flight.dec()
