"""Every reach into Tornado's private or loosely typed parts, in one place.

The handlers need two things Tornado has no public API for: whether a
handler already finished (``RequestHandler._finished``, also set to end a
request whose client left without sending anything), and, under Tornado's
own HTTP server (the reference ``tests/test_server_diff.py`` compares the
server connection with), the client's IOStream
(``request.connection.stream``), written to directly for SSE frames and
closed to end an HTTP/1.0 stream. :func:`frame_sink` gives the handlers
one small interface for that under either server. ``tests/test_tornado_private.py`` pins
these against the installed Tornado, so an upgrade that drops them fails
there rather than on a live request. :func:`reset_response` is
``RequestHandler.clear`` with the ``Date`` header formatted once a second
(Tornado formats it for every handler it creates, ~5 µs) and without the
``Server`` header every handler removes again; the same test pins it
against Tornado's own.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from http.client import responses
from typing import Protocol, cast

from tornado import httputil, web
from tornado.http1connection import HTTP1Connection
from tornado.iostream import IOStream, SSLIOStream, StreamClosedError

from nanobot.errors import ClientDisconnected

# What this module touches, for the pinning test.
FINISHED_ATTRIBUTE = "_finished"
REASON_ATTRIBUTE = "_reason"
# What RequestHandler.clear() sets, besides calling set_default_headers().
CLEARED_ATTRIBUTES = ("_headers", "_write_buffer", "_status_code", "_reason")
DEFAULT_CONTENT_TYPE = "text/html; charset=UTF-8"

_date: tuple[int, str] = (0, "")


def http_date(now: float) -> str:
    """The ``Date`` header for ``now``: the same text for a whole second, so formatted once."""
    global _date
    second = int(now)
    if _date[0] != second:
        _date = (second, httputil.format_timestamp(second))
    return _date[1]


def reset_response(handler: web.RequestHandler) -> None:
    """What ``RequestHandler.clear()`` does, less its per-call date formatting and Server header."""
    handler._headers = httputil.HTTPHeaders({"Content-Type": DEFAULT_CONTENT_TYPE, "Date": http_date(time.time())})
    handler.set_default_headers()
    handler._write_buffer = []
    handler._status_code = 200
    handler._reason = responses[200]


def is_finished(handler: web.RequestHandler) -> bool:
    """True once ``handler`` finished its response (or was marked so)."""
    return bool(getattr(handler, FINISHED_ATTRIBUTE))


def mark_finished(handler: web.RequestHandler) -> None:
    """End ``handler`` without sending anything: its client is gone."""
    setattr(handler, FINISHED_ATTRIBUTE, True)


def reason(handler: web.RequestHandler) -> str:
    """The reason phrase Tornado chose for the status being sent."""
    return str(getattr(handler, REASON_ATTRIBUTE))


def client_stream(handler: web.RequestHandler) -> IOStream:
    """The client's connection; Tornado types it as any HTTP connection (HTTP1Connection has one)."""
    return cast(IOStream, handler.request.connection.stream)  # type: ignore[union-attr]


class FrameSink(Protocol):
    """Where a streamed (SSE) body's pieces go once its headers are out."""

    def send_frame(self, frame: bytes) -> Awaitable[None] | None:
        """Send ``frame`` now, framed as the response is; something to await only while the client lags.

        Raises :class:`~nanobot.errors.ClientDisconnected` once the client left.
        """

    def closed(self) -> bool: ...

    def close(self) -> None: ...


class StreamFrames:
    """:class:`FrameSink` over Tornado's HTTP1Connection: straight to its IOStream's socket.

    Bypasses the connection's per-call bookkeeping, which costs more than
    the send itself at one frame per token; the framing is Tornado's: a
    chunk for HTTP/1.1, the bare bytes for HTTP/1.0. With nothing queued the
    frame goes out in one ``send``; the IOStream (its Future, its buffer)
    only takes what the socket would not. A TLS stream's socket must go
    through its own write.
    """

    __slots__ = ("stream", "chunked", "plain")

    def __init__(self, stream: IOStream, chunked: bool) -> None:
        self.stream = stream
        self.chunked = chunked
        self.plain = not isinstance(stream, SSLIOStream)

    def send_frame(self, frame: bytes) -> Awaitable[None] | None:
        stream = self.stream
        data = b"%x\r\n%s\r\n" % (len(frame), frame) if self.chunked else frame
        if self.plain and not stream.writing() and not stream.closed():
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

    def closed(self) -> bool:
        return self.stream.closed()

    def close(self) -> None:
        self.stream.close()


def frame_sink(handler: web.RequestHandler) -> FrameSink:
    """The :class:`FrameSink` of ``handler``'s connection: the server connection's exchange is one itself."""
    connection = handler.request.connection
    if isinstance(connection, HTTP1Connection):
        return StreamFrames(client_stream(handler), handler.request.version == "HTTP/1.1")
    return cast(FrameSink, connection)
