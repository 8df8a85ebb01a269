"""Who may talk to the server: host, origin, API key, and how many at once.

These checks run before any stage reads the body. The origin rule is what
keeps a hostile web page from driving a key-less local server with a
"simple" cross-site request (multipart needs no CORS preflight); the host
rule keeps one that rebinds its own name to 127.0.0.1 (DNS rebinding), and so
passes as "same origin", from doing the same.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from nanobot.errors import AuthenticationFailed, MisdirectedRequest, Overloaded, PermissionDenied

CORS_ALLOW_HEADERS = "Authorization, Content-Type, X-Request-ID, X-Session-Id"
CORS_ALLOW_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_EXPOSE_HEADERS = "X-Request-ID"


class HostPolicy:
    """Without an API key, serve only a ``Host`` that names this server.

    A DNS-rebinding page is same-origin with its own name, which then points
    at 127.0.0.1: the Origin rule cannot tell it apart, its ``Host`` can.
    Loopback names and addresses, ``api.host`` and ``api.allowedHosts``
    (matched by name, whatever the port) name the server; anything else is
    421. With a key every request must prove itself anyway, so any Host goes.
    """

    def __init__(self, api_key: str, host: str, allowed: list[str]) -> None:
        self.open = bool(api_key)
        self.names = frozenset(_host_name(h) for h in ("localhost", host, *allowed) if h)

    def check(self, host: str) -> None:
        if self.open or self.allows(host):
            return
        raise MisdirectedRequest(
            f"Host '{host[:200]}' does not name this server: add it to api.allowedHosts, or set api.apiKey.",
            code="host_not_allowed",
        )

    def allows(self, host: str) -> bool:
        name = _host_name(host)
        # *.localhost never leaves the machine (RFC 6761; browsers enforce it).
        if name in self.names or name.endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False


def _host_name(host: str) -> str:
    """``host[:port]`` or ``[v6][:port]`` → the lowercase name, no port, no trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        host = name
    return host.rstrip(".")


class OriginPolicy:
    def __init__(self, allowed: list[str]) -> None:
        self.any = "*" in allowed
        self.allowed = frozenset(o.rstrip("/").lower() for o in allowed if o != "*")

    def is_cross_allowed(self, origin: str) -> bool:
        return self.any or origin.rstrip("/").lower() in self.allowed

    def check(self, origin: str | None, own_origin: str) -> None:
        """403 unless there is no Origin, it is our own, or it is listed."""
        if not origin:  # absent (or empty): not a cross-origin browser request
            return
        if origin.rstrip("/").lower() == own_origin.lower() or self.is_cross_allowed(origin):
            return
        raise PermissionDenied(
            f"Origin '{origin}' is not allowed (add it to api.corsOrigins).", code="origin_not_allowed"
        )


class KeyCheck:
    def __init__(self, api_key: str) -> None:
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    def check(self, authorization: str | None) -> None:
        if self.expected is None:
            return
        if not authorization:
            raise AuthenticationFailed("Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key")
        # The scheme is case-insensitive (RFC 9110); the key is compared in
        # constant time over the whole header, so timing reveals nothing of it.
        given = authorization.strip()
        if given[:7].lower() == "bearer ":
            given = "Bearer " + given[7:]
        if not hmac.compare_digest(given.encode("utf-8", "replace"), self.expected):
            raise AuthenticationFailed("Incorrect API key provided.", code="invalid_api_key")


class BodyBudget:
    """Bytes of request bodies still arriving, all requests together.

    A request only counts against the concurrency gate once its body is in,
    so clients that stall mid-upload cannot take every slot; this bounds what
    they can hold instead. The chunk that would cross the bound makes its
    request 503 (Retry-After), and a body's bytes come back when it is
    complete or its request ends.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> None:
        if self.used + n > self.limit:
            raise Overloaded(
                f"Too many request bodies are arriving at once (api.maxBodyBytesInFlight, {self.limit} bytes); "
                "retry shortly.",
                code="body_bytes_in_flight",
                headers={"Retry-After": "1"},
            )
        self.used += n

    def give_back(self, n: int) -> None:
        self.used -= n


class ConcurrencyGate:
    """At most ``limit`` requests in flight; past it, 503 at once (no queue).

    It also knows the requests it let in, so shutdown can end the ones still
    running after the grace period with a clear error.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active: set[Any] = set()
        self.closing = False

    @property
    def in_flight(self) -> int:
        return len(self.active)

    def enter(self, request: Any) -> None:
        if self.closing:
            raise Overloaded("The server is shutting down.", code="shutting_down", headers={"Retry-After": "1"})
        if len(self.active) >= self.limit:
            raise Overloaded(
                "The server is at its limit of concurrent requests; retry shortly.",
                code="too_many_requests",
                headers={"Retry-After": "1"},
            )
        self.active.add(request)

    def leave(self, request: Any) -> None:
        self.active.discard(request)
