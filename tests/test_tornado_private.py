"""Pins what ``nanobot/server/tornado_private.py`` takes from Tornado against the installed version.

The handlers reach two private things (``_finished``, the connection's
``stream``) and the reason phrase (``_reason``): a real request through a real
Tornado server proves each still exists and still means what the adapter
assumes, so an upgrade that drops one fails here, not on a live request.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import tornado
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream

from nanobot.server.tornado_private import client_stream, is_finished, mark_finished, reason


class Probe(web.RequestHandler):
    seen: dict[str, Any] = {}

    def get(self) -> None:
        seen = Probe.seen
        seen["before"] = is_finished(self)
        stream = client_stream(self)
        seen["stream"] = type(stream)
        seen["peer"] = stream.socket.getpeername()[1]
        self.set_status(418)
        seen["reason"] = reason(self)
        self.finish(b"ok")
        seen["after"] = is_finished(self)


class Gone(web.RequestHandler):
    seen: dict[str, Any] = {}

    def get(self) -> None:
        mark_finished(self)
        # The flag is the one Tornado itself keeps: its own finish() now refuses.
        try:
            self.finish()
        except RuntimeError as exc:
            Gone.seen["refused"] = str(exc)
        client_stream(self).close()


async def _fetch(path: str) -> tuple[bytes, int]:
    server = HTTPServer(web.Application([("/probe", Probe), ("/gone", Gone)]))
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    server.add_sockets([sock])
    port = sock.getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        local = writer.get_extra_info("sockname")[1]
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        return answer, local
    finally:
        server.stop()


def test_finished_stream_and_reason_exist_in_the_installed_tornado():
    answer, local_port = asyncio.run(_fetch("/probe"))
    seen = Probe.seen
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.split(b" ", 2)[1] == b"418"
    assert seen["before"] is False and seen["after"] is True, tornado.version
    # The raw stream is the client's own socket, a plain IOStream (send_frame writes to it).
    assert seen["stream"] is IOStream and seen["peer"] == local_port, tornado.version
    assert seen["reason"] == status_line.split(b" ", 2)[2].decode()


def test_marking_finished_is_tornados_own_flag():
    answer, _ = asyncio.run(_fetch("/gone"))
    assert answer == b""  # nothing was sent: the connection just closed
    assert "finish() called twice" in Gone.seen["refused"], tornado.version
