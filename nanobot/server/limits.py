"""What every server connection enforces and answers: the limits, the 431, the client's address."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from nanobot.errors import ApiError
from nanobot.ids import new_id
from nanobot.protocol import error_json

MAX_HEADER_BYTES = 64 * 1024  # request line and headers (Tornado's own default)
LINGER_SECONDS = 2.0  # how long the rest of an oversized request is read and dropped
LINGER_BYTES = 1024 * 1024  # and how much of it at most


def too_large_response(limit: int) -> bytes:
    err = ApiError(
        f"The request's header block is larger than the limit of {limit} bytes.",
        status=431,
        code="headers_too_large",
    )
    body = error_json(err)
    head = (
        "HTTP/1.1 431 Request Header Fields Too Large\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-ID: {new_id()}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


@dataclass(frozen=True, slots=True)
class ServerParams:
    """The limits every connection of a server enforces."""

    max_header_bytes: int = MAX_HEADER_BYTES
    max_body_bytes: int = 100 * 1024 * 1024  # Tornado's default buffer size
    header_timeout: float = 3600.0  # Tornado's default idle timeout
    body_timeout: float | None = None


class ClientContext:
    """Tornado's request context: ``remote_ip`` and ``protocol`` for ``HTTPServerRequest``."""

    __slots__ = ("address", "address_family", "remote_ip", "protocol")

    def __init__(self, address: Any, family: int | None) -> None:
        self.address = address
        self.address_family = family
        inet = family in (socket.AF_INET, socket.AF_INET6) and address is not None
        self.remote_ip = address[0] if inet else "0.0.0.0"
        self.protocol = "http"

    def __str__(self) -> str:
        return self.remote_ip if self.address_family in (socket.AF_INET, socket.AF_INET6) else str(self.address)
