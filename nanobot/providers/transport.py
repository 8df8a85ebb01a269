"""A lean HTTP/1.1 transport under the SDK's httpx2 client, for ``http://`` and ``https://`` upstreams.

The SDK keeps its part (auth, retries, status errors, timeouts as config);
this moves the bytes. Connections are asyncio protocols kept alive in a
pool, responses are parsed by httptools (llhttp, the parser uvicorn uses)
inside ``data_received``, and a body chunk goes straight to the one
waiting reader. The SDK's aiohttp transport builds a ClientRequest, a
ClientResponse and a StreamReader per call and re-arms a read timer on
every chunk received; at one chunk per streamed token that bookkeeping
cost more than everything else on the path.

A reader that has its whole answer before the body ends (an SSE stream at
``data: [DONE]``) closes the body at once: the rest drains in the
background, briefly, and the connection is pooled if it ends, closed if not.

``https://`` upstreams go through the same connections with TLS (asyncio's
own, verifying the certificate and the host name against the system's
trusted CAs, HTTP/1.1 offered by ALPN): one stack, one set of errors, for
every upstream.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import httptools
import httpx2

from nanobot.providers.parse import Malformed

# A response head larger than this is refused as malformed (not retried: the
# upstream did answer). The SDK's own client reads heads of 100 KiB and more.
MAX_HEAD_BYTES = 256 * 1024
MAX_BUFFER_BYTES = 256 * 1024  # body bytes held before the socket stops being read
BODY_EXTENSION = "nanobot.body"  # response extension: the body's ``read_some()``
# What a reader that has its answer lets the rest of the body take, in the
# background, before the connection is closed rather than pooled.
DRAIN_SECONDS = 0.1
DRAIN_BYTES = 64 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}

# A pool's connections are keyed by (scheme, host, port).
_Key = tuple[str, str, int]


def tls_context() -> ssl.SSLContext:
    """Verifying TLS for upstreams: the system's CAs (``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured), HTTP/1.1 by ALPN."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


