"""``POST /v1/chat/completions``: the body read as it arrives, then the pipeline.

The handler is a thin Tornado adapter: it counts the body against the
limits, builds the :class:`~nanobot.context.RequestContext`, runs the
pipeline under the request's deadline, and leaves how a failure ends to
:func:`~nanobot.server.lifecycle.ending`. Streamed frames go straight to the
connection (:meth:`ChatCompletionsHandler.send_frame`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from nanobot.context import RequestContext
from nanobot.errors import ApiError, UpstreamError
from nanobot.idle_clock import Deadline
from nanobot.pipeline import Pipeline
from nanobot.server.admission import Phase
from nanobot.server.handlers import BaseHandler
from nanobot.server.lifecycle import CLIENT_CLOSED, Ending, ending
from nanobot.server.render import render_error
from nanobot.server.state import RoutePolicy
from nanobot.server.tornado_private import FrameSink, frame_sink, is_finished, mark_finished

log = logging.getLogger("nanobot.server")


class ChatCompletionsHandler(BaseHandler):
    """``POST /v1/chat/completions``: run the pipeline, cancel it if the client leaves."""

    route = "/v1/chat/completions"

    _task: asyncio.Task[Any] | None = None
    _ctx: RequestContext | None = None
    _chunks: list[bytes]  # the body so far (but for a multipart one, parsed as it comes)
    _shutdown = False
    _sink: FrameSink | None = None  # where send_frame's frames go, looked up once per stream

    def pipeline(self) -> Pipeline:
        """The stages this route runs (the Responses route runs its own wire format's)."""
        return self.state.pipeline

    def end_for_shutdown(self) -> None:
        """Cancel this request's run; it answers 503 (or an SSE error frame)."""
        if self._task is not None and not self._task.done():
            self._shutdown = True
            self._task.cancel()

    def initialize(self, policy: RoutePolicy) -> None:
        super().initialize(policy)
        self._chunks = []

    def data_received(self, chunk: bytes) -> None:
        admission = self.admission
        if is_finished(self) or not admission.reads_body:
            return  # other methods answer 405 and their bodies are dropped
        admission.chunk = chunk
        try:
            admission.run(Phase.CHUNK)
            if admission.multipart is not None:
                admission.multipart.feed(chunk)
            else:
                self._chunks.append(chunk)
        except ApiError as err:
            self._chunks.clear()
            admission.multipart = None
            # Finishing now makes Tornado drop the rest and close the connection.
            self.send_api_error(err)
        finally:
            admission.chunk = b""

    async def post(self) -> None:
        self._body_read = True
        if is_finished(self):
            return
        admission = self.admission
        try:
            admission.run(Phase.BODY)
        except ApiError as err:
            self.send_api_error(err)
            return
        services = self.services
        loop = asyncio.get_running_loop()
        chunks, self._chunks = self._chunks, []
        # Joining 10 MB is a copy long enough to notice on the loop (a
        # multipart body was parsed as it came and left no chunks).
        big = admission.multipart is None and admission.size >= 1024 * 1024
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
            multipart=admission.multipart,
            media_type=admission.media_type,
        )
        task = self._task = asyncio.current_task()
        assert task is not None
        try:
            async with asyncio.timeout(None) as scope:
                deadline = Deadline(scope, now, services.config.api.timeout)  # ctx.deadline, on a shared timer
                try:
                    async with ctx.exit_stack:
                        await self.pipeline()(ctx)
                finally:
                    deadline.stop()
        except BaseException as exc:
            end = ending(
                exc,
                timeout=services.config.api.timeout,
                shutting_down=self._shutdown,
                client_gone=frame_sink(self).closed(),
            )
            if end is None:
                raise
            self._end(ctx, end, task)
            return
        if not is_finished(self):
            self.finish()

    def _end(self, ctx: RequestContext, end: Ending, task: asyncio.Task[Any]) -> None:
        if end.consumed_cancel:
            task.uncancel()
        if end.unexpected:
            log.exception("turn failed (request %s)", self.request_id)
        if end.client_left:
            # The run is cancelled and the request is over: nothing to send.
            mark_finished(self)
            self.services.metrics.requests.labels(self.route, str(CLIENT_CLOSED)).inc()
        elif end.error is not None:
            self._fail(ctx, end.error)

    def send_frame(self, frame: bytes) -> Awaitable[None] | None:
        """One piece of a streamed (SSE) body, straight to the connection.

        Bypasses RequestHandler.write/flush, whose per-call bookkeeping costs
        more than the send itself at one frame per token: the connection's
        :class:`~nanobot.server.tornado_private.FrameSink` frames it (a chunk
        for HTTP/1.1, the bare bytes for HTTP/1.0, whose body ends when the
        connection closes, see :meth:`finish`; a proxy at its defaults speaks
        1.0) and sends it at once. Only after flush() has sent the headers.
        """
        sink = self._sink
        if sink is None:
            sink = self._sink = frame_sink(self)
        return sink.send_frame(frame)

    def finish(self, chunk: Any = None) -> Any:
        """Finish; an HTTP/1.0 stream also closes the connection once it is sent.

        Such a body has neither length nor chunks, so the close is what ends
        it, even for a client that asked for keep-alive.
        """
        sent = super().finish(chunk)
        if self._ctx is not None and self._ctx.headers_sent and self.request.version != "HTTP/1.1":
            sink = frame_sink(self)
            sent.add_done_callback(lambda _: sink.close())
        return sent

    def _fail(self, ctx: RequestContext, err: ApiError) -> None:
        if is_finished(self):
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
            render_error(self, err, stream_started=True, redact=self.services.redact, frame=ctx.failure_frame)
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
        if self._task is not None and not self._task.done() and not is_finished(self):
            self._task.cancel()
        self._chunks = []
        self.admission.multipart = None
        self.admission.release()

    def on_finish(self) -> None:
        super().on_finish()
        self.admission.release()
