"""The application's shared objects, typed, and each route's declared policy.

Handlers reach these through :func:`app_state` instead of string keys in
Tornado's ``settings``; the route table in ``app.py`` gives each route a
:class:`RoutePolicy`, which the guards (``admission.py``) read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from tornado import web

from nanobot.server.guards import BodyBudget, ConcurrencyGate, HostPolicy, KeyCheck, OriginPolicy

if TYPE_CHECKING:
    from nanobot.pipeline import Pipeline
    from nanobot.services import Services


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """What a route asks of the guards; the same guard list runs for every route."""

    name: str
    public: bool = False  # True: no API key needed
    check_origin: bool = True  # False: any Origin may read it (it holds nothing private)
    check_method: bool = True  # False: the route answers every method itself (the 404)
    reads_body: bool = False  # True: a POST body is read (body limits, then a concurrency slot)


API = RoutePolicy("api")
API_BODY = RoutePolicy("api_body", reads_body=True)
PUBLIC = RoutePolicy("public", public=True, check_origin=False)
UNROUTED = RoutePolicy("unrouted", public=True, check_origin=False, check_method=False)


@dataclass(slots=True)
class AppState:
    """What every handler shares, built once by ``make_app``."""

    services: Services
    pipeline: Pipeline
    hosts: HostPolicy
    origins: OriginPolicy
    keys: KeyCheck
    gate: ConcurrencyGate
    bodies: BodyBudget
    openapi_body: bytes | None = None  # /openapi.json, built on first request
    responses_pipeline: Pipeline | None = None  # POST /v1/responses: the same stages, its own wire format

    @classmethod
    def build(cls, services: Services, pipeline: Pipeline, responses_pipeline: Pipeline | None = None) -> AppState:
        api = services.config.api
        return cls(
            services=services,
            pipeline=pipeline,
            responses_pipeline=responses_pipeline,
            hosts=HostPolicy(api.api_key, api.host, api.allowed_hosts),
            origins=OriginPolicy(api.cors_origins),
            keys=KeyCheck(api.api_key),
            gate=ConcurrencyGate(api.max_concurrent_requests),
            bodies=BodyBudget(api.max_body_bytes_in_flight),
        )


class ApiApplication(web.Application):
    """Tornado's Application with the typed :class:`AppState` beside its settings."""

    def __init__(self, state: AppState, handlers: Any, **settings: Any) -> None:
        self.state = state
        super().__init__(handlers, **settings)


def app_state(handler: web.RequestHandler) -> AppState:
    return cast(ApiApplication, handler.application).state
