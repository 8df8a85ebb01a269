"""HTTP handlers. They stay thin: guards, then the route's one job.

:class:`BaseHandler` holds what every route shares (request id, CORS, host,
origin and key checks); the chat route is in :mod:`nanobot.server.chat`.
Every error a client sees is written by :func:`~nanobot.server.render.render_error`
(the OpenAI error document, or an SSE error frame once a stream started).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import orjson
from tornado import web

from nanobot.errors import ApiError, NotFound
from nanobot.ids import new_id
from nanobot.metrics import CONTENT_TYPE
from nanobot.protocol import models_body
from nanobot.server.admission import Admission, Phase, implements
from nanobot.server.guards import CORS_ALLOW_HEADERS, CORS_ALLOW_METHODS, CORS_EXPOSE_HEADERS
from nanobot.server.openapi import document
from nanobot.server.render import error_for, exception_of, render_error
from nanobot.server.state import AppState, RoutePolicy, app_state
from nanobot.server.tornado_private import reset_response
from nanobot.services import Services

log = logging.getLogger("nanobot.server")


_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")


def request_id_header(handler: web.RequestHandler) -> str:
    """Echo the client's X-Request-ID when it is sane, else make one; set it."""
    rid = handler.request.headers.get("X-Request-ID")
    if rid is None or not _REQUEST_ID.match(rid):
        rid = new_id()
    handler.set_header("X-Request-ID", rid)
    return rid


def allowed_methods(handler: web.RequestHandler) -> str:
    """The methods ``handler``'s class implements, for a 405's Allow header."""
    cls = type(handler)
    names = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
    return ", ".join(m for m in names if implements(cls, m))


@web.stream_request_body
class BaseHandler(web.RequestHandler):
    """Request id, CORS, the guards and OpenAI-shaped errors for every route.

    Bodies are streamed (and, but for the chat route, dropped): Tornado would
    otherwise parse the body of any request, a GET included, as a form.
    """

    route = "unknown"  # the metrics label

    def initialize(self, policy: RoutePolicy) -> None:
        # The policy is declared with the route (app.py). Built here, not in
        # prepare: a method Tornado refuses itself never reaches prepare.
        self.policy = policy
        self.admission = Admission.start(self, policy, self.state)

    @property
    def state(self) -> AppState:
        return app_state(self)

    def data_received(self, chunk: bytes) -> None:
        return None

    def clear(self) -> None:
        reset_response(self)  # Tornado's clear(), the Date formatted once a second

    def set_default_headers(self) -> None:
        self.clear_header("Server")  # Tornado's names its version (reset_response sets none)
        self.request_id = request_id_header(self)
        origin = self.request.headers.get("Origin")
        if origin and self.state.origins.is_cross_allowed(origin):
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS)
            self.set_header("Vary", "Origin")

    @property
    def services(self) -> Services:
        return self.state.services

    def prepare(self) -> None:
        self.admission.run(Phase.HEAD)

    def options(self, *args: Any) -> None:
        """CORS preflight: only listed origins get here (prepare refused the rest)."""
        self.set_status(204)
        self.set_header("Access-Control-Allow-Methods", CORS_ALLOW_METHODS)
        self.set_header("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS)
        self.set_header("Access-Control-Max-Age", "600")

    def on_finish(self) -> None:
        self.services.metrics.answered(self.route, self.get_status(), self.request.request_time())

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 405:
            self.set_header("Allow", allowed_methods(self))
        self.send_api_error(error_for(self, status_code, exception_of(kwargs)))

    _body_read = False  # set once a handler method runs: the whole body is in

    def send_api_error(self, err: ApiError) -> None:
        headers = self.request.headers
        if not self._body_read and (headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in headers):
            # Answered before the body was read: Tornado drops the rest by
            # closing the connection, so say so instead of surprising a
            # keep-alive client on its next request.
            self.set_header("Connection", "close")
        render_error(self, err, redact=self.services.redact)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, ApiError) or (isinstance(value, web.HTTPError) and value.status_code < 500):
            return
        log.error("Unhandled error on %s %s", self.request.method, self.request.path, exc_info=(typ, value, tb))


class HealthHandler(BaseHandler):
    route = "/health"

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        problem = self._problem()
        if problem is None:
            self.finish(b'{"status":"ok"}')
        else:
            self.finish(orjson.dumps({"status": "unavailable", "reason": f"database unavailable: {problem}"}))

    def head(self) -> None:
        self.set_header("Content-Type", "application/json")
        self._problem()
        self.finish()

    def _problem(self) -> str | None:
        """The cached database state (no query per probe): 503 while it is down."""
        problem = self.services.database_problem()
        if problem is not None:
            self.set_status(503)
            self.set_header("Retry-After", "1")
        return problem


class ModelsHandler(BaseHandler):
    route = "/v1/models"

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(models_body(self.services.config.agents.defaults.model))


class OpenApiHandler(BaseHandler):
    """``GET /openapi.json``: built once per process, behind the key like the API."""

    route = "/openapi.json"

    def get(self) -> None:
        state = self.state
        if state.openapi_body is None:
            state.openapi_body = orjson.dumps(document(self.services.config))
        self.set_header("Content-Type", "application/json")
        self.finish(state.openapi_body)


class MetricsHandler(BaseHandler):
    """``GET /metrics``: Prometheus text format, behind the key like the API."""

    route = "/metrics"

    async def get(self) -> None:
        body = await self.services.metrics.render(self.services.outbox)
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(body)


class NotFoundHandler(BaseHandler):
    """Any path no route matches: the guards under the ``UNROUTED`` policy (the Host only), then 404."""

    def prepare(self) -> None:
        super().prepare()
        raise NotFound(f"Unknown route {self.request.path}.", code="unknown_route")