class _Stale(Exception):
    """A reused keep-alive connection closed before answering: safe to retry once."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; serves one request/response at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
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
        self._last = 0.0
        self._drained: Callable[[_Connection], None] | None = None
        self._drain_left = 0

    # --- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        self._last = self._loop.time()
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
                    self._fail(_head_too_large())

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.complete or self._error is not None:
            self._wake()
            self._end_drain()
            return
        if self._head_done and self._ends_at_close():
            self.on_message_complete()
        elif not self._got_bytes:
            self._fail(_Stale())
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
            self._error = _head_too_large()
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

    def send(self, head: bytes, body: bytes, read_timeout: float | None) -> None:
        self._reset()
        self._read_timeout = read_timeout
        self._last = self._loop.time()
        if read_timeout is not None:
            self._timer = self._loop.call_at(self._last + read_timeout, self._check_timeout)
        assert self.transport is not None
        # One writev for both, without joining a large body into a copy on the loop.
        self.transport.writelines((head, body))

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
                    self._last = self._loop.time()  # waiting on the upstream starts again now
                    self.transport.resume_reading()
                return data
            if self._error is not None:
                raise self._error
            if self.complete:
                return None
            await self._wait()

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

    def drain(self, done: Callable[[_Connection], None]) -> None:
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

    def _ends_at_close(self) -> bool:
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

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
        if self.transport is not None and not isinstance(error, _Stale):
            self.transport.close()
        self._wake()
        self._end_drain()

    def _check_timeout(self) -> None:
        # One timer per response, pushed forward lazily: cheaper than
        # re-arming a timer on every chunk received.
        assert self._read_timeout is not None
        now = self._loop.time()
        # While reading is paused it is our reader, not the upstream, that is slow.
        deadline = (now if self._paused else self._last) + self._read_timeout
        if now < deadline:
            self._timer = self._loop.call_at(deadline, self._check_timeout)
            return
        self._timer = None
        self._fail(httpx2.ReadTimeout(f"no data from the upstream for {self._read_timeout:g} s"))

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class _Body(httpx2.AsyncByteStream):
    """A response body; closing it hands the connection back to the pool."""

    def __init__(self, pool: PooledTransport, key: _Key, conn: _Connection) -> None:
        self._pool = pool
        self._key = key
        self._conn: _Connection | None = conn
        self._drain = False

    def drain_on_close(self) -> None:
        """The reader has all it needs: on close, let the rest of the body
        arrive in the background (the connection is then pooled) instead of
        dropping the connection, and make no one wait for it."""
        self._drain = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (data := await self.read_some()) is not None:
            yield data

    async def read_some(self) -> bytes | None:
        """The body bytes received since the last call, or None at the end.

        Handed out as the response extension ``BODY_EXTENSION``: a reader
        calling this directly skips two async-generator layers (this
        class's and httpx2's) per chunk, which shows at one chunk per token.
        """
        conn = self._conn
        if conn is None:
            raise httpx2.StreamClosed()
        return await conn.next_chunk()

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(self._key, conn, drain=self._drain)


class PooledTransport(httpx2.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 connections (TLS for ``https``), at most ``max_connections`` in use."""

    def __init__(self, max_connections: int, keepalive_expiry: float = 15.0, tls: ssl.SSLContext | None = None) -> None:
        self._keepalive_expiry = keepalive_expiry
        self._tls = tls  # made on the first https connection: loading the CA store costs ~60 ms
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[_Key, list[_Connection]] = {}
        self._draining: set[_Connection] = set()
        self._closed = False

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        if url.scheme not in DEFAULT_PORTS:
            raise httpx2.UnsupportedProtocol(f"this transport speaks http and https, not {url.scheme!r}")
        if self._closed:
            raise httpx2.ConnectError("the HTTP client is closed")
        timeout: dict[str, float | None] = request.extensions.get("timeout") or {}
        content = await request.aread()
        head = _request_head(request, content)
        key = (url.scheme, url.host, url.port or DEFAULT_PORTS[url.scheme])
        await self._take_slot(timeout.get("pool"))
        conn: _Connection | None = None
        try:
            for attempt in (1, 2):
                conn, reused = await self._checkout(key, timeout.get("connect"))
                conn.send(head, content, timeout.get("read"))
                try:
                    await conn.read_head()
                    break
                except _Stale:
                    conn.close()
                    if reused and attempt == 1:
                        continue  # the server had dropped the idle connection: a fresh one
                    raise httpx2.RemoteProtocolError("the upstream closed the connection without answering") from None
        except BaseException:
            if conn is not None:
                conn.close()
            self._slots.release()
            raise
        assert conn is not None  # the loop either read a head or raised
        body = _Body(self, key, conn)
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1", "reason_phrase": conn.reason, BODY_EXTENSION: body}
        response = httpx2.Response(
            conn.status, headers=conn.headers, stream=body, request=request, extensions=extensions
        )
        if all(name.isascii() and value.isascii() for name, value in conn.headers):
            # Known now, or httpx works it out by decoding every header on the first lookup.
            response.headers.encoding = "ascii"
        return response

    async def _take_slot(self, timeout: float | None) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # free: does not suspend
            return
        try:
            async with asyncio.timeout(timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx2.PoolTimeout("no free connection to the upstream in time") from None

    async def _checkout(self, key: _Key, timeout: float | None) -> tuple[_Connection, bool]:
        idle = self._idle.get(key)
        loop = asyncio.get_running_loop()
        now = loop.time()
        while idle:
            conn = idle.pop()
            if conn.reusable() and now - conn.idle_since < self._keepalive_expiry:
                return conn, True
            conn.close()
        scheme, host, port = key
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            tls = self._tls = self._tls or tls_context()
        try:
            # A timeout scope rather than wait_for: no extra task per connection
            # (it bounds the TLS handshake too).
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop), host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError:
            raise httpx2.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:  # refused, unreachable, or a certificate that does not verify
            raise httpx2.ConnectError(f"cannot connect to {host}:{port}: {type(exc).__name__}: {exc}") from exc
        return conn, False

    def release(self, key: _Key, conn: _Connection, drain: bool = False) -> None:
        """Hand back a connection: pooled, closed, or (``drain``, body unfinished) pooled once it ends."""
        self._slots.release()
        if drain and not self._closed and conn.drainable():
            self._draining.add(conn)
            conn.drain(lambda done: self._drained(key, done))
            return
        self._keep_or_close(key, conn)

    def _drained(self, key: _Key, conn: _Connection) -> None:
        self._draining.discard(conn)
        self._keep_or_close(key, conn)

    def _keep_or_close(self, key: _Key, conn: _Connection) -> None:
        if self._closed or not conn.reusable():
            conn.close()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.setdefault(key, []).append(conn)

    async def aclose(self) -> None:
        self._closed = True
        for conns in (*self._idle.values(), list(self._draining)):
            for conn in conns:
                conn.close()
        self._idle.clear()
        self._draining.clear()


def _request_head(request: httpx2.Request, body: bytes) -> bytes:
    """The request line and headers, ending with the blank line."""
    parts = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), request.url.raw_path)]
    has_length = False
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered == b"transfer-encoding":  # the body was read whole: send its length instead
            continue
        has_length = has_length or lowered == b"content-length"
        parts.append(b"%s: %s\r\n" % (name, value))
    if not has_length and (body or request.method in ("POST", "PUT", "PATCH")):
        parts.append(b"Content-Length: %d\r\n" % len(body))
    parts.append(b"\r\n")
    return b"".join(parts)


def _head_too_large() -> Malformed:
    return Malformed(f"the response head is larger than {MAX_HEAD_BYTES // 1024} KiB")
