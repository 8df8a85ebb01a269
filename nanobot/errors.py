"""Errors a request can end with, and their OpenAI-style JSON.

Every failure a client can see is an :class:`ApiError`. Subclasses only fix
the status and the ``type``; ``error_body`` is the single place where an error
becomes the ``{"error": {...}}`` document of the OpenAI wire format.

The classes (status, then the ``type`` from :data:`ERROR_TYPES`)::

    Exception
    ├── ApiError                    500 server_error (any status when given one)
    │   ├── InvalidRequest          400 invalid_request_error
    │   ├── AuthenticationFailed    401 authentication_error
    │   ├── PermissionDenied        403 permission_error
    │   ├── NotFound                404 not_found_error
    │   ├── MethodNotAllowed        405 invalid_request_error
    │   ├── TooLarge                413 request_too_large
    │   ├── UnsupportedMediaType    415 unsupported_media_type
    │   ├── MisdirectedRequest      421 permission_error
    │   ├── UnprocessableFile       422 unprocessable_file
    │   ├── UpstreamError           502 upstream_error, code an UpstreamCode
    │   ├── Overloaded              503 overloaded_error
    │   │   └── DatabaseUnavailable 503, code database_unavailable, Retry-After
    │   └── Timeout                 504 timeout_error
    └── ClientDisconnected          not an ApiError: nobody is left to answer
"""

from __future__ import annotations

from typing import Any, Literal

# The OpenAI-style ``type`` for each status we emit.
ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    421: "permission_error",  # a Host that does not name the server (DNS rebinding)
    413: "request_too_large",
    415: "unsupported_media_type",
    431: "invalid_request_error",
    422: "unprocessable_file",
    502: "upstream_error",
    503: "overloaded_error",
    504: "timeout_error",
    500: "server_error",
}


class ApiError(Exception):
    """A failure with an HTTP status and an OpenAI-style error document."""

    status: int = 500

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.message = message
        self.type = type or ERROR_TYPES.get(self.status, "server_error")
        self.code = code
        self.param = param
        self.headers = headers or {}


class InvalidRequest(ApiError):
    status = 400


class AuthenticationFailed(ApiError):
    status = 401


class PermissionDenied(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class MethodNotAllowed(ApiError):
    status = 405


class MisdirectedRequest(ApiError):
    status = 421


class TooLarge(ApiError):
    status = 413


class UnsupportedMediaType(ApiError):
    status = 415


class UnprocessableFile(ApiError):
    status = 422


# What went wrong with the LLM call: the ``code`` of a 502 and the ``kind``
# label of ``nanobot_upstream_errors_total``.
UpstreamCode = Literal[
    "upstream_status",  # an error status (after the SDK's retries)
    "upstream_reported",  # an error sent inside an answer
    "upstream_timeout",
    "upstream_unreachable",
    "upstream_broken_stream",
    "upstream_malformed",
]


class UpstreamError(ApiError):
    status = 502

    def __init__(self, message: str, *, code: UpstreamCode) -> None:
        super().__init__(message, code=code)
        self.code: UpstreamCode = code


class Overloaded(ApiError):
    status = 503


class DatabaseUnavailable(Overloaded):
    """The PostgreSQL database cannot be reached: try again shortly."""

    def __init__(self, reason: str = "") -> None:
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"The database is unavailable{detail}; try again shortly.",
            code="database_unavailable",
            headers={"Retry-After": "1"},
        )
        self.reason = reason


class Timeout(ApiError):
    status = 504


class ClientDisconnected(Exception):
    """The client closed the connection while its response was being sent.

    Not an :class:`ApiError`: there is nobody left to answer.
    """


def error_body(err: ApiError) -> dict[str, Any]:
    """The OpenAI error document for ``err``."""
    return {
        "error": {
            "message": err.message,
            "type": err.type,
            "param": err.param,
            "code": err.code,
        }
    }


def internal_error() -> ApiError:
    """What an unexpected exception looks like to the client: no details."""
    return ApiError("The server had an error while processing your request.", status=500)
