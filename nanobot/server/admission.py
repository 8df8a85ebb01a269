"""The request guards: one ordered list, the same for every route.

Each guard is a small object with a ``name``, the ``phase`` it runs in and
one call that refuses a request by raising an :class:`~nanobot.errors.ApiError`
(or Tornado's 405). The handlers run the list phase by phase
(:meth:`Admission.run`): every ``HEAD`` guard once the headers are in, before
a byte of the body is read; the ``CHUNK`` guards on each body chunk as it
arrives; the ``BODY`` guards once the whole body is in, before the route's
own method. A guard reads the route's :class:`~nanobot.server.state.RoutePolicy`
to know whether it applies (the key check skips a public route), so a new
route only declares its policy and a new rule (say a per-key rate limit) is
one more entry in :data:`GUARDS`, at the place in the order it belongs.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

from tornado import web
from tornado.httputil import HTTPServerRequest

from nanobot.errors import TooLarge
from nanobot.multipart import MultipartReader, media_type
from nanobot.server.state import AppState, RoutePolicy


class Phase(IntEnum):
    HEAD = 1  # headers in, nothing of the body read yet
    CHUNK = 2  # one body chunk just arrived (Admission.chunk)
    BODY = 3  # the whole body is in, the route's method is next


@dataclass(slots=True, eq=False)
class Admission:
    """One request on its way past the guards, and what they hold for it."""

    handler: Any  # the RequestHandler (the gate keeps it, to end it at shutdown)
    request: HTTPServerRequest
    policy: RoutePolicy
    state: AppState
    method_implemented: bool
    chunk: bytes = b""  # the chunk the CHUNK guards are looking at
    size: int = 0  # body bytes received so far
    held: int = 0  # of those, counted against api.maxBodyBytesInFlight
    gated: bool = False  # holds a slot of api.maxConcurrentRequests
    media_type: str = ""  # the body's Content-Type media type, parsed once here
    multipart: MultipartReader | None = None  # fed while a multipart body arrives

    @classmethod
    def start(cls, handler: web.RequestHandler, policy: RoutePolicy, state: AppState) -> Admission:
        return cls(handler, handler.request, policy, state, implements(type(handler), handler.request.method or ""))

    @property
    def reads_body(self) -> bool:
        return self.policy.reads_body and self.request.method == "POST"

    def run(self, phase: Phase) -> None:
        for guard in _BY_PHASE[phase]:
            guard(self)

    def give_back_body(self) -> None:
        """The body is in (or the request over): its bytes leave the in-flight budget."""
        if self.held:
            self.state.bodies.give_back(self.held)
            self.held = 0

    def release(self) -> None:
        """Give back everything the guards took; safe to call more than once."""
        self.give_back_body()
        if self.gated:
            self.gated = False
            self.state.gate.leave(self.handler)
            self.state.services.metrics.in_flight.dec()


def implements(cls: type[web.RequestHandler], method: str) -> bool:
    """Whether ``cls`` has its own handler method for ``method`` (Tornado's own ones answer 405)."""
    name = method.lower()
    return getattr(cls, name, None) is not getattr(web.RequestHandler, name, None)


class Guard(Protocol):
    name: str
    phase: Phase

    def __call__(self, req: Admission) -> None: ...


class HostGuard:
    """421 for a Host that does not name this server (DNS rebinding); first, whoever asks."""

    name = "host"
    phase = Phase.HEAD

    def __call__(self, req: Admission) -> None:
        req.state.hosts.check(req.request.host)


class MethodGuard:
    """405 for a method the route lacks, before origin and key, so the answer depends on neither."""

    name = "method"
    phase = Phase.HEAD

    def __call__(self, req: Admission) -> None:
        if req.policy.check_method and not req.method_implemented:
            raise web.HTTPError(405)


class OriginGuard:
    """403 for a cross-site page not in api.corsOrigins, before the key: no 401 leaks to it."""

    name = "origin"
    phase = Phase.HEAD

    def __call__(self, req: Admission) -> None:
        if req.policy.check_origin:
            own = f"{req.request.protocol}://{req.request.host}"
            req.state.origins.check(req.request.headers.get("Origin"), own)


class KeyGuard:
    """401 without the API key (a preflight carries none: it only asks)."""

    name = "api_key"
    phase = Phase.HEAD

    def __call__(self, req: Admission) -> None:
        if not req.policy.public and req.request.method != "OPTIONS":
            req.state.keys.check(req.request.headers.get("Authorization"))


def too_large(limit: int) -> TooLarge:
    return TooLarge(f"The request body is larger than the limit of {limit} bytes.", code="body_too_large")


class DeclaredLengthGuard:
    """413 at once for a Content-Length past api.maxBodyBytes."""

    name = "declared_length"
    phase = Phase.HEAD

    def __call__(self, req: Admission) -> None:
        if not req.reads_body:
            return
        limit = req.state.services.config.api.max_body_bytes
        length = req.request.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            raise too_large(limit)


class ContentTypeGuard:
    """The one place Content-Type is parsed; a multipart body gets its reader, fed as it arrives.

    It refuses nothing but a multipart type without a boundary: decode, which
    reads :attr:`Admission.media_type` from the context, answers 415 for the rest.
    """

    name = "content_type"
    phase = Phase.HEAD

    def __call__(self, req: Admission) -> None:
        if not req.reads_body:
            return
        header = req.request.headers.get("Content-Type", "")
        req.media_type = media_type(header)
        if req.media_type == "multipart/form-data":
            req.multipart = MultipartReader(header, req.state.services.config.api.max_file_bytes)


class BodySizeGuard:
    """413 once the bytes received pass api.maxBodyBytes (a chunked body declares no length)."""

    name = "body_size"
    phase = Phase.CHUNK

    def __call__(self, req: Admission) -> None:
        req.size += len(req.chunk)
        limit = req.state.services.config.api.max_body_bytes
        if req.size > limit:
            raise too_large(limit)


class BodyBudgetGuard:
    """503 when the bodies arriving, all requests together, would pass api.maxBodyBytesInFlight."""

    name = "body_budget"
    phase = Phase.CHUNK

    def __call__(self, req: Admission) -> None:
        req.state.bodies.take(len(req.chunk))
        req.held += len(req.chunk)


class ConcurrencyGuard:
    """A slot of api.maxConcurrentRequests once the body is in (503 when none is free).

    The body's bytes leave the in-flight budget first: from here the request
    counts as one of the requests running instead.
    """

    name = "concurrency"
    phase = Phase.BODY

    def __call__(self, req: Admission) -> None:
        if not req.reads_body:
            return
        req.give_back_body()
        req.state.gate.enter(req.handler)
        req.gated = True
        req.state.services.metrics.in_flight.inc()


# The order is the order they run in (and the phases must not go backwards).
GUARDS: tuple[Guard, ...] = (
    HostGuard(),
    MethodGuard(),
    OriginGuard(),
    KeyGuard(),
    DeclaredLengthGuard(),
    ContentTypeGuard(),
    BodySizeGuard(),
    BodyBudgetGuard(),
    ConcurrencyGuard(),
)
assert [g.phase for g in GUARDS] == sorted(g.phase for g in GUARDS), "GUARDS must run HEAD, then CHUNK, then BODY"
_BY_PHASE = {phase: tuple(g for g in GUARDS if g.phase is phase) for phase in Phase}
