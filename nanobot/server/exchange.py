"""One request and its response on a server connection: Tornado's ``HTTPConnection`` for the handlers.

A :class:`~nanobot.server.connection.ServerConnection` makes an
:class:`Exchange` per request and hands it to the Tornado application as
the request's connection; ``RequestHandler`` writes its response through
it. The framing rules are Tornado's own (``HTTP1Connection``): chunked
output for HTTP/1.1 unless the response has a length or no body,
``Connection: close`` when the connection ends after the response,
``Connection: Keep-Alive`` for an HTTP/1.0 client that asked, and
``HTTPOutputError`` for a body longer or shorter than its
``Content-Length``. What differs is underneath: a write goes to the asyncio
transport, which sends at once when nothing is queued, and the returned
future is already done unless the transport asked us to pause writing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from tornado import httputil
from tornado.http1connection import parse_int
from tornado.iostream import StreamClosedError

from nanobot.errors import ClientDisconnected
from nanobot.server.limits import ClientContext, ServerParams

CONTINUE = b"HTTP/1.1 100 (Continue)\r\n\r\n"  # Tornado's exact bytes


class Link(Protocol):
    """What an exchange needs of its connection (``ServerConnection``)."""

    closed: bool
    context: ClientContext

    @property
    def params(self) -> ServerParams: ...

    def send(self, data: bytes) -> asyncio.Future[None]: ...
    def transport_write(self, data: bytes) -> None: ...
    def write_frame(self, data: bytes) -> asyncio.Future[None] | None: ...
    def close(self) -> None: ...
    def response_done(self, exchange: Exchange) -> None: ...


@dataclass(slots=True)
class Message:
    """One request as the parser delivered it, before and while it is handled."""

    start_line: httputil.RequestStartLine | None = None  # set once the header block is complete
    headers: httputil.HTTPHeaders | None = None
    keep_alive: bool = False
    body: list[bytes] = field(default_factory=list)  # received, not yet handed to the delegate
    held: int = 0  # bytes of this message held in memory (head and body)
    received: int = 0  # body bytes received so far (the limit counts them)
    complete: bool = False
    refusal: int = 0  # 400 or 431: the message is answered with that and the connection closed


def can_keep_alive(start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders) -> bool:
    """Tornado's rule: HTTP/1.1 unless ``Connection: close``; HTTP/1.0 only with ``Connection: keep-alive``."""
    connection = headers.get("Connection")
    if connection is not None:
        connection = connection.lower()
    if start_line.version == "HTTP/1.1":
        return connection != "close"
    if "Content-Length" in headers or "Transfer-Encoding" in headers or start_line.method in ("HEAD", "GET"):
        return connection == "keep-alive"
    return False


def _closed_future() -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_exception(StreamClosedError())
    future.exception()  # retrieved: nobody has to await it
    return future


