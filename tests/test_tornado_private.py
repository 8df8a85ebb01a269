"""Pins what ``nanobot/server/tornado_private.py`` takes from Tornado against the installed version.

The handlers reach two private things (``_finished``, and under Tornado's
own server, the reference for tests/test_server_diff.py, the connection's
``stream``) and the reason phrase (``_reason``): a real request through a real
Tornado server proves each still exists and still means what the adapter
assumes, so an upgrade that drops one fails here, not on a live request.
"""

from __future__ import annotations

import asyncio
import copy
import socket
from email.utils import parsedate_to_datetime
from typing import Any

import tornado
from tornado import httputil, web
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream

from nanobot.server.tornado_private import (
    CLEARED_ATTRIBUTES,
    StreamFrames,
    client_stream,
    frame_sink,
    http_date,
    is_finished,
    mark_finished,
    reason,
    reset_response,
)


class Probe(web.RequestHandler):
    seen: dict[str, Any] = {}

    def get(self) -> None:
        seen = Probe.seen
        seen["before"] = is_finished(self)
        stream = client_stream(self)
        seen["stream"] = type(stream)
        seen["peer"] = stream.socket.getpeername()[1]
        sink = frame_sink(self)
        seen["sink"] = (type(sink), sink.stream if isinstance(sink, StreamFrames) else None)
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


class Cleared(web.RequestHandler):
    """Tornado's clear() and reset_response() on one handler: what each leaves behind."""

    seen: dict[str, Any] = {}

    def set_default_headers(self) -> None:
        self.set_header("X-Default", "1")

    def get(self) -> None:
        self.set_status(404)
        self.set_header("X-Later", "1")
        self.write(b"dropped")
        before = set(vars(self))
        self.clear()  # Tornado's own
        tornados = {name: copy.copy(getattr(self, name)) for name in CLEARED_ATTRIBUTES}
        self.set_status(404)
        self.write(b"dropped")
        reset_response(self)
        ours = {name: copy.copy(getattr(self, name)) for name in CLEARED_ATTRIBUTES}
        Cleared.seen.update(tornados=tornados, ours=ours, new=set(vars(self)) - before)
        self.finish(b"ok")


async def _fetch(path: str) -> tuple[bytes, int]:
    server = HTTPServer(web.Application([("/probe", Probe), ("/gone", Gone), ("/cleared", Cleared)]))
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
    # Under Tornado's own server, SSE frames go to that stream.
    assert seen["sink"][0] is StreamFrames and type(seen["sink"][1]) is IOStream
    assert seen["reason"] == status_line.split(b" ", 2)[2].decode()


def test_marking_finished_is_tornados_own_flag():
    answer, _ = asyncio.run(_fetch("/gone"))
    assert answer == b""  # nothing was sent: the connection just closed
    assert "finish() called twice" in Gone.seen["refused"], tornado.version


def test_reset_response_is_tornados_clear_with_a_date_of_the_second():
    answer, _ = asyncio.run(_fetch("/cleared"))
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nok")
    tornados, ours = Cleared.seen["tornados"], Cleared.seen["ours"]
    assert Cleared.seen["new"] == set(), tornado.version  # clear() sets nothing we do not set
    for name in ("_write_buffer", "_status_code", "_reason"):
        assert ours[name] == tornados[name], (name, tornado.version)
    theirs = dict(tornados["_headers"].get_all())
    assert theirs.pop("Server").startswith("TornadoServer/")  # the one header left out
    mine = dict(ours["_headers"].get_all())
    assert abs(parsedate_to_datetime(mine.pop("Date")) - parsedate_to_datetime(theirs.pop("Date"))).total_seconds() <= 1
    assert mine == theirs == {"Content-Type": "text/html; charset=UTF-8", "X-Default": "1"}


def test_http_date_is_the_formatted_second():
    now = 1_800_000_000.7
    assert http_date(now) == httputil.format_timestamp(1_800_000_000) == "Fri, 15 Jan 2027 08:00:00 GMT"
    assert http_date(now + 0.2) is http_date(now)  # formatted once for the second
    assert http_date(now + 1) == httputil.format_timestamp(now + 1)
