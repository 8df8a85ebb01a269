"""Every reach into Tornado's private or loosely typed parts, in one place.

The handlers need two things Tornado has no public API for: whether a
handler already finished (``RequestHandler._finished``, also set to end a
request whose client left without sending anything), and the client's
IOStream (``request.connection.stream``), written to directly for SSE frames
and closed to end an HTTP/1.0 stream. ``tests/test_tornado_private.py`` pins
these against the installed Tornado, so an upgrade that drops them fails
there rather than on a live request.
"""

from __future__ import annotations

from typing import cast

from tornado import web
from tornado.iostream import IOStream

# What this module touches, for the pinning test.
FINISHED_ATTRIBUTE = "_finished"
REASON_ATTRIBUTE = "_reason"


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
