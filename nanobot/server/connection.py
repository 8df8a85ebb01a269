"""The HTTP/1.1 server connection: an asyncio protocol that parses with httptools and drives Tornado's app.

Tornado's own connection layer (``HTTPServer`` → ``HTTP1ServerConnection``
→ ``HTTP1Connection`` → ``IOStream``) parses headers in Python, goes through
futures, ``gen.with_timeout`` and the IOStream's buffers for every request,
and showed as a sixth of the loop's CPU. :class:`ServerConnection` keeps
Tornado's ``Application``, routing and handlers as they are: it calls
``app.start_request`` and the returned delegate's ``headers_received``,
``data_received``, ``finish`` and ``on_connection_close`` in the order and on
the occasions ``HTTP1Connection`` does, and each request's
:class:`~nanobot.server.exchange.Exchange` is the connection its handler
writes to. The parser is httptools (llhttp, as in uvicorn); no task runs per
connection or per request, and one lazily pushed timer bounds the wait for a
request's headers (``api.headerTimeout``, which is also how long an idle
keep-alive connection is kept) and for its body (``api.bodyTimeout``).

Requests are handled one at a time. Pipelined requests are parsed on
arrival and held, up to ``MAX_HELD_BYTES`` before the socket stops being
read, until the one before them is answered. A malformed request is
answered ``400`` (Tornado's bare line), a header block over the limit
``431`` with the OpenAI error body, after which the rest is read and dropped
for a bounded time, so that closing does not reset the connection before
the client has read the answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import httptools
from tornado import httputil
from tornado.log import app_log, gen_log

from nanobot.server.exchange import CONTINUE, Exchange, Message, can_keep_alive
from nanobot.server.limits import LINGER_BYTES, LINGER_SECONDS, ClientContext, ServerParams, too_large_response

MAX_HELD_BYTES = 256 * 1024  # received but not yet handled: past this the socket is not read
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\n\r\n"  # Tornado's answer to a malformed request

_T = TypeVar("_T")
_HEAD, _BODY, _LINGER = "head", "body", "linger"  # what the connection's deadline bounds


class ServerConnection(asyncio.Protocol):
    """One client connection: parses requests and runs them through the application one at a time."""

    def __init__(self, app: httputil.HTTPServerConnectionDelegate, params: ServerParams) -> None:
        self.app = app
        self.params = params
        self.context = ClientContext(None, None)
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._parsing: Message | None = None  # the message the parser is filling
        self._url = b""
        self._fields: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._head_raw = 0
        self._fed = 0  # of the data being parsed: about how much went to the messages before this one
        self._begun_at = 0
        # Parsed, waiting for the current request to end. A list: pipelining is
        # rare and bounded by MAX_HELD_BYTES, and an empty deque costs ~700
        # bytes on every connection.
        self._pending: list[Message] = []
        self._current: Exchange | None = None
        self._broken = False  # the input is past parsing: nothing more is read from it
        self._held = 0
        self._reading_paused = False
        self._writing_paused = False
        self._drained = self._loop.create_future()
        self._drained.set_result(None)
        self._drain_waiter: asyncio.Future[None] | None = None
        self._next_soon = False
        self._phase: str | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._lingered = 0

    # --- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        self.context = ClientContext(transport.get_extra_info("peername"), sock.family if sock is not None else None)
        self._set_deadline(_HEAD, self.params.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self._phase == _LINGER:
            self._lingered += len(data)
            if self._lingered > LINGER_BYTES:
                self.close()
            return
        if self._broken or self.closed:
            return
        began = self._parsing is not None and self._parsing.start_line is None
        self._fed = 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # Tornado serves no upgrades: what follows is just the next request.
            self._parser = httptools.HttpRequestParser(self)
            rest = data[upgrade.args[0] :]
            if rest:
                self.data_received(rest)
            return
        except httptools.HttpParserError as exc:
            too_large = self._head_bytes > self.params.max_header_bytes
            self._refuse(431 if too_large else 400, str(exc))
        else:
            message = self._parsing
            if message is not None and message.start_line is None:
                # httptools holds an unfinished field whole: bound the raw bytes of the head too.
                self._head_raw = self._head_raw + len(data) if began else len(data) - self._begun_at
                if self._head_raw > self.params.max_header_bytes:
                    self._refuse(431, "header block too large")
        if self._held > MAX_HELD_BYTES and not self._reading_paused and not self.closed:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None  # the client is done: close (Tornado treats a half-close as a close too)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._phase = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake_writer()
        current, self._current = self._current, None
        self._pending.clear()
        self._parsing = None
        if current is not None:
            try:
                current.connection_lost()
            except Exception:
                app_log.error("Uncaught exception", exc_info=True)
        self.app.on_close(self)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writer()
        if self._current is None and self._pending:
            self._start_next_soon()

    # --- httptools callbacks ------------------------------------------------------

    def on_message_begin(self) -> None:
        self._parsing = Message()
        self._url = b""
        self._fields = []
        self._head_bytes = 21  # the request line but its target, the blank line (for a method of 7 letters)
        self._head_raw = 0
        self._begun_at = self._fed

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._grow_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._parsing is None or self._parsing.start_line is not None:
            return  # a chunked body's trailer: not passed on, as by Tornado
        self._grow_head(len(name) + len(value) + 4)
        self._fields.append((name, value))

    def on_headers_complete(self) -> None:
        message = self._parsing
        assert message is not None
        version = "HTTP/" + self._parser.get_http_version()
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise ValueError(f"unexpected HTTP version {version}")  # stops the parser: a 400
        start_line = httputil.RequestStartLine(
            self._parser.get_method().decode("latin1"), self._url.decode("latin1"), version
        )
        headers = httputil.HTTPHeaders()
        for raw_name, raw_value in self._fields:
            name, value = raw_name.decode("latin1"), raw_value.decode("latin1").strip(" \t")
            if name in headers:
                headers.add(name, value)
            else:
                headers[name] = value  # llhttp checked the name and value
        if self._parser.should_upgrade() and (
            "Transfer-Encoding" in headers or headers.get("Content-Length", "0") != "0"
        ):
            # llhttp leaves everything after an upgrade's header block to the
            # other protocol, a body included. No upgrade is served here, so
            # that body would be read as the next request: refused instead.
            raise ValueError("a body on an upgrade request")  # stops the parser: a 400
        message.start_line = start_line
        message.headers = headers
        message.keep_alive = can_keep_alive(start_line, headers)
        message.held = self._head_bytes
        self._held += message.held
        self._fed += self._head_bytes
        self._fields = []
        if self._current is None and not self._pending:
            self._start(message)
        else:
            self._pending.append(message)

    def on_body(self, body: bytes) -> None:
        message = self._parsing
        assert message is not None
        message.received += len(body)
        self._fed += len(body)
        current = self._current
        if current is not None and current.message is message and current.ready and not current.blocked:
            if not message.body:
                self._deliver(current, body)
                return
        message.body.append(body)
        message.held += len(body)
        self._held += len(body)

    def on_message_complete(self) -> None:
        message = self._parsing
        assert message is not None
        message.complete = True
        self._parsing = None
        current = self._current
        if current is not None and current.message is message and current.ready and not current.blocked:
            self._end_body(current)

    # --- requests -------------------------------------------------------------------

    def _start(self, message: Message) -> None:
        if self.closed:
            return  # a request parsed after the one that ended the connection
        if message.start_line is None:  # a refusal: the input went wrong before a request began
            self._answer_refusal(message.refusal, "malformed request")
            return
        self._release(message, message.held - sum(map(len, message.body)))  # the head is handled now
        assert message.start_line is not None and message.headers is not None
        exchange = self._current = Exchange(self, message)
        self._phase = None  # the handler has no deadline of the connection's
        start_line, headers = message.start_line, message.headers

        def begin() -> Any:
            delegate = exchange.delegate = self.app.start_request(self, exchange)
            return delegate.headers_received(start_line, headers)

        ok, future = self._guarded(begin)
        if not ok:
            return
        if future is not None and not (isinstance(future, asyncio.Future) and future.done()):
            asyncio.ensure_future(future).add_done_callback(lambda done: self._headers_done(exchange, done))
        else:
            self._headers_done(exchange, future)

    def _headers_done(self, exchange: Exchange, future: Any) -> None:
        if exchange is not self._current or self.closed:
            return
        if future is not None and not self._guarded(future.result)[0]:
            return
        exchange.ready = True
        message = exchange.message
        headers = message.headers
        assert headers is not None
        if headers.get("Expect") == "100-continue" and not exchange.write_finished:
            self.transport_write(CONTINUE)
        length = headers.get("Content-Length")
        if length is not None and int(length) > exchange.max_body_size:
            self._bad_request("Content-Length too long")
            return
        if not message.complete and exchange.body_timeout is not None:
            self._set_deadline(_BODY, exchange.body_timeout)
        self._flush_body(exchange)

    def _flush_body(self, exchange: Exchange) -> None:
        """Hand what the parser held to the delegate, then end the body if it is complete."""
        message = exchange.message
        while message.body and not exchange.blocked and self._current is exchange:
            chunk = message.body.pop(0)
            self._release(message, len(chunk))
            self._deliver(exchange, chunk)
        if exchange.blocked or self._current is not exchange:
            return
        if message.refusal:
            self._answer_refusal(message.refusal, "malformed body")
        elif message.complete:
            self._end_body(exchange)

    def _deliver(self, exchange: Exchange, chunk: bytes) -> None:
        if self.closed:
            return  # refused or failed earlier in the same read
        message = exchange.message
        if message.received > exchange.max_body_size:
            self._bad_request("body too large")
            return
        if exchange.write_finished:
            return  # answered already: the rest of the body is dropped, then the connection closed
        delegate = exchange.delegate
        assert delegate is not None
        ok, waiting = self._guarded(lambda: delegate.data_received(chunk))
        if not ok:
            return
        if waiting is not None:
            exchange.blocked = True
            asyncio.ensure_future(waiting).add_done_callback(lambda done: self._unblocked(exchange, done))

    def _unblocked(self, exchange: Exchange, future: asyncio.Future[None]) -> None:
        exchange.blocked = False
        if exchange is not self._current or self.closed:
            return
        try:
            future.result()
        except Exception:
            self._fail()
            return
        self._flush_body(exchange)

    def _end_body(self, exchange: Exchange) -> None:
        exchange.read_finished = True
        if self._phase == _BODY:
            self._phase = None
        if exchange.write_finished:
            return
        assert exchange.delegate is not None
        if not self._guarded(exchange.delegate.finish)[0]:
            return
        exchange.delegate_finished = True

    def response_done(self, exchange: Exchange) -> None:
        """The handler finished its response: close, or go on to the next request."""
        if exchange is not self._current:
            return
        if exchange.disconnect or self.closed:
            self.close()
            return
        self._current = None
        if self._pending:
            self._start_next_soon()
        else:
            self._set_deadline(_HEAD, self.params.header_timeout)

    def _start_next_soon(self) -> None:
        # Not from inside the previous handler's finish(): it still has its own bookkeeping to do.
        if not self._next_soon:
            self._next_soon = True
            self._loop.call_soon(self._start_next)

    def _start_next(self) -> None:
        self._next_soon = False
        if self.closed or self._current is not None or not self._pending:
            return
        if self._writing_paused:
            return  # resume_writing starts it: the client is not reading its answers yet
        self._start(self._pending.pop(0))
        if self._current is None and not self.closed:
            self._set_deadline(_HEAD, self.params.header_timeout)

    # --- refusals and failures ------------------------------------------------------

    def _refuse(self, status: int, reason: str) -> None:
        """The input cannot be parsed further: answer ``status`` once the requests before it are done."""
        self._broken = True
        message = self._parsing
        if message is None or message.start_line is None:
            if self._current is None and not self._pending:
                self._answer_refusal(status, reason)
                return
            self._pending.append(Message(refusal=status))
        else:
            message.refusal = status  # the body of a started request: after what came before it
            current = self._current
            if current is not None and current.message is message and current.ready and not current.blocked:
                self._flush_body(current)

    def _answer_refusal(self, status: int, reason: str) -> None:
        if status == 431:
            self._linger()
        else:
            self._bad_request(reason)

    def _bad_request(self, reason: str) -> None:
        gen_log.info("Malformed HTTP message from %s: %s", self.context, reason)
        if not self.closed:
            self.transport_write(BAD_REQUEST)
        self.close()

    def _linger(self) -> None:
        """Answer 431, then read and drop what the client still sends, for a bounded time and size."""
        transport = self._transport
        assert transport is not None
        transport.write(too_large_response(self.params.max_header_bytes))
        transport.write_eof()
        self._set_deadline(_LINGER, LINGER_SECONDS)
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def _guarded(self, call: Callable[[], _T]) -> tuple[bool, _T | None]:
        """Run one of the delegate's steps as HTTP1Connection does: bad input
        answers 400, anything else is logged and closes the connection."""
        try:
            return True, call()
        except httputil.HTTPInputError as exc:
            self._bad_request(str(exc))
        except Exception:
            self._fail()
        return False, None

    def _fail(self) -> None:
        """A delegate raised: logged as Tornado logs it, and the connection closed."""
        app_log.error("Uncaught exception", exc_info=True)
        self.close()

    # --- writing --------------------------------------------------------------------

    def transport_write(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)

    def send(self, data: bytes) -> asyncio.Future[None]:
        """Write ``data``; the future is done unless the transport asked to pause writing."""
        assert self._transport is not None
        self._transport.write(data)
        return self._drained if not self._writing_paused else self._drain_future()

    def write_frame(self, data: bytes) -> asyncio.Future[None] | None:
        """Write a streamed frame; something to await only while the client is
        not keeping up (asked in the same call: one per token)."""
        assert self._transport is not None
        self._transport.write(data)
        return self._drain_future() if self._writing_paused else None

    def _drain_future(self) -> asyncio.Future[None]:
        waiter = self._drain_waiter
        if waiter is None or waiter.done():  # done: cancelled with the task that awaited it
            waiter = self._drain_waiter = self._loop.create_future()
        return waiter

    def _wake_writer(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)  # on a close too: Tornado's write futures end quietly then

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._transport is not None:
                self._transport.close()  # what is buffered is sent first

    # --- the deadline ---------------------------------------------------------------

    def _set_deadline(self, phase: str, seconds: float) -> None:
        self._phase = phase
        deadline = self._deadline = self._loop.time() + seconds
        # One timer, pushed forward lazily: a request that arrives in time costs no timer of its own.
        if self._timer is None or self._timer_at > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(deadline, self._on_deadline)
            self._timer_at = deadline

    def _on_deadline(self) -> None:
        self._timer = None
        if self._phase is None or self.closed:
            return
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._on_deadline)
            self._timer_at = self._deadline
            return
        if self._phase == _BODY:
            gen_log.info("Timeout reading body from %s", self.context)
        self.close()

    def _release(self, message: Message, size: int) -> None:
        message.held -= size
        self._held -= size
        if self._reading_paused and self._held <= MAX_HELD_BYTES // 2 and not self.closed:
            self._reading_paused = False
            assert self._transport is not None
            self._transport.resume_reading()

    def _grow_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.params.max_header_bytes:
            raise ValueError("header block too large")  # stops the parser; data_received answers 431
