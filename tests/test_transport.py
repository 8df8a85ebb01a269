"""PooledTransport against scripted loopback servers: exact bytes, real sockets, no mocks."""

from __future__ import annotations

import asyncio
import functools
import gc
import gzip
import hashlib
import json
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanobot.config import AgentDefaults, ProviderConfig
from nanobot.errors import UpstreamError
from nanobot.idle_clock import IdleClock
from nanobot.providers.base import ClientOffer, Completion
from nanobot.providers.connection import Connection
from nanobot.providers.openai_compat import OpenAICompatProvider
from nanobot.providers.parse import Malformed
from nanobot.providers.transport import (
    BODY_EXTENSION,
    DRAIN_SECONDS,
    MAX_BUFFER_BYTES,
    MAX_HEAD_BYTES,
    PooledTransport,
)
from nanobot.testing.replay import LoopbackServer, read_request
from nanobot.testing.tls import make_tls_files

pytestmark = pytest.mark.timeout(20)

READ_SIZE = 256 * 1024  # the most an asyncio socket transport hands over per data_received


# --- a scripted upstream ----------------------------------------------------------------


class Upstream(LoopbackServer):
    """A loopback server running `handler(upstream, reader, writer, n)` for its n-th connection."""

    def __init__(self, handler: Callable[..., Awaitable[None]], tls: ssl.SSLContext | None = None) -> None:
        super().__init__(tls)
        self.handler = handler
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await self.handler(self, reader, writer, self.connections)

    async def read_request(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
        """The next request's head and body (also recorded), or None when the client closed."""
        request = await read_request(reader)
        if request is not None:
            self.requests.append(request)
        return request


def response(body: bytes = b"ok", *headers: str, status: str = "200 OK") -> bytes:
    """A Content-Length response."""
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def serving(*replies: bytes, close_after: int | None = None) -> Callable[..., Awaitable[None]]:
    """A handler answering the i-th request of a connection with replies[i] (the last repeats)."""

    async def handler(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        served = 0
        while served != close_after and await up.read_request(reader) is not None:
            writer.write(replies[min(served, len(replies) - 1)])
            await writer.drain()
            served += 1

    return handler


async def stall(reader: asyncio.StreamReader) -> None:
    """Wait, sending nothing, until the client closes the connection."""
    while await reader.read(65536):
        pass


def client(
    max_connections: int = 4, timeout: float = 5.0, tls: ssl.SSLContext | None = None, **timeouts: float
) -> httpx2.AsyncClient:
    transport = PooledTransport(max_connections, tls=tls)
    return httpx2.AsyncClient(transport=transport, timeout=httpx2.Timeout(timeout, **timeouts), trust_env=False)


def aio(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test body in a fresh loop and check that it leaked no task."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        async def main() -> None:
            await test(*args, **kwargs)
            await asyncio.sleep(0)
            assert len(asyncio.all_tasks()) == 1, asyncio.all_tasks()

        asyncio.run(main())

    return run


def causes(exc: BaseException | None) -> list[type[BaseException]]:
    """The types along an exception's explicit ``__cause__`` chain."""
    found = []
    while exc is not None:
        found.append(type(exc))
        exc = exc.__cause__
    return found


# --- the tests --------------------------------------------------------------------------


@aio
async def test_bodies_read_whole_and_request_bytes_exact() -> None:
    """Content-Length and chunked bodies are read whole; request line, Host, length and body arrive exact."""
    replies = (response(b"hello world"), CHUNKED_HEAD + chunk(b"abc") + chunk(b"defg") + b"0\r\n\r\n")

    async def parts() -> Any:
        yield b"ab"
        yield b"cd"

    async with Upstream(serving(*replies, response(b""))) as up, client() as http:
        first = await http.post(f"{up.url}/v1/x?q=1", content=b"payload")
        second = await http.get(f"{up.url}/y")
        third = await http.put(f"{up.url}/z", content=parts())  # chunked by httpx2: sent with a length
    assert (first.status_code, first.content, first.reason_phrase) == (200, b"hello world", "OK")
    assert second.content == b"abcdefg"
    assert third.status_code == 200
    host = up.url.removeprefix("http://").encode()
    (head1, body1), (head2, body2), (head3, body3) = up.requests
    assert head1.startswith(b"POST /v1/x?q=1 HTTP/1.1\r\n") and body1 == b"payload"
    assert b"\r\nHost: %s\r\n" % host in head1 and b"\r\nContent-Length: 7\r\n" in head1
    assert head2.startswith(b"GET /y HTTP/1.1\r\n") and b"content-length" not in head2.lower() and body2 == b""
    assert b"\r\nContent-Length: 4\r\n" in head3 and b"transfer-encoding" not in head3.lower() and body3 == b"abcd"


@aio
async def test_response_header_values_decode_as_httpx_would() -> None:
    """ASCII heads are marked so up front; a UTF-8 or Latin-1 value still decodes as httpx decides."""
    replies = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-Name: %s\r\n\r\nx" % value
        for value in (b"plain", "café".encode(), "café".encode("latin-1"))
    ]
    async with Upstream(serving(*replies)) as up, client() as http:
        answers = [await http.get(up.url) for _ in replies]
    assert [a.headers["x-name"] for a in answers] == ["plain", "café", "café"]
    assert [a.headers.encoding for a in answers] == ["ascii", "utf-8", "iso-8859-1"]


@pytest.mark.parametrize(("extra", "connections"), [((), 1), (("Connection: close",), 2)])
@aio
async def test_keep_alive_reuse_unless_connection_close(extra: tuple[str, ...], connections: int) -> None:
    """Sequential requests share one TCP connection; `Connection: close` responses are never reused."""
    async with Upstream(serving(response(b"x", *extra))) as up, client() as http:
        for _ in range(2):
            assert (await http.get(up.url)).content == b"x"
    assert up.connections == connections


@aio
async def test_close_delimited_body() -> None:
    """A body with neither Content-Length nor Transfer-Encoding ends when the server closes."""
    body = os.urandom(300_000)

    async def handler(up: Upstream, reader: Any, writer: asyncio.StreamWriter, n: int) -> None:
        await up.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n" + body[:1000])
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(body[1000:])

    async with Upstream(handler) as up, client() as http:
        assert (await http.get(up.url)).content == body
        assert (await http.get(up.url)).content == body  # the closed connection was not pooled
    assert up.connections == 2


@pytest.mark.parametrize("server_closes", ["while idle", "on the next request"])
@aio
async def test_stale_idle_connection_retried_on_fresh_one(server_closes: str) -> None:
    """A pooled connection the server dropped is replaced transparently (the retry path when unseen)."""

    async def handler(up: Upstream, reader: Any, writer: Any, n: int) -> None:
        await serving(response(b"one" if n == 1 else b"two"), close_after=1 if n == 1 else None)(up, reader, writer, n)
        if n == 1 and server_closes == "on the next request":
            await up.read_request(reader)  # take the second request, then hang up without answering

    async with Upstream(handler) as up, client() as http:
        assert (await http.get(up.url)).content == b"one"
        await asyncio.sleep(0.05)
        assert (await http.get(up.url)).content == b"two"
    assert up.connections == 2
    assert len(up.requests) == (2 if server_closes == "while idle" else 3)


@pytest.mark.parametrize("answered_first", [False, True])
@aio
async def test_fresh_connection_closed_unanswered_is_protocol_error(answered_first: bool) -> None:
    """A fresh connection closed without an answer raises RemoteProtocolError, retried at most once."""

    async def handler(up: Upstream, reader: Any, writer: Any, n: int) -> None:
        if n == 1 and answered_first:
            await serving(response(), close_after=1)(up, reader, writer, n)
        await up.read_request(reader)

    async with Upstream(handler) as up, client() as http:
        if answered_first:
            assert (await http.get(up.url)).status_code == 200
        with pytest.raises(httpx2.RemoteProtocolError):
            await http.get(up.url)
    assert up.connections == (2 if answered_first else 1)


@aio
async def test_close_mid_chunked_body_is_read_error_and_not_pooled() -> None:
    """A connection closed inside a chunked body raises ReadError while iterating and is dropped."""

    async def handler(up: Upstream, reader: Any, writer: asyncio.StreamWriter, n: int) -> None:
        if n > 1:
            return await serving(response(b"fine"))(up, reader, writer, n)
        await up.read_request(reader)
        writer.write(CHUNKED_HEAD + chunk(b"hello"))
        await writer.drain()

    async with Upstream(handler) as up, client() as http:
        got = b""
        with pytest.raises(httpx2.ReadError):
            async with http.stream("GET", up.url) as resp:
                async for data in resp.aiter_raw():
                    got += data
        assert got == b"hello"
        assert (await http.get(up.url)).content == b"fine"
    assert up.connections == 2


@aio
async def test_read_timeout_after_headers() -> None:
    """Headers then silence raise ReadTimeout after about the read timeout."""

    async def handler(up: Upstream, reader: Any, writer: asyncio.StreamWriter, n: int) -> None:
        await up.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await stall(reader)

    async with Upstream(handler) as up, client(read=0.3) as http:
        start = time.monotonic()
        with pytest.raises(httpx2.ReadTimeout):
            await http.get(up.url)
        assert 0.25 <= time.monotonic() - start < 2


@aio
async def test_slow_steady_stream_does_not_time_out() -> None:
    """A chunk every 0.1 s for 1 s under a 0.3 s read timeout completes: the timer is pushed forward."""

    async def handler(up: Upstream, reader: Any, writer: asyncio.StreamWriter, n: int) -> None:
        await up.read_request(reader)
        writer.write(CHUNKED_HEAD)
        for i in range(10):
            await asyncio.sleep(0.1)
            writer.write(chunk(b"%d" % i))
        writer.write(b"0\r\n\r\n")
        await stall(reader)

    async with Upstream(handler) as up, client(read=0.3) as http:
        start = time.monotonic()
        assert (await http.get(up.url)).content == b"0123456789"
        assert time.monotonic() - start >= 0.9


@aio
async def test_calls_in_flight_share_one_read_timeout_clock() -> None:
    """Four calls at once under one read timeout: one clock watches all four, the
    three that stall time out, the steady one completes, and nothing is left watched."""

    async def handler(up: Upstream, reader: Any, writer: asyncio.StreamWriter, n: int) -> None:
        await up.read_request(reader)
        writer.write(CHUNKED_HEAD)
        if n == 1:  # the first connection
            for i in range(8):
                await asyncio.sleep(0.1)
                writer.write(chunk(b"%d" % i))
            writer.write(b"0\r\n\r\n")
        await stall(reader)

    clock = IdleClock.of(asyncio.get_running_loop(), 0.3)
    async with Upstream(handler) as up, client(read=0.3) as http:
        calls = [asyncio.ensure_future(http.get(up.url)) for _ in range(4)]
        while len(clock) < 4 and not any(call.done() for call in calls):
            await asyncio.sleep(0.01)
        assert len(clock) == 4
        results = await asyncio.gather(*calls, return_exceptions=True)
    bodies = [r.content for r in results if isinstance(r, httpx2.Response)]
    assert bodies == [b"01234567"]
    assert sum(isinstance(r, httpx2.ReadTimeout) for r in results) == 3
    assert len(clock) == 0


HUGE_FIELD = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (1 << 20)  # a header that never ends
PADDED_HEAD = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: %s\r\n" % (b"p" * 1000) * 300 + b"\r\n"
BAD_RESPONSES = {
    "garbage": (b"garbage\r\n\r\n", httpx2.RemoteProtocolError),
    "bad status": (b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", httpx2.RemoteProtocolError),
    "bad length": (b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n", httpx2.RemoteProtocolError),
    # Not an httpx error: the SDK would retry those, and the upstream did answer.
    "oversize head": (PADDED_HEAD, Malformed),
    "endless header": (HUGE_FIELD, Malformed),
}


@pytest.mark.parametrize(("payload", "error"), BAD_RESPONSES.values(), ids=BAD_RESPONSES.keys())
@aio
async def test_malformed_or_oversize_head_is_an_error(payload: bytes, error: type[Exception]) -> None:
    """Malformed responses raise RemoteProtocolError, heads over MAX_HEAD_BYTES Malformed, promptly."""
    assert len(payload) > MAX_HEAD_BYTES or len(payload) < 100

    async def handler(up: Upstream, reader: Any, writer: asyncio.StreamWriter, n: int) -> None:
        await up.read_request(reader)
        writer.write(payload)
        await stall(reader)

    async with Upstream(handler) as up, client(read=5) as http:
        start = time.monotonic()
        with pytest.raises(error):
            await http.get(up.url)
        assert time.monotonic() - start < 2


@aio
async def test_a_head_the_sdk_reads_is_read() -> None:
    """A 90 KiB head (the SDK's client reads 100 KiB and more) is a normal answer."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + b"X-Pad: %s\r\n" % (b"p" * 1000) * 90 + b"\r\n"
    async with Upstream(serving(head + b"ok")) as up, client() as http:
        assert (await http.get(up.url)).content == b"ok"


@aio
async def test_connection_refused_is_connect_error() -> None:
    """Nothing listening gives ConnectError caused by ConnectionRefusedError."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with client() as http:
        with pytest.raises(httpx2.ConnectError) as info:
            await http.get(f"http://127.0.0.1:{port}/")
    assert ConnectionRefusedError in causes(info.value)


@aio
async def test_pool_limit_times_out_then_frees() -> None:
    """With one slot busy a request hits PoolTimeout; closing the response frees the slot."""
    async with Upstream(serving(response(b"x"))) as up, client(1) as http:
        busy = await http.send(http.build_request("GET", up.url), stream=True)
        start = time.monotonic()
        with pytest.raises(httpx2.PoolTimeout):
            await http.get(up.url, timeout=httpx2.Timeout(5, pool=0.2))
        assert time.monotonic() - start >= 0.15
        await busy.aclose()
        assert (await http.get(up.url, timeout=httpx2.Timeout(5, pool=0.01))).content == b"x"
    assert up.connections == 1


@aio
async def test_flow_control_bounds_buffer_and_keeps_body_intact() -> None:
    """4 MiB sent fast to a slow reader arrive intact; reading pauses at the buffer bound, no false timeout."""
    body = os.urandom(4 << 20)

    async def handler(up: Upstream, reader: Any, writer: asyncio.StreamWriter, n: int) -> None:
        await up.read_request(reader)
        writer.write(response(body))
        await writer.drain()
        await stall(reader)

    async with Upstream(handler) as up, client(read=0.3) as http:
        async with http.stream("GET", up.url) as resp:
            conn = resp.stream._stream._conn  # type: ignore[union-attr]  # BoundAsyncStream -> _Body
            await asyncio.sleep(0.5)  # longer than the read timeout: the transport, not the upstream, waits
            assert conn._paused and MAX_BUFFER_BYTES < conn._buffered <= MAX_BUFFER_BYTES + READ_SIZE
            digest, sizes = hashlib.sha256(), []
            async for data in resp.aiter_raw():
                digest.update(data)
                sizes.append(len(data))
                if len(sizes) < 5:
                    await asyncio.sleep(0.05)
    assert sum(sizes) == len(body) and digest.digest() == hashlib.sha256(body).digest()
    assert max(sizes) <= MAX_BUFFER_BYTES + READ_SIZE


@aio
async def test_cancelled_reader_then_close_drops_connection_and_frees_slot() -> None:
    """Cancelling a body reader, then closing the response, closes the socket and frees the slot."""
    saw_eof = asyncio.Event()

    async def handler(up: Upstream, reader: Any, writer: asyncio.StreamWriter, n: int) -> None:
        if n > 1:
            return await serving(response(b"next"))(up, reader, writer, n)
        await up.read_request(reader)
        writer.write(CHUNKED_HEAD + chunk(b"first"))
        await stall(reader)
        saw_eof.set()

    async def consume(resp: httpx2.Response) -> None:
        async for _ in resp.aiter_raw():
            got_one.set()

    got_one = asyncio.Event()
    async with Upstream(handler) as up, client(1) as http:
        resp = await http.send(http.build_request("GET", up.url), stream=True)
        reader = asyncio.create_task(consume(resp))
        await asyncio.wait_for(got_one.wait(), 2)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        assert not saw_eof.is_set()
        await resp.aclose()
        await asyncio.wait_for(saw_eof.wait(), 2)
        assert (await http.get(up.url, timeout=httpx2.Timeout(5, pool=0.05))).content == b"next"
    assert up.connections == 2


@aio
async def test_the_body_extension_reads_chunks_then_refuses_after_close() -> None:
    """The reader handed out as BODY_EXTENSION reads the body; once closed it raises, and the
    connection it read from serves the next request untouched."""
    async with Upstream(serving(response(b"first"), response(b"next"))) as up, client(1) as http:
        resp = await http.send(http.build_request("GET", up.url), stream=True)
        body = resp.extensions[BODY_EXTENSION]
        got = []
        while (data := await body.read_some()) is not None:
            got.append(data)
        assert b"".join(got) == b"first"
        await resp.aclose()
        with pytest.raises(httpx2.StreamClosed):
            await body.read_some()
        assert (await http.get(up.url)).content == b"next"
    assert up.connections == 1


@aio
async def test_interim_100_continue_then_final_response() -> None:
    """A 100 Continue (with a header) before the real 200 is skipped; the connection stays reusable."""

    async def handler(up: Upstream, reader: Any, writer: asyncio.StreamWriter, n: int) -> None:
        while await up.read_request(reader) is not None:
            writer.write(b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.02)
            writer.write(response(b"done", "X-Final: 1"))

    async with Upstream(handler) as up, client() as http:
        for _ in range(2):
            resp = await http.post(up.url, content=b"{}")
            assert (resp.status_code, resp.reason_phrase, resp.content) == (200, "OK", b"done")
            assert resp.headers.get("x-final") == "1" and "x-interim" not in resp.headers
    assert up.connections == 1


COMPLETION = (
    b'{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"hi there"},"finish_reason":"stop"}]}'
)
SERVER_ERROR = b'{"error":{"message":"boom","type":"server_error"}}'


@aio
async def test_through_openai_sdk() -> None:
    """The SDK over PooledTransport parses a completion and maps a 500 to InternalServerError."""
    replies = (
        response(COMPLETION, "Content-Type: application/json"),
        response(SERVER_ERROR, "Content-Type: application/json", status="500 Internal Server Error"),
    )
    async with Upstream(serving(*replies)) as up:
        http = httpx2.AsyncClient(transport=PooledTransport(4), trust_env=False)
        async with openai.AsyncOpenAI(base_url=f"{up.url}/v1", api_key="k", http_client=http, max_retries=0) as sdk:
            messages: Any = [{"role": "user", "content": "hello"}]
            done = await sdk.chat.completions.create(model="m", messages=messages)
            assert done.choices[0].message.content == "hi there"
            with pytest.raises(openai.InternalServerError) as info:
                await sdk.chat.completions.create(model="m", messages=messages)
            assert info.value.status_code == 500
    head, body = up.requests[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"authorization: bearer k\r\n" in head.lower() and b'"model":"m"' in body.replace(b" ", b"")
    assert up.connections == 1


def sse_reply(words: list[str], *, gzipped: bool) -> bytes:
    """A streamed chat completion, one chunk per word, in one chunked HTTP body."""
    chunks = [{"choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in words]
    sse = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    headers = ["Content-Type: text/event-stream", "Transfer-Encoding: chunked"]
    if gzipped:
        sse = gzip.compress(sse)
        headers.append("Content-Encoding: gzip")
    pieces = [sse[i : i + 97] for i in range(0, len(sse), 97)]  # split mid-line and mid-frame
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    return ("HTTP/1.1 200 OK\r\n" + "\r\n".join(headers) + "\r\n\r\n").encode() + body


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
@aio
async def test_provider_streams_through_the_transport(gzipped: bool) -> None:
    """The provider reads plain SSE through the transport's own reader and gzip SSE decoded."""
    words = [f"w{i} " for i in range(300)]
    async with Upstream(serving(sse_reply(words, gzipped=gzipped))) as up:
        base = f"{up.url}/v1/" if gzipped else f"{up.url}/v1"  # with and without the trailing slash
        provider = OpenAICompatProvider("up", ProviderConfig(api_key="k", api_base=base), AgentDefaults())
        try:
            for _ in range(2):  # and the connection is reused for the next call
                texts = [e async for e in provider.stream([{"role": "user", "content": "go"}], None)]
                assert texts[:-1] == words and isinstance(texts[-1], Completion) and texts[-1].text == "".join(words)
        finally:
            await provider.close()
    assert up.connections == 1
    assert all(head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") for head, _ in up.requests)


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
@aio
async def test_provider_reads_a_whole_reply_through_the_transport(gzipped: bool) -> None:
    """A client that does not stream: one JSON body, read by the same reader, plain or gzip."""
    reply = json.dumps(
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": "all at once"}, "finish_reason": "stop"}]}
    ).encode()
    headers = ["Content-Type: application/json"] + (["Content-Encoding: gzip"] if gzipped else [])
    async with Upstream(serving(response(gzip.compress(reply) if gzipped else reply, *headers))) as up:
        provider = OpenAICompatProvider("up", ProviderConfig(api_key="k", api_base=f"{up.url}/v1"), AgentDefaults())
        try:
            for _ in range(2):
                out = [e async for e in provider.stream([{"role": "user", "content": "go"}], None, incremental=False)]
                assert out[0] == "all at once" and isinstance(out[-1], Completion) and out[-1].text == "all at once"
        finally:
            await provider.close()
    assert up.connections == 1
    assert json.loads(up.requests[0][1])["stream"] is False


@pytest.mark.parametrize("incremental", [True, False], ids=["stream", "whole"])
@aio
async def test_a_body_that_stalls_is_a_timeout(incremental: bool) -> None:
    """Headers, then silence past the read timeout: the turn fails as timed out, not as a broken stream."""

    async def handler(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await up.read_request(reader)
        writer.write(CHUNKED_HEAD + chunk(b'data: {"choices": []}\n\n' if incremental else b'{"choi'))
        await writer.drain()
        await stall(reader)

    async with Upstream(handler) as up:
        cfg = ProviderConfig(api_key="k", api_base=f"{up.url}/v1", timeout=0.3, max_retries=0)
        provider = OpenAICompatProvider("up", cfg, AgentDefaults())
        try:
            with pytest.raises(UpstreamError) as caught:
                async for _ in provider.stream([{"role": "user", "content": "go"}], None, incremental=incremental):
                    pass
        finally:
            await provider.close()
    assert caught.value.code == "upstream_timeout" and "timed out" in caught.value.message


def sse_head_and_done(words: list[str]) -> bytes:
    """A chunked streamed answer up to its [DONE] frame, without the body's last chunk."""
    return sse_reply(words, gzipped=False).removesuffix(b"0\r\n\r\n")


async def ask_provider(url: str, **config: Any) -> tuple[str, float]:
    """One streamed turn through a fresh provider: its text and how long it took."""
    provider = OpenAICompatProvider("up", ProviderConfig(api_key="k", api_base=f"{url}/v1", **config), AgentDefaults())
    try:
        start = time.monotonic()
        events = [e async for e in provider.stream([{"role": "user", "content": "go"}], None)]
        assert isinstance(events[-1], Completion)
        return events[-1].text, time.monotonic() - start
    finally:
        await provider.close()


@aio
async def test_done_ends_the_turn_and_a_late_body_end_still_pools() -> None:
    """The turn ends at [DONE]; the body's end, sent only after that, drains and the connection is reused."""
    turn_over = asyncio.Event()

    async def handler(up: Upstream, reader: Any, writer: asyncio.StreamWriter, n: int) -> None:
        while await up.read_request(reader) is not None:
            writer.write(sse_head_and_done(["a ", "b"]))
            await turn_over.wait()  # the client has its answer before the body ends
            writer.write(b"0\r\n\r\n")

    async with Upstream(handler) as up:
        provider = OpenAICompatProvider("up", ProviderConfig(api_key="k", api_base=f"{up.url}/v1"), AgentDefaults())
        try:
            for _ in range(2):
                events = [e async for e in provider.stream([{"role": "user", "content": "go"}], None)]
                assert isinstance(events[-1], Completion) and events[-1].text == "a b"
                turn_over.set()
                await asyncio.sleep(0.02)
                turn_over.clear()
        finally:
            await provider.close()
    assert up.connections == 1


@pytest.mark.parametrize("after_done", ["pings", "silence", "close"])
@aio
async def test_done_ends_the_turn_whatever_follows(after_done: str) -> None:
    """After [DONE], pings or silence are not waited for (the connection is closed soon after),
    nor is a close an error."""
    closed = asyncio.Event()

    async def pings(writer: asyncio.StreamWriter) -> None:
        while True:
            writer.write(chunk(b": ping\n\n"))
            await asyncio.sleep(0.02)

    async def handler(up: Upstream, reader: Any, writer: asyncio.StreamWriter, n: int) -> None:
        await up.read_request(reader)
        writer.write(sse_head_and_done(["all ", "there"]))
        if after_done == "close":
            return
        pinging = asyncio.create_task(pings(writer)) if after_done == "pings" else None
        await stall(reader)
        closed.set()
        if pinging is not None:
            pinging.cancel()
            await asyncio.gather(pinging, return_exceptions=True)

    async with Upstream(handler) as up:
        text, took = await ask_provider(up.url, timeout=5)
        assert text == "all there" and took < 1
        if after_done != "close":
            await asyncio.wait_for(closed.wait(), DRAIN_SECONDS + 1)  # not pooled: the body never ended


@aio
async def test_oversize_head_is_malformed_and_not_retried() -> None:
    """The upstream did answer: a head over the bound is a malformed answer, asked once."""
    async with Upstream(serving(PADDED_HEAD)) as up:
        with pytest.raises(UpstreamError) as caught:
            await ask_provider(up.url, max_retries=2)
    assert caught.value.code == "upstream_malformed" and "head" in caught.value.message
    assert len(up.requests) == 1


def written_in_pieces(reply: bytes, cuts: list[int]) -> Callable[..., Awaitable[None]]:
    """A handler answering each request with ``reply`` cut at ``cuts``, each piece sent on its own."""

    async def handler(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while await up.read_request(reader) is not None:
            edges = [0, *sorted(c % (len(reply) + 1) for c in cuts), len(reply)]
            for start, end in zip(edges, edges[1:], strict=False):
                writer.write(reply[start:end])
                await writer.drain()
                await asyncio.sleep(0)  # a separate read on the other side, most of the time

    return handler


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12), gzipped=st.booleans())
def test_any_split_of_a_streamed_reply_reads_the_same(cuts: list[int], gzipped: bool) -> None:
    """Wherever the upstream's bytes are cut (head, chunk sizes, frames), the words come out whole."""
    words = [f"w{i} " for i in range(40)]

    @aio
    async def run() -> None:
        async with Upstream(written_in_pieces(sse_reply(words, gzipped=gzipped), cuts)) as up:
            cfg = ProviderConfig(api_key="k", api_base=f"{up.url}/v1")
            provider = OpenAICompatProvider("up", cfg, AgentDefaults())
            try:
                for _ in range(2):
                    texts = [e async for e in provider.stream([{"role": "user", "content": "go"}], None)]
                    assert texts[:-1] == words
                    # The turn ends at [DONE]; a body end sent later drains in the background,
                    # and the connection is pooled once it arrives (real turns are this far apart).
                    await asyncio.sleep(0.05)
            finally:
                await provider.close()
        assert up.connections == 1

    run()


# --- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def test_https_shares_the_pool_and_its_keep_alive(tls_files: Any) -> None:
    """An https upstream: verified TLS, the same exact bytes, one connection for several requests."""

    @aio
    async def run() -> None:
        async with Upstream(serving(response(b"first"), response(b"second")), tls=tls_files.server_context()) as up:
            assert up.url.startswith("https://localhost:")
            async with client(tls=tls_files.client_context()) as http:
                first = await http.post(up.url + "/v1/x", content=b"one")
                second = await http.post(up.url + "/v1/x", content=b"two")
            assert (first.content, second.content) == (b"first", b"second")
            assert up.connections == 1
            heads = [head for head, _ in up.requests]
            assert heads[0].startswith(b"POST /v1/x HTTP/1.1\r\n")
            assert b"\r\nhost: localhost:" in heads[0].lower()
            assert [body for _, body in up.requests] == [b"one", b"two"]

    run()


def test_a_certificate_that_does_not_verify_is_a_connect_error(tls_files: Any, tmp_path: Any) -> None:
    stranger = make_tls_files(tmp_path)  # trusts a CA that did not sign the server's certificate

    @aio
    async def run() -> None:
        async with Upstream(serving(response()), tls=tls_files.server_context()) as up:
            async with client(tls=stranger.client_context()) as http:
                with pytest.raises(httpx2.ConnectError) as caught:
                    await http.post(up.url + "/v1/x", content=b"x")
            assert ssl.SSLCertVerificationError in causes(caught.value)
            assert up.requests == []
        # asyncio's own server-side handshake task sees the refusal a moment later.
        for _ in range(100):
            if len(asyncio.all_tasks()) == 1:
                break
            await asyncio.sleep(0.01)

    run()


@aio
async def test_a_scheme_other_than_http_and_https_is_refused_before_connecting() -> None:
    async with client() as http:
        for url in ("ftp://127.0.0.1:9/v1/x", "ws://127.0.0.1:9/v1/x"):
            with pytest.raises(httpx2.UnsupportedProtocol, match="speaks http and https"):
                await http.post(url, content=b"x")


class _HeadFields:
    """What httptools reads back from a request head."""

    def __init__(self) -> None:
        self.fields: list[tuple[bytes, bytes]] = []
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))


_NAMES = st.sampled_from(
    [b"X-Content-Length", b"Content-Length-X", b"Transfer-Encodings", b"X-Transfer-Encoding", b"Accept", b"X-Req"]
)


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE"]),
    extra=st.lists(st.tuples(_NAMES, st.binary(min_size=1, max_size=8).map(lambda b: b.hex().encode()))),
    body=st.binary(max_size=20),
    length=st.booleans(),
    chunked=st.booleans(),
)
def test_the_request_head_carries_the_requests_fields_and_one_length(
    method: str, extra: list[tuple[bytes, bytes]], body: bytes, length: bool, chunked: bool
) -> None:
    import httptools

    from nanobot.providers.transport import _request_head

    fields = [*extra]
    if length:
        fields.append((b"Content-Length", b"%d" % len(body)))
    if chunked:
        fields.append((b"Transfer-Encoding", b"chunked"))
    request = httpx2.Request(method, "http://upstream.test/v1/chat/completions?x=1", headers=fields)
    head = _request_head(request, len(body))
    read = _HeadFields()
    parser = httptools.HttpRequestParser(read)
    parser.feed_data(head)
    assert parser.get_method() == method.encode() and read.url == b"/v1/chat/completions?x=1"
    sent = [(name, value) for name, value in request.headers.raw if name.lower() != b"transfer-encoding"]
    has_length = any(name.lower() == b"content-length" for name, _ in request.headers.raw)
    if not has_length and (body or method == "POST"):
        sent.append((b"Content-Length", b"%d" % len(body)))
    assert read.fields == sent


def live(kind: type) -> int:
    """How many ``kind`` objects are alive (after a full collection)."""
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, kind))


@aio
async def test_an_open_stream_keeps_only_the_body_of_its_response() -> None:
    """While the answer streams, neither the httpx response (headers, extensions) nor its
    request (the whole prompt) is kept, nor the connection's copy of the headers."""
    release = asyncio.Event()

    async def handler(up: Upstream, reader: Any, writer: asyncio.StreamWriter, n: int) -> None:
        while await up.read_request(reader) is not None:
            reply = sse_head_and_done(["first ", "second"])
            done_at = reply.index(b"data: [DONE]")
            cut = reply.index(b"\n\n") + 2  # the head and the first chunk's frame, then a pause
            writer.write(reply[:cut])
            await release.wait()
            writer.write(reply[cut:done_at] + reply[done_at:] + b"0\r\n\r\n")

    async with Upstream(handler) as up:
        provider = OpenAICompatProvider("up", ProviderConfig(api_key="k", api_base=f"{up.url}/v1"), AgentDefaults())
        try:
            events = provider.stream([{"role": "user", "content": "go"}], None)
            assert await anext(events) == "first "
            assert live(httpx2.Response) == 0 and live(httpx2.Request) == 0
            assert all(not conn.headers for conn in gc.get_objects() if isinstance(conn, Connection))
            release.set()
            rest = [e async for e in events]
            assert rest[0] == "second" and isinstance(rest[-1], Completion)
        finally:
            await provider.close()


SCHEMA: dict[str, Any] = {
    "type": "function",
    "function": {"name": "look", "parameters": {"type": "object", "properties": {}}},
}


@pytest.mark.parametrize("system", [True, False], ids=["system", "no-system"])
@pytest.mark.parametrize("size", ["short", "large"])
@pytest.mark.parametrize("tools", ["server", "client", "both", "none"])
@aio
async def test_tools_reach_the_upstream_exactly(tools: str, size: str, system: bool) -> None:
    """The body goes out in pieces (the system message's and the server tools' JSON shared by
    every call): what arrives is the one JSON document, with or without a system message,
    whichever tools a call offers, short or past the exact-copy size."""
    server = [SCHEMA] if tools in ("server", "both") else None
    mine = {**SCHEMA, "function": {**SCHEMA["function"], "name": "mine"}}
    offer = ClientOffer(json.dumps(mine).encode(), "auto") if tools in ("client", "both") else None
    text = "go \x00 é" + ("x" * 100_000 if size == "large" else "")  # a NUL in the prompt is escaped
    user = {"role": "user", "content": text}
    head_messages = [{"role": "system", "content": "be \x00 brief ü"}] if system else []
    async with Upstream(serving(sse_reply(["ok"], gzipped=False))) as up:
        provider = OpenAICompatProvider("up", ProviderConfig(api_key="k", api_base=f"{up.url}/v1"), AgentDefaults())
        try:
            events = [e async for e in provider.stream([*head_messages, user], server, client=offer)]
            assert isinstance(events[-1], Completion) and events[-1].text == "ok"
        finally:
            await provider.close()
    head, body = up.requests[0]
    assert b"\r\nContent-Length: %d\r\n" % len(body) in head
    sent = json.loads(body)
    assert sent["messages"] == [*head_messages, user]
    expected = (server or []) + ([mine] if offer else [])
    assert sent.get("tools") == (expected or None)
    assert sent.get("tool_choice") == ("auto" if offer else None)


def test_calls_with_one_system_message_share_its_encoded_piece() -> None:
    """The system message is encoded once while the same object comes back, and each call's
    body holds that one piece; another message object (another session's prompt) is its own."""
    config = ProviderConfig(api_key="k", api_base="http://127.0.0.1:9/v1")
    provider = OpenAICompatProvider("up", config, AgentDefaults())
    system = {"role": "system", "content": "be brief " * 100}

    def body(messages: list[dict[str, Any]]) -> tuple[bytes, ...]:
        return provider._request_body(messages, [SCHEMA], True, None, None)

    window = [system, {"role": "user", "content": "one"}]
    first = body(window)
    assert window[0] is system  # the mark stood in for it only while the body was encoded
    second = body([system, {"role": "user", "content": "two"}])
    shared = [piece for piece in first if any(piece is other for other in second)]
    assert json.loads(b"".join(shared[:1])) == system
    other = body([{"role": "system", "content": "be brief " * 100}, {"role": "user", "content": "two"}])
    assert not any(piece is shared[0] for piece in other)
    assert json.loads(b"".join(other)) == json.loads(b"".join(second))
    broken: list[dict[str, Any]] = [system, {"role": "user", "content": object()}]
    with pytest.raises(TypeError):
        body(broken)
    assert broken[0] is system  # put back when the encoding fails too
    asyncio.run(provider.close())
