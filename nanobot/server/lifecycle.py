"""How a chat request that did not end normally ends: the policy, apart from Tornado.

The handler runs the pipeline under the request's deadline and hands whatever
escaped it to :func:`ending`, which decides: an error for the client (a
504 at the deadline, a 503 when the server is shutting down, the error a stage
raised, a bare 500 for anything unexpected), or nothing to send because the
client left (counted as 499), or ``None`` when the exception is not the
request's to handle and must propagate.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from nanobot.errors import ApiError, ClientDisconnected, Overloaded, Timeout, internal_error

CLIENT_CLOSED = 499  # the customary "client closed request" status


@dataclass(frozen=True, slots=True)
class Ending:
    """What to do with a request whose pipeline raised."""

    error: ApiError | None = None  # send this (JSON, or an SSE frame once the stream started)
    client_left: bool = False  # send nothing: the connection is gone
    consumed_cancel: bool = False  # the cancellation was this request's own: uncancel the task
    unexpected: bool = False  # a bug: log the traceback


def ending(exc: BaseException, *, timeout: float, shutting_down: bool, client_gone: bool) -> Ending | None:
    """The ending for ``exc`` raised by the pipeline, or None to let it propagate.

    ``timeout`` is ``api.timeout`` (for the message), ``shutting_down`` says
    the server cancelled the run to stop, ``client_gone`` that the client's
    connection is closed.
    """
    if isinstance(exc, ApiError):
        return Ending(error=exc)
    if isinstance(exc, TimeoutError):
        return Ending(error=Timeout(f"The request took longer than api.timeout ({timeout:g} s).", code="timeout"))
    cancelled = isinstance(exc, asyncio.CancelledError)
    if cancelled or isinstance(exc, ClientDisconnected):
        if shutting_down and cancelled:
            return Ending(error=Overloaded("The server is shutting down.", code="shutting_down"), consumed_cancel=True)
        if client_gone:
            return Ending(client_left=True, consumed_cancel=cancelled)
        return None  # cancelled from outside (the server's own loop is ending)
    if isinstance(exc, Exception):
        return Ending(error=internal_error(), unexpected=True)
    return None  # KeyboardInterrupt, SystemExit and the like
