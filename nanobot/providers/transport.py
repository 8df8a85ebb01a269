"""A lean HTTP/1.1 transport under the SDK's httpx2 client, for ``http://`` and ``https://`` upstreams.

The SDK keeps its part (auth, retries, status errors, timeouts as config);
this moves the bytes. Connections are asyncio protocols kept alive in a
pool (the protocol, with its parser and read timeout, is ``connection.py``),
responses are parsed by httptools inside ``data_received``, and a body chunk
goes straight to the one waiting reader. The SDK's aiohttp transport, which
this replaced, built a ClientRequest, a ClientResponse and a StreamReader per
call and re-armed a read timer on every chunk received; at one chunk per
streamed token that bookkeeping cost more than everything else on the path.

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
import functools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx2

# The limits are named here too: they are this transport's, whichever module holds them.
from nanobot.providers.connection import DRAIN_SECONDS as DRAIN_SECONDS
from nanobot.providers.connection import MAX_BUFFER_BYTES as MAX_BUFFER_BYTES
from nanobot.providers.connection import MAX_HEAD_BYTES as MAX_HEAD_BYTES
from nanobot.providers.connection import Connection, Stale

BODY_EXTENSION = "nanobot.body"  # response extension: the body's ``read_some()``
DEFAULT_PORTS = {"http": 80, "https": 443}

# A pool's connections are keyed by (scheme, host, port).
_Key = tuple[str, str, int]


@functools.cache
def tls_context() -> ssl.SSLContext:
    """Verifying TLS for upstreams: the system's CAs (``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured), HTTP/1.1 by ALPN.

    One per process, shared by every pool: loading the CA store takes ~30 ms
    of CPU, so it is built once, and off the event loop (see ``_checkout``).
    """
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context


class BodyPieces(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A request body in pieces, sent as they are: a piece may be shared by
    every request (the tools' schemas, the same for every call), so a call
    in flight holds only its own bytes."""

    def __init__(self, pieces: tuple[bytes, ...]) -> None:
        self.pieces = pieces
        self.length = sum(len(piece) for piece in pieces)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.pieces)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


class _Body(httpx2.AsyncByteStream):
    """A response body; closing it hands the connection back to the pool."""

    def __init__(self, pool: PooledTransport, key: _Key, conn: Connection) -> None:
        self._pool = pool
        self._key = key
        self._conn: Connection | None = conn
        self._drain = False
        # The body bytes received since the last call, or None at the end.
        # Handed out as the response extension ``BODY_EXTENSION``: a reader
        # calling it skips two async-generator layers (this class's and
        # httpx2's) per chunk, and it is the connection's own method, so a
        # chunk costs no frame of this class's either (it shows at one chunk
        # per token). Once closed it raises ``StreamClosed``; a reader that
        # kept the method itself must not call it after ``aclose``.
        self.read_some: Callable[[], Awaitable[bytes | None]] = conn.next_chunk

    def drain_on_close(self) -> None:
        """The reader has all it needs: on close, let the rest of the body
        arrive in the background (the connection is then pooled) instead of
        dropping the connection, and make no one wait for it."""
        self._drain = True

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (data := await self.read_some()) is not None:
            yield data

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        self.read_some = _closed_body
        if conn is not None:
            self._pool.release(self._key, conn, drain=self._drain)


async def _closed_body() -> bytes | None:
    raise httpx2.StreamClosed()


class PooledTransport(httpx2.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 connections (TLS for ``https``), at most ``max_connections`` in use."""

    def __init__(self, max_connections: int, keepalive_expiry: float = 15.0, tls: ssl.SSLContext | None = None) -> None:
        self._keepalive_expiry = keepalive_expiry
        self._tls = tls  # None: the shared tls_context(), fetched on the first https connection
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[_Key, list[Connection]] = {}
        self._draining: set[Connection] = set()
        self._closed = False

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        if url.scheme not in DEFAULT_PORTS:
            raise httpx2.UnsupportedProtocol(f"this transport speaks http and https, not {url.scheme!r}")
        if self._closed:
            raise httpx2.ConnectError("the HTTP client is closed")
        timeout: dict[str, float | None] = request.extensions.get("timeout") or {}
        stream = request.stream
        pieces = stream.pieces if isinstance(stream, BodyPieces) else (await request.aread(),)
        head = _request_head(request, sum(len(piece) for piece in pieces))
        key = (url.scheme, url.host, url.port or DEFAULT_PORTS[url.scheme])
        await self._take_slot(timeout.get("pool"))
        conn: Connection | None = None
        try:
            for attempt in (1, 2):
                conn, reused = await self._checkout(key, timeout.get("connect"))
                conn.send(head, pieces, timeout.get("read"))
                try:
                    await conn.read_head()
                    break
                except Stale:
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
        headers = conn.take_headers()
        response = httpx2.Response(conn.status, headers=headers, stream=body, request=request, extensions=extensions)
        if all(name.isascii() and value.isascii() for name, value in headers):
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

    async def _checkout(self, key: _Key, timeout: float | None) -> tuple[Connection, bool]:
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
        try:
            if scheme == "https":
                if self._tls is None:
                    self._tls = await asyncio.to_thread(tls_context)
                tls = self._tls
            # A timeout scope rather than wait_for: no extra task per connection
            # (it bounds the TLS handshake too).
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(loop), host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError:
            raise httpx2.ConnectTimeout(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:  # refused, unreachable, or a certificate that does not verify
            raise httpx2.ConnectError(f"cannot connect to {host}:{port}: {type(exc).__name__}: {exc}") from exc
        return conn, False

    def release(self, key: _Key, conn: Connection, drain: bool = False) -> None:
        """Hand back a connection: pooled, closed, or (``drain``, body unfinished) pooled once it ends."""
        self._slots.release()
        if drain and not self._closed and conn.drainable():
            self._draining.add(conn)
            conn.drain(lambda done: self._drained(key, done))
            return
        self._keep_or_close(key, conn)

    def _drained(self, key: _Key, conn: Connection) -> None:
        self._draining.discard(conn)
        self._keep_or_close(key, conn)

    def _keep_or_close(self, key: _Key, conn: Connection) -> None:
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


def _request_head(request: httpx2.Request, length: int) -> bytes:
    """The request line and headers, ending with the blank line."""
    parts = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), request.url.raw_path)]
    has_length = False
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered == b"transfer-encoding":  # the body was read whole: send its length instead
            continue
        has_length = has_length or lowered == b"content-length"
        parts.append(b"%s: %s\r\n" % (name, value))
    if not has_length and (length or request.method in ("POST", "PUT", "PATCH")):
        parts.append(b"Content-Length: %d\r\n" % length)
    parts.append(b"\r\n")
    return b"".join(parts)
