"""Every reach into Tornado's private or loosely typed parts, in one place.

The handlers need two things Tornado has no public API for: whether a
handler already finished (``RequestHandler._finished``, also set to end a
request whose client left without sending anything), and the client's
IOStream (``request.connection.stream``), written to directly for SSE frames
and closed to end an HTTP/1.0 stream. ``tests/test_tornado_private.py`` pins
these against the installed Tornado, so an upgrade that drops them fails
there rather than on a live request. :func:`reset_response` is
``RequestHandler.clear`` with the ``Date`` header formatted once a second
(Tornado formats it for every handler it creates, ~5 µs) and without the
``Server`` header every handler removes again; the same test pins it
against Tornado's own.
"""

from __future__ import annotations

import time
from http.client import responses
from typing import cast

from tornado import httputil, web
from tornado.iostream import IOStream

# What this module touches, for the pinning test.
FINISHED_ATTRIBUTE = "_finished"
REASON_ATTRIBUTE = "_reason"
# What RequestHandler.clear() sets, besides calling set_default_headers().
CLEARED_ATTRIBUTES = ("_headers", "_write_buffer", "_status_code", "_reason")
DEFAULT_CONTENT_TYPE = "text/html; charset=UTF-8"

_date: tuple[int, str] = (0, "")


def http_date(now: float) -> str:
    """The ``Date`` header for ``now``: the same text for a whole second, so formatted once."""
    global _date
    second = int(now)
    if _date[0] != second:
        _date = (second, httputil.format_timestamp(second))
    return _date[1]


def reset_response(handler: web.RequestHandler) -> None:
    """What ``RequestHandler.clear()`` does, less its per-call date formatting and Server header."""
    handler._headers = httputil.HTTPHeaders({"Content-Type": DEFAULT_CONTENT_TYPE, "Date": http_date(time.time())})
    handler.set_default_headers()
    handler._write_buffer = []
    handler._status_code = 200
    handler._reason = responses[200]


def is_finished(handler: web.RequestHandler) -> bool:
    """True once ``handler`` finished its response (or was marked so)."""
    return bool(getattr(handler, FINISHED_ATTRIBUTE))


def mark_finished(handler: web.RequestHandler) -> None:
    """End ``handler`` without sending anything: its client is gone."""
    setattr(handler, FINISHED_ATTRIBUTE, True)


def reason(handler: web.RequestHandler) -> str:
    """The reason phrase Tornado chose for the status being sent."""
    return str(getattr(handler, REASON_ATTRIBUTE))


def client_stream(handler: web.RequestHandler) -> IOStream:
    """The client's connection; Tornado types it as any HTTP connection (HTTP1Connection has one)."""
    return cast(IOStream, handler.request.connection.stream)  # type: ignore[union-attr]
