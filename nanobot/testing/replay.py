"""A raw TCP upstream that replays scripted bytes, for testing HTTP clients at the wire.

Each :class:`Case` is a list of steps per request: bytes to write, pauses,
and connection events (close, mark stale). A request picks its case by the
``#case:NAME:KEY`` marker in its body (the user's text), and the n-th
request carrying one marker gets the case's n-th reply, so several clients
(say, the stock SDK and the server) can replay the same case side by side on
one port. Nothing here parses HTTP beyond finding a request's end.

:class:`LoopbackServer` and :func:`read_request` are the plumbing, for
tests that script a connection in code rather than as a case.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections import Counter
from dataclasses import dataclass
from typing import Any, Self


class _Event:
    """A connection event in a script (see ``CLOSE``, ``STALE``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


CLOSE = _Event("CLOSE")  # close the connection now
STALE = _Event("STALE")  # keep the connection, but drop it when its next request arrives


@dataclass(frozen=True)
class Trickle:
    """``data`` written ``size`` bytes at a time, ``pause`` seconds apart (each a TCP segment)."""

    data: bytes
    size: int = 1
    pause: float = 0.001


Step = bytes | float | _Event | Trickle

MARKER = re.compile(rb"#case:([\w.-]+):([\w.-]+)")
MAX_REQUEST_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Case:
    """One upstream behaviour: the steps of its first reply, and of the later ones.

    ``then`` answers the second and later requests of a marker (default: the
    first reply again); ``turns`` is how many requests a client makes in a row,
    for behaviours that only show on the next request (pooling, closes).
    """

    name: str
    stream: bool
    first: tuple[Step, ...]
    then: tuple[Step, ...] | None = None
    turns: int = 1

    def reply(self, index: int) -> tuple[Step, ...]:
        return self.first if index == 0 or self.then is None else self.then


class LoopbackServer:
    """A TCP server on a free loopback port running ``handle`` per connection.

    With ``tls`` (a server context) it speaks TLS, as ``https://localhost:<port>``.
    Leaving the ``async with`` cancels the connections still open.
    """

    url: str

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._tls = tls

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._tls)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"https://localhost:{port}" if self._tls else f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # the server is closing: asyncio would log a cancelled connection task as an error
        finally:
            writer.close()
            self._tasks.discard(task)


class ReplayServer(LoopbackServer):
    """Serves ``cases``; records each marker's request heads in ``heads``."""

    def __init__(self, cases: dict[str, Case]) -> None:
        super().__init__()
        self.cases = cases
        self.heads: dict[str, list[bytes]] = {}
        self._served: Counter[str] = Counter()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stale = False
        while (request := await read_request(reader)) is not None:
            if stale:
                return  # a pooled connection the upstream had given up on
            head, body = request
            found = MARKER.search(body)
            if found is None or found[1].decode() not in self.cases:
                writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                continue
            key = found[0].decode()
            self.heads.setdefault(key, []).append(head)
            index = self._served[key]
            self._served[key] += 1
            for step in self.cases[found[1].decode()].reply(index):
                if step is CLOSE:
                    return
                if step is STALE:
                    stale = True
                elif not isinstance(step, _Event):
                    await _play(writer, step)


async def _play(writer: asyncio.StreamWriter, step: bytes | float | Trickle) -> None:
    if isinstance(step, float):
        await asyncio.sleep(step)
    elif isinstance(step, Trickle):
        for start in range(0, len(step.data), step.size):
            writer.write(step.data[start : start + step.size])
            await writer.drain()
            await asyncio.sleep(step.pause)
    else:
        writer.write(step)
        await writer.drain()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """The next request's head and body, or None once the client closed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = re.search(rb"(?im)^content-length: *(\d+)", head)
    size = int(length[1]) if length else 0
    if size > MAX_REQUEST_BYTES:
        raise ConnectionError("request body too large")
    return head, await reader.readexactly(size)
