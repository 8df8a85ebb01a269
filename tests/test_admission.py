"""The request guards: their order, and that every route runs the same list under its policy."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import requests
from common import CHAT, HI
from servers import ServerProcess
from tornado import web
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine
from tornado.routing import PathMatches

from nanobot.config import Config
from nanobot.errors import AuthenticationFailed, MisdirectedRequest, PermissionDenied, TooLarge
from nanobot.server.admission import GUARDS, Admission, Phase, implements
from nanobot.server.app import make_app
from nanobot.server.guards import BodyBudget, ConcurrencyGate, HostPolicy, KeyCheck, OriginPolicy
from nanobot.server.state import API_BODY, AppState, RoutePolicy
from nanobot.server.static_files import STATIC_DIR

KEY = "s3cret-key"
EVIL = "https://evil.example"


def test_the_guard_list_and_its_order():
    assert [g.name for g in GUARDS] == [
        "host",
        "method",
        "origin",
        "api_key",
        "declared_length",
        "content_type",
        "body_size",
        "body_budget",
        "concurrency",
    ]
    phases = [g.phase for g in GUARDS]
    assert phases == sorted(phases)


def _state(*, host_check: bool = True, key: str = KEY, max_body: int = 100) -> AppState:
    """Host and key checks both on (a config never has both: a key opens the Host rule)."""
    config = Config()
    config.api.max_body_bytes = max_body
    return AppState(
        services=SimpleNamespace(config=config),  # type: ignore[arg-type]
        pipeline=None,  # type: ignore[arg-type]
        hosts=HostPolicy("" if host_check else key, "127.0.0.1", []),
        origins=OriginPolicy([]),
        keys=KeyCheck(key),
        gate=ConcurrencyGate(1),
        bodies=BodyBudget(1000),
    )


def _admission(state: AppState, headers: dict[str, str], policy: RoutePolicy = API_BODY) -> Admission:
    request = HTTPServerRequest(start_line=RequestStartLine("POST", CHAT, "HTTP/1.1"), headers=HTTPHeaders(headers))
    return Admission(None, request, policy, state, method_implemented=True)


def _refusal(admission: Admission) -> type[Exception]:
    with pytest.raises(Exception) as info:
        admission.run(Phase.HEAD)
    return type(info.value)


def test_host_is_refused_before_the_origin_and_the_key():
    bad = {"Host": "evil.example", "Origin": EVIL, "Authorization": "Bearer wrong", "Content-Length": "999"}
    assert _refusal(_admission(_state(), bad)) is MisdirectedRequest


def test_origin_is_refused_before_the_key_and_the_body():
    bad = {"Host": "127.0.0.1", "Origin": EVIL, "Authorization": "Bearer wrong", "Content-Length": "999"}
    admission = _admission(_state(), {**bad, "Content-Type": "multipart/form-data; boundary=x"})
    assert _refusal(admission) is PermissionDenied
    assert admission.multipart is None and admission.media_type == ""  # the body was never looked at


def test_key_is_checked_before_the_declared_length():
    bad = {"Host": "127.0.0.1", "Authorization": "Bearer wrong", "Content-Length": "999"}
    assert _refusal(_admission(_state(), bad)) is AuthenticationFailed
    good = {**bad, "Authorization": f"Bearer {KEY}"}
    assert _refusal(_admission(_state(), good)) is TooLarge


def test_content_type_is_parsed_once_for_the_body():
    admission = _admission(_state(key=""), {"Host": "127.0.0.1", "Content-Type": "Application/JSON; charset=utf-8"})
    admission.run(Phase.HEAD)
    assert admission.media_type == "application/json" and admission.multipart is None
    admission = _admission(_state(key=""), {"Host": "127.0.0.1", "Content-Type": "multipart/form-data; boundary=b"})
    admission.run(Phase.HEAD)
    assert admission.media_type == "multipart/form-data" and admission.multipart is not None


def test_body_guards_count_chunks_and_give_them_back():
    state = _state(key="", max_body=10)
    admission = _admission(state, {"Host": "127.0.0.1"})
    admission.chunk = b"12345"
    admission.run(Phase.CHUNK)
    assert state.bodies.used == 5 and admission.size == 5
    admission.chunk = b"123456"
    with pytest.raises(TooLarge):
        admission.run(Phase.CHUNK)
    admission.release()
    assert state.bodies.used == 0
    admission.release()  # twice is harmless
    assert state.bodies.used == 0


# --- every route of the app, end to end ---------------------------------------


STORED = "/v1/responses/"  # routes of a stored response: a sample id is one that is not stored


def _routes() -> list[tuple[str, str, RoutePolicy]]:
    """(sample path, a method it implements, its policy) for each route of the app."""
    app = make_app(SimpleNamespace(config=Config()))  # type: ignore[arg-type]
    asset = sorted(p.name for p in STATIC_DIR.iterdir())[0]
    found = []
    for rule in app.wildcard_router.rules:
        policy = rule.target_kwargs.get("policy")
        assert isinstance(rule.matcher, PathMatches)  # every route is a path pattern
        assert isinstance(policy, RoutePolicy), f"route {rule.matcher.regex.pattern} declares no policy"
        handler = rule.target
        assert isinstance(handler, type) and issubclass(handler, web.RequestHandler)
        method = "POST" if implements(handler, "POST") else "GET"
        path = re.sub(r"\([^)]*\)", asset, rule.matcher.regex.pattern.removesuffix("$"))
        found.append((path, method, policy))
    assert app.settings["default_handler_args"]["policy"].public
    return found


ROUTES = _routes()
ASSET = sorted(p.name for p in STATIC_DIR.iterdir())[0]
API_ROUTES = [r for r in ROUTES if not r[2].public]


def test_the_api_routes_are_all_there():
    assert {path for path, _, _ in API_ROUTES} == {
        CHAT,
        "/v1/models",
        "/openapi.json",
        "/metrics",
        "/v1/responses",
        STORED + ASSET,
        STORED + ASSET + "/input_items",
    }
    public = sorted(path for path, _, p in ROUTES if p.public)
    assert public[:2] == ["/", "/health"] and public[2].startswith("/static/") and len(public) == 3


@pytest.fixture(scope="module")
def keyed():
    with ServerProcess({"api": {"apiKey": KEY}}) as server:
        yield server


def _send(server: ServerProcess, method: str, path: str, **headers: str) -> requests.Response:
    body = {"input": "hi"} if path == "/v1/responses" else HI
    return requests.request(method, server.url + path, json=body, headers=headers, timeout=30)


@pytest.mark.parametrize(("path", "method", "policy"), ROUTES, ids=[r[0] for r in ROUTES])
def test_every_route_runs_the_guards_its_policy_declares(path, method, policy, echo_server, keyed):
    # The Host rule holds on every route of a key-less server, and the 405 on every route.
    r = _send(echo_server, method, path, Host="evil.example", Origin=EVIL)
    assert r.status_code == 421 and r.json()["error"]["code"] == "host_not_allowed"
    if not path.startswith(STORED) or path.endswith("/input_items"):  # DELETE is a stored response's own
        assert _send(echo_server, "DELETE", path).status_code == 405
    hostile = _send(echo_server, method, path, Origin=EVIL)
    keyless = _send(keyed, method, path)
    if policy.public:
        assert hostile.status_code < 400 and keyless.status_code < 400, (hostile.text, keyless.text)
    else:
        assert hostile.status_code == 403 and hostile.json()["error"]["code"] == "origin_not_allowed"
        assert keyless.status_code == 401 and keyless.json()["error"]["code"] == "missing_api_key"
        # Origin before key: a hostile page learns nothing about the key.
        assert _send(keyed, method, path, Origin=EVIL).status_code == 403
        admitted = _send(keyed, method, path, Authorization=f"Bearer {KEY}")
        if path.startswith(STORED):  # past every guard, to the store, which holds no such id
            assert admitted.status_code == 404 and admitted.json()["error"]["code"] == "response_not_found"
        else:
            assert admitted.status_code == 200
