"""Tornado's own HTTP server, with the 431 answer: the reference the server connection is compared with.

The server runs :class:`~nanobot.server.connection.ServerConnection`;
this is Tornado's ``HTTPServer`` with the same 431 answer added, kept so
that ``tests/test_server_diff.py`` can send the same bytes to both and
compare the answers (``NANOBOT_HTTP=tornado`` makes ``serve()`` use it).

Tornado reads a request's header block with a byte cap (``max_header_size``);
past it the IOStream closes itself on the spot, before any connection
delegate or handler hears of the request, so the client only saw the
connection drop. :class:`HeaderLimitStream` notices that close while a header
block is being read and, instead of closing its socket, hands it to
:func:`answer_too_large`: a 431 with the OpenAI error body, then a short,
bounded read of whatever the client still sends, so that closing does not
reset the connection before the client has read the answer.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, cast

from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream, StreamClosedError, UnsatisfiableReadError

from nanobot.server.limits import LINGER_BYTES, LINGER_SECONDS, MAX_HEADER_BYTES, too_large_response

_answers: set[asyncio.Task[None]] = set()  # running answers, kept from the garbage collector


async def answer_too_large(sock: socket.socket, limit: int) -> None:
    """Send the 431 on ``sock``, let the client finish sending (bounded), then close."""
    stream = IOStream(sock)
    try:
        async with asyncio.timeout(LINGER_SECONDS):
            await stream.write(too_large_response(limit))
            sock.shutdown(socket.SHUT_WR)
            dropped = 0
            while dropped < LINGER_BYTES:
                dropped += len(await stream.read_bytes(64 * 1024, partial=True))
    except (StreamClosedError, TimeoutError, OSError):
        pass  # the client closed (the usual end), took too long, or went away
    finally:
        stream.close()


class HeaderLimitStream(IOStream):
    """An IOStream that answers 431 when the header block it is reading runs past its cap."""

    limit = MAX_HEADER_BYTES
    _reading_head = False

    def read_until_regex(self, regex: bytes, max_bytes: int | None = None) -> Any:
        # HTTP1Connection reads the request line and headers, and nothing else, this way.
        self._reading_head = True
        future = cast("asyncio.Future[bytes]", super().read_until_regex(regex, max_bytes))
        future.add_done_callback(self._head_read)
        return future

    def _head_read(self, _: Any) -> None:
        self._reading_head = False

    def close_fd(self) -> None:
        if self._reading_head and isinstance(self.error, UnsatisfiableReadError) and self.socket is not None:
            # Tornado's own close_fd leaves None here too: the stream is closed.
            sock, self.socket = self.socket, None  # type: ignore[assignment]
            task = asyncio.get_running_loop().create_task(answer_too_large(sock, self.limit))
            _answers.add(task)
            task.add_done_callback(_answers.discard)
            return
        super().close_fd()


class ApiHTTPServer(HTTPServer):
    """Tornado's HTTPServer on :class:`HeaderLimitStream` connections."""

    def initialize(self, *args: Any, max_header_size: int | None = None, **kwargs: Any) -> None:
        self.header_limit = max_header_size or MAX_HEADER_BYTES
        kwargs["max_header_size"] = self.header_limit
        super().initialize(*args, **kwargs)

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> Any:
        if type(stream) is IOStream:  # plain TCP (TLS streams are left as they are)
            stream = HeaderLimitStream(
                stream.socket, max_buffer_size=stream.max_buffer_size, read_chunk_size=stream.read_chunk_size
            )
            stream.limit = self.header_limit
        return super().handle_stream(stream, address)
