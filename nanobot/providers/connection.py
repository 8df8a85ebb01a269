"""One keep-alive HTTP/1.1 connection to an upstream, as an asyncio protocol.

Responses are parsed by httptools (llhttp, the parser uvicorn uses) inside
``data_received``; a body chunk goes straight to the one waiting reader, and
the read timeout is watched by one timer for all calls with that timeout
(:class:`~nanobot.idle_clock.IdleClock`).
``transport.py`` pools these connections under the SDK's httpx2 client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httptools
import httpx2

from nanobot.idle_clock import IdleClock
from nanobot.providers.parse import Malformed

# A response head larger than this is refused as malformed (not retried: the
# upstream did answer). The SDK's own client reads heads of 100 KiB and more.
MAX_HEAD_BYTES = 256 * 1024
MAX_BUFFER_BYTES = 256 * 1024  # body bytes held before the socket stops being read
# What a reader that has its answer lets the rest of the body take, in the
# background, before the connection is closed rather than pooled.
DRAIN_SECONDS = 0.1
DRAIN_BYTES = 64 * 1024


class Stale(Exception):
    """A reused keep-alive connection closed before answering: safe to retry once."""


class Connection(asyncio.Protocol):
    """One keep-alive connection; serves one request/response at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self._clock: IdleClock | None = None  # watching the read timeout of the response being read
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []  # until take_headers() hands them over
        self._ends_at_close = False  # no length and not chunked: the body ends when the connection does
        self._head_bytes = 0
        self._head_read = 0
        self._head_done = False
        self._keep_alive = False
        self.complete = False
        self._got_bytes = False
        # A list, not a deque: always drained whole, and an empty deque
        # costs ~700 bytes, per open stream.
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._read_timeout: float | None = None
        self.last = 0.0  # loop.time() of the last bytes received (or of the send)
        self._drained: Callable[[Connection], None] | None = None
        self._drain_left = 0

    # --- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        self.last = self._loop.time()
        if self.complete or self._error is not None:
            self._fail(httpx2.RemoteProtocolError("the upstream sent bytes after its response"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx2.RemoteProtocolError("the upstream asked for a protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(self._error or httpx2.RemoteProtocolError(f"malformed HTTP response: {exc}"))
        else:
            if not self._head_done:  # httptools holds an unfinished field whole: bound the raw bytes too
                self._head_read += len(data)
                if self._head_read > MAX_HEAD_BYTES:
                    self._fail(head_too_large())

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.complete or self._error is not None:
            self._wake()
            self._end_drain()
            return
        if self._head_done and self._ends_at_close:
            self.on_message_complete()
        elif not self._got_bytes:
            self._fail(Stale())
        else:
            self._fail(httpx2.ReadError("the upstream closed the connection mid-response"))

    def pause_writing(self) -> None:  # request bodies are written whole; nothing to hold back
        pass

    def resume_writing(self) -> None:
        pass

    # --- httptools callbacks ------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._error = head_too_large()
            raise ValueError("head too large")  # stops the parser
        self.headers.append((name, value))  # httptools hands over whole fields

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer: the real one follows
            self.reason = b""
            self.headers = []
            return
        self.status = status
        # llhttp answers this only until the message ends, so ask it now.
        self._keep_alive = self._parser.should_keep_alive()
        names = {name.lower() for name, _ in self.headers}
        self._ends_at_close = b"content-length" not in names and b"transfer-encoding" not in names
        self._head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self._drained is not None:
            self._drain_left -= len(body)
            if self._drain_left < 0:
                self._fail(httpx2.ReadError("the rest of the body is too large to drain"))
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > MAX_BUFFER_BYTES and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if not self._head_done:
            return  # the end of an interim (1xx) answer
        self.complete = True
        self._disarm()
        self._wake()
        self._end_drain()

    # --- the request's side ---------------------------------------------------------

    def send(self, head: bytes, body: tuple[bytes, ...], read_timeout: float | None) -> None:
        self._disarm()
        self._reset()
        self._read_timeout = read_timeout
        loop = self._loop
        self.last = loop.time()
        if read_timeout is not None:
            self._clock = IdleClock.of(loop, read_timeout)
            self._clock.add(self, loop)
        assert self.transport is not None
        # One writev for all, without joining a large body into a copy on the loop.
        self.transport.writelines((head, *body))

    async def read_head(self) -> None:
        while not self._head_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def next_chunk(self) -> bytes | None:
        """The body bytes received so far, or None at the end of the body."""
        while True:
            if self._chunks:
                chunks = self._chunks
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                if self._paused and self.transport is not None:
                    self._paused = False
                    self.last = self._loop.time()  # waiting on the upstream starts again now
                    self.transport.resume_reading()
                return data
            if self._error is not None:
                raise self._error
            if self.complete:
                return None
            # _wait() inlined: a frame less per chunk, one chunk per token.
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None

    def take_headers(self) -> list[tuple[bytes, bytes]]:
        """The response's headers, handed over: the connection keeps none of
        them for as long as the body is read."""
        headers, self.headers = self.headers, []
        return headers

    def reusable(self) -> bool:
        return self.complete and self._open()

    def close(self) -> None:
        self._disarm()
        if self.transport is not None:
            self.transport.close()

    def drainable(self) -> bool:
        """True if the rest of the body may still arrive on a connection worth keeping."""
        return not self.complete and self._open()

    def _open(self) -> bool:
        """Unbroken, and kept alive by both sides."""
        return (
            self._error is None
            and not self.lost
            and self._keep_alive
            and self.transport is not None
            and not self.transport.is_closing()
        )

    def drain(self, done: Callable[[Connection], None]) -> None:
        """Discard the rest of the body in the background, then call ``done(self)``.

        At most ``DRAIN_BYTES`` over ``DRAIN_SECONDS``; past either the
        connection is closed. No task: the protocol's own callbacks finish it.
        """
        self._chunks.clear()
        self._buffered = 0
        self._drained = done
        self._drain_left = DRAIN_BYTES
        self._disarm()
        self._timer = self._loop.call_later(DRAIN_SECONDS, self._drain_timeout)
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def _drain_timeout(self) -> None:
        self._timer = None
        self._fail(httpx2.ReadTimeout("the rest of the body took too long"))

    def _end_drain(self) -> None:
        done, self._drained = self._drained, None
        if done is not None:
            self._disarm()
            done(self)

    # --- internals ------------------------------------------------------------------

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._disarm()
        if self.transport is not None and not isinstance(error, Stale):
            self.transport.close()
        self._wake()
        self._end_drain()

    def idle(self, now: float) -> bool:
        """The read timeout passed without a byte (the clock calls this): fail the response."""
        if self._paused:
            # While reading is paused it is our reader, not the upstream, that is slow.
            self.last = now
            return True
        assert self._read_timeout is not None
        self._clock = None  # the clock lets go of it
        self._fail(httpx2.ReadTimeout(f"no data from the upstream for {self._read_timeout:g} s"))
        return False

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._clock is not None:
            self._clock.remove(self)
            self._clock = None


def head_too_large() -> Malformed:
    return Malformed(f"the response head is larger than {MAX_HEAD_BYTES // 1024} KiB")