class Exchange(httputil.HTTPConnection):
    """The ``HTTPConnection`` of one request: its response's framing and its close callback."""

    def __init__(self, conn: Link, message: Message) -> None:
        self.conn = conn
        self.context = conn.context
        self.message = message
        self.delegate: httputil.HTTPMessageDelegate | None = None
        self.max_body_size = conn.params.max_body_bytes
        self.body_timeout = conn.params.body_timeout
        self.ready = False  # headers_received is done: the body may be handed over
        self.blocked = False  # the delegate's data_received asked us to wait
        self.read_finished = False
        self.delegate_finished = False  # delegate.finish() returned: no on_connection_close owed
        self.write_finished = False
        self.disconnect = not message.keep_alive
        self.chunking = False
        self._remaining: int | None = None
        self._close_callback: Callable[[], None] | None = None

    # --- what RequestHandler calls -------------------------------------------------

    def set_close_callback(self, callback: Callable[[], None] | None) -> None:
        self._close_callback = callback

    def set_max_body_size(self, max_body_size: int) -> None:
        self.max_body_size = max_body_size

    def set_body_timeout(self, timeout: float) -> None:
        self.body_timeout = timeout

    def write_headers(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
        chunk: bytes | None = None,
    ) -> asyncio.Future[None]:
        assert isinstance(start_line, httputil.ResponseStartLine)
        request = self.message.start_line
        assert request is not None and self.message.headers is not None
        code = start_line.code
        self.chunking = (
            request.version == "HTTP/1.1"
            and request.method != "HEAD"
            and code not in (204, 304)
            and not 100 <= code < 200
            and "Content-Length" not in headers
        )
        if request.version == "HTTP/1.1" and self.disconnect:
            headers["Connection"] = "close"
        if request.version == "HTTP/1.0" and self.message.headers.get("Connection", "").lower() == "keep-alive":
            headers["Connection"] = "Keep-Alive"
        if self.chunking:
            headers["Transfer-Encoding"] = "chunked"
        if request.method == "HEAD" or code == 304:
            self._remaining = 0
        elif "Content-Length" in headers:
            self._remaining = parse_int(headers["Content-Length"])
        else:
            self._remaining = None
        status = f"HTTP/1.1 {code} {start_line.reason}"
        lines = [f"{name}: {value}" for name, value in headers.get_all()]
        joined = "".join(lines) + status  # one scan for all lines; the culprit is looked up only if it fails
        if "\r" in joined or "\n" in joined:
            bad = next(line for line in (status, *lines) if "\r" in line or "\n" in line)
            raise ValueError(f"Illegal characters (CR or LF) in header: {bad.encode('latin1')!r}")
        if self.conn.closed:
            return _closed_future()
        data = status.encode() + ("\r\n" + "\r\n".join(lines) if lines else "").encode("latin1") + b"\r\n\r\n"
        if chunk:
            data += self._format(chunk)
        return self.conn.send(data)

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        if self.conn.closed:
            return _closed_future()
        return self.conn.send(self._format(chunk))

    def finish(self) -> None:
        conn = self.conn
        if self._remaining and not conn.closed:
            conn.close()
            raise httputil.HTTPOutputError(f"Tried to write {self._remaining} bytes less than Content-Length")
        if self.chunking and not conn.closed:
            conn.send(b"0\r\n\r\n")
        self.write_finished = True
        if not self.read_finished:
            # The rest of the body is not read: closing is the only way past it.
            self.disconnect = True
        self._close_callback = None
        conn.response_done(self)

    def _format(self, chunk: bytes) -> bytes:
        if self._remaining is not None:
            self._remaining -= len(chunk)
            if self._remaining < 0:
                self.conn.close()  # stops further framing errors
                raise httputil.HTTPOutputError("Tried to write more data than Content-Length")
        if self.chunking and chunk:
            return b"%x\r\n%s\r\n" % (len(chunk), chunk)  # an empty chunk would end the body
        return chunk

    # --- streamed bodies (see tornado_private.FrameSink) ------------------------------

    def send_frame(self, frame: bytes) -> Awaitable[None] | None:
        """One piece of a streamed body, framed as the response is; something to await only when paused."""
        conn = self.conn
        if conn.closed or self.write_finished:  # a late frame must not land in the next request's answer
            raise ClientDisconnected()
        return conn.write_frame(b"%x\r\n%s\r\n" % (len(frame), frame) if self.chunking else frame)

    def closed(self) -> bool:
        return self.conn.closed

    def close(self) -> None:
        self.conn.close()

    # --- what the connection calls -------------------------------------------------

    def connection_lost(self) -> None:
        """Tell the delegate or the handler, as Tornado would, that the client is gone."""
        delegate = self.delegate
        if delegate is not None and not self.delegate_finished:
            self.delegate_finished = True
            delegate.on_connection_close()
        elif self._close_callback is not None:
            callback, self._close_callback = self._close_callback, None
            callback()
