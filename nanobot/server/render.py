"""Where every error a client sees is written: one function for every handler.

An error before the response's headers went out is the OpenAI error document
with its status; once an SSE stream has started it can only be an error
frame, after which the stream ends without ``[DONE]``.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from tornado import web

from nanobot.errors import ApiError, internal_error
from nanobot.protocol import error_frame, error_json


def _unchanged(text: str) -> str:
    return text


def render_error(
    handler: web.RequestHandler,
    err: ApiError,
    *,
    stream_started: bool = False,
    redact: Callable[[str], str] = _unchanged,
    frame: Callable[[ApiError], bytes] | None = None,
) -> None:
    """Send ``err`` and finish the response; ``redact`` masks configured secrets in its message.

    ``frame``: how a started stream carries the error (the Responses API's
    ``response.failed``); by default the Chat Completions error frame.
    """
    err.message = redact(err.message)
    if stream_started:
        handler.write((frame or error_frame)(err))
        handler.finish()
        return
    handler.set_status(err.status)
    for name, value in err.headers.items():
        handler.set_header(name, value)
    handler.set_header("Content-Type", "application/json")
    handler.finish(error_json(err))


def error_for(handler: web.RequestHandler, status_code: int, exc: BaseException | None) -> ApiError:
    """The :class:`ApiError` a client sees for what Tornado's ``write_error`` was given.

    An ApiError is itself; Tornado's own 4xx (a 405, say) keeps its status
    with a plain message; anything else is a 500 that says nothing about its
    cause.
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, web.HTTPError) and exc.status_code < 500:
        if status_code == 405:
            return ApiError(f"Method {handler.request.method} is not allowed on {handler.request.path}.", status=405)
        reason = exc.log_message or _phrase(status_code)
        return ApiError(reason % exc.args if exc.args else reason, status=status_code)
    return internal_error()


def _phrase(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return "Error"


def exception_of(kwargs: dict[str, Any]) -> BaseException | None:
    """The exception in ``write_error``'s keyword arguments, if Tornado passed one."""
    info = kwargs.get("exc_info")
    return info[1] if info else None
