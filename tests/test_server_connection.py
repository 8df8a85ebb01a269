"""The server connection's own bounds: buffering, back-pressure, timeouts, a client that leaves.

In-process, on loopback sockets, with a small Tornado application: what the
byte-for-byte comparison with Tornado (``test_server_diff.py``) cannot show,
because it is about what the server holds and runs rather than what it sends.
Where Tornado's behaviour is the reference (a response shorter or longer than
its ``Content-Length``), the same handler runs under both servers.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
from tornado import httputil, web
from tornado.httpserver import HTTPServer

from nanobot.server.connection import MAX_HELD_BYTES, ServerConnection
from nanobot.server.limits import ServerParams
from nanobot.server.listener import ApiServer
from nanobot.server.tornado_private import frame_sink

pytestmark = pytest.mark.timeout(60)


class Recorder(web.Application):
    """An application that keeps the server connections it was given, and what its handlers saw."""

    def __init__(self, handlers: list[Any]) -> None:
        super().__init__(handlers)
        self.connections: list[object] = []
        self.seen: dict[str, Any] = {}
        self.release = asyncio.Event()

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> Any:
        if server_conn not in self.connections:
            self.connections.append(server_conn)
        return super().start_request(server_conn, request_conn)


class Numbered(web.RequestHandler):
    def get(self, number: str) -> None:
        self.finish(number.encode())


class Held(web.RequestHandler):
    """Answers once the test releases it."""

    async def get(self) -> None:
        app: Recorder = self.application  # type: ignore[assignment]
        await asyncio.wait_for(app.release.wait(), 30)
        self.finish(b"released")


class Firehose(web.RequestHandler):
    """Streams 200 frames of 64 KiB, waiting whenever the sink says the client lags."""

    async def get(self) -> None:
        app: Recorder = self.application  # type: ignore[assignment]
        self.set_header("Content-Type", "application/octet-stream")
        await self.flush()
        sink = frame_sink(self)
        waits, buffered = 0, 0
        for _ in range(200):
            backlog = sink.send_frame(b"x" * 65536)
            transport = self.request.connection.conn._transport  # type: ignore[union-attr]
            buffered = max(buffered, transport.get_write_buffer_size())
            if backlog is not None:
                waits += 1
                await asyncio.wait_for(backlog, 30)
        app.seen.update(waits=waits, buffered=buffered)
        self.finish()


class Forever(web.RequestHandler):
    """Waits until its client leaves; then cancels its own run, as the chat handler does."""

    task: asyncio.Task[Any] | None = None

    async def get(self) -> None:
        self.task = asyncio.current_task()
        await asyncio.sleep(3600)

    def on_connection_close(self) -> None:
        app: Recorder = self.application  # type: ignore[assignment]
        app.seen["left"] = True
        if self.task is not None:
            self.task.cancel()


class WrongLength(web.RequestHandler):
    """Declares a length of 10 and sends 5 (``/short``) or 15 (``/long``)."""

    def get(self, kind: str) -> None:
        app: Recorder = self.application  # type: ignore[assignment]
        self.set_header("Content-Length", "10")
        try:
            self.write(b"x" * (5 if kind == "short" else 15))
            self.finish()
        except Exception as exc:
            app.seen["error"] = f"{type(exc).__name__}: {exc}"
            raise


def make_app() -> Recorder:
    return Recorder(
        [
            (r"/n/(\d+)", Numbered),
            (r"/held", Held),
            (r"/firehose", Firehose),
            (r"/forever", Forever),
            (r"/(short|long)", WrongLength),
        ]
    )


@asynccontextmanager
async def serving(app: Recorder, kind: str = "ours", header_timeout: float = 3600.0) -> AsyncIterator[int]:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    server: ApiServer | HTTPServer
    if kind == "ours":
        server = ApiServer(app, ServerParams(header_timeout=header_timeout), backlog=128)
        await server.add_sockets([sock])
    else:
        server = HTTPServer(app, idle_connection_timeout=header_timeout)
        server.add_sockets([sock])
    try:
        yield sock.getsockname()[1]
    finally:
        server.stop()


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 30)


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def test_pipelined_requests_are_held_bounded_and_answered_in_order() -> None:
    count = 8000  # ~200 KB of requests behind one that waits: past the bound

    async def test() -> None:
        app = make_app()
        async with serving(app) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
            writer.write(b"".join(b"GET /n/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(count)))
            writer.write(b"GET /n/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % count)
            await writer.drain()
            await asyncio.sleep(0.5)  # the server reads what it may while /held waits
            (conn,) = app.connections
            assert isinstance(conn, ServerConnection)
            assert conn._reading_paused and conn._held <= MAX_HELD_BYTES + 256 * 1024
            app.release.set()
            raw = await read_until_closed(reader)
            writer.close()
        bodies = [part.rsplit(b"\r\n\r\n", 1)[-1] for part in raw.split(b"HTTP/1.1 200 OK")[1:]]
        assert bodies == [b"released", *(b"%d" % i for i in range(count + 1))]

    run(test)


def test_a_client_that_does_not_read_holds_the_stream_back() -> None:
    async def test() -> None:
        app = make_app()
        async with serving(app) as port:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.sendall(b"GET /firehose HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            await asyncio.sleep(0.5)  # not reading: the server's buffer fills and it must wait
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            received = 0
            while chunk := await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 30):
                received += len(chunk)
            sock.close()
        assert app.seen["waits"] > 0  # the sink said so at least once
        # What the transport buffered stayed near its high-water mark, not the whole 12.5 MB.
        assert app.seen["buffered"] < 1024 * 1024
        assert received > 200 * 65536

    run(test)


def test_an_idle_keep_alive_connection_is_closed_after_the_header_timeout() -> None:
    async def test() -> None:
        app = make_app()
        async with serving(app, header_timeout=0.3) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /n/1 HTTP/1.1\r\nHost: x\r\n\r\n")
            raw = await read_until_closed(reader)  # the answer, then the close once idle
            writer.close()
        assert raw.startswith(b"HTTP/1.1 200 OK") and raw.endswith(b"\r\n\r\n1")

    run(test)


def test_a_client_that_leaves_ends_its_request_and_leaves_no_task() -> None:
    async def test() -> None:
        app = make_app()
        async with serving(app) as port:
            before = asyncio.all_tasks()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.2)
            writer.close()
            for _ in range(100):
                await asyncio.sleep(0.02)
                if app.seen.get("left") and asyncio.all_tasks() <= before:
                    break
            assert app.seen.get("left") is True
            assert asyncio.all_tasks() <= before  # the handler's run ended; the connection ran none
            (conn,) = app.connections
            assert isinstance(conn, ServerConnection) and conn.closed and conn._current is None

    run(test)


@pytest.mark.parametrize("path", ["/short", "/long"])
def test_a_response_off_its_content_length_fails_as_under_tornado(path: str) -> None:
    async def once(kind: str) -> tuple[bytes, str]:
        app = make_app()
        async with serving(app, kind) as port:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
            raw = await read_until_closed(reader)
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0]
        return status + b"|" + body, app.seen["error"]

    async def test() -> None:
        theirs, ours = await once("tornado"), await once("ours")
        assert ours == theirs
        assert "HTTPOutputError" in ours[1]

    run(test)
