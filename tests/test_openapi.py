"""GET /openapi.json: a valid OpenAPI 3.1 document that stays true.

The document must list exactly the app's routes and methods, and a catalogue
of live requests (every success shape and every error row of the contract
this server can be made to produce) is checked against it: each status is
documented for its operation, with its headers, media type and body schema.
Request bodies are checked too: the server refuses (400) exactly the bodies
the document calls invalid.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import time
import uuid
from types import SimpleNamespace

import pytest
import requests
from common import CHAT, data_url
from fault_helpers import OpenApiDoc, png_1x1
from openapi_spec_validator import validate as validate_openapi
from servers import ServerProcess, merge, upstream_config
from tornado import web

from nanobot.config import Config, parse_config
from nanobot.server.app import make_app
from nanobot.server.openapi import document

KEY = "doc-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ALLOWED_ORIGIN = "https://app.example"


def configs() -> list[Config]:
    keyed = Config()
    keyed.api.api_key = "k"
    ignore = Config()
    ignore.api.client_history = "ignore"
    ignore.agents.defaults.model = "gpt-x"
    use = Config()
    use.api.client_history = "use"
    no_system = Config()
    no_system.api.client_system = "reject"
    return [Config(), keyed, ignore, use, no_system]


@pytest.mark.parametrize(
    "config", configs(), ids=["default", "keyed", "client-history-ignore", "client-history-use", "no-system"]
)
def test_document_is_valid_openapi_31(config):
    doc = document(config)
    validate_openapi(doc)  # the OpenAPI 3.1 meta-schema, refs included
    assert doc["openapi"] == "3.1.0"
    json.dumps(doc)  # plain JSON all the way down
    op_ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(op_ids) == len(set(op_ids))
    model = config.agents.defaults.model
    assert doc["components"]["schemas"]["Model"]["properties"]["id"] == {"const": model}
    if config.api.api_key:
        assert doc["security"] == [{"bearerAuth": []}]
        assert doc["paths"]["/health"]["get"]["security"] == []
        assert "401" in doc["paths"]["/v1/models"]["get"]["responses"]
    else:
        assert "security" not in doc and "securitySchemes" not in doc["components"]
        assert "401" not in doc["paths"]["/v1/models"]["get"]["responses"]
    messages = doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]["messages"]
    turn = messages["anyOf"][0] if config.api.client_history == "reject" else messages
    assert ("maxContains" in turn) == (config.api.client_history == "reject" != config.api.client_system)
    assert "X-Session-Id" in json.dumps(doc["paths"]["/v1/chat/completions"]["post"]["parameters"])


def test_request_schema_follows_client_history_and_system():
    """What each setting accepts, as the document says it (the server's side is in test_client_messages)."""
    system, user = {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}
    conversation = [
        system,
        user,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "r"},
        {"role": "assistant", "content": "ok"},
        user,
    ]
    expected = {  # (clientHistory, clientSystem) -> which of these bodies are valid
        ("reject", "append"): (True, True, False),
        ("reject", "reject"): (True, False, False),
        ("ignore", "append"): (True, True, True),
        ("use", "append"): (True, True, True),
        ("use", "reject"): (True, False, False),
    }
    for (history, system_mode), valid in expected.items():
        config = Config()
        config.api.client_history, config.api.client_system = history, system_mode
        doc = OpenApiDoc(document(config))
        for messages, ok in zip(([user], [system, user], conversation), valid, strict=False):
            problems = doc.request_body_errors("post", CHAT, "application/json", {"messages": messages})
            assert (problems == []) == ok, (history, system_mode, messages, problems)


def _sample(template: str) -> str:
    """A concrete path for an OpenAPI path template ("/static/{path}" -> "/static/sample")."""
    return re.sub(r"\{[^}]+\}", "sample", template)


def test_every_route_and_method_is_documented():
    """Adding a route (or a method) without documenting it fails here, and so does a stale entry."""
    config = Config()
    app = make_app(SimpleNamespace(config=config))
    doc = document(config)
    rules = [(rule.matcher.regex, rule.target) for rule in app.wildcard_router.rules]
    for template, item in doc["paths"].items():
        matching = [(regex, handler) for regex, handler in rules if regex.fullmatch(_sample(template))]
        assert len(matching) == 1, f"{template} matches {len(matching)} routes of the app"
        handler = matching[0][1]
        implemented = {
            m.lower()
            for m in handler.SUPPORTED_METHODS
            if getattr(handler, m.lower()) is not getattr(web.RequestHandler, m.lower())
        }
        assert set(item) == implemented, template
    for regex, _ in rules:
        sample = re.sub(r"\([^)]*\)", "sample", regex.pattern.removesuffix("$"))
        assert any(_sample(t) == sample for t in doc["paths"]), f"route {regex.pattern} is not documented"


def test_request_schema_accepts_what_the_sdk_sends():
    """The openai SDK's own request (all its defaults) fits the document."""
    doc = OpenApiDoc(document(Config()))
    body = {
        "model": "echo",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.7,
        "max_tokens": 10,
        "n": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u",
        "tools": [],
        "session_id": "s",
    }
    assert doc.request_body_errors("post", CHAT, "application/json", body) == []


# ------------------------------------------------------------------------------------------ live


@pytest.fixture(scope="module")
def doc_server(upstream):
    config = merge(
        upstream_config(upstream.url),
        {
            "api": {
                "apiKey": KEY,
                "corsOrigins": [ALLOWED_ORIGIN],
                "timeout": 3.0,  # under #slow:4000 (the 504 case), with room for a loaded machine
                "maxConcurrentRequests": 1,
                "maxFileBytes": 2048,
                "maxBodyBytes": 65536,
                "pingInterval": 0.2,
            }
        },
    )
    server = ServerProcess(config)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def live_doc(doc_server):
    r = requests.get(doc_server.url + "/openapi.json", headers=AUTH, timeout=10)
    assert r.status_code == 200
    return OpenApiDoc(r.json())


def test_openapi_json_is_served_behind_the_key(doc_server):
    assert requests.get(doc_server.url + "/openapi.json", timeout=10).status_code == 401
    r = requests.get(doc_server.url + "/openapi.json", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert r.status_code == 401
    r = requests.get(doc_server.url + "/openapi.json", headers=AUTH, timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    assert r.json() == document(parse_config(doc_server.config))


def _user(content, **extra):
    return {"messages": [{"role": "user", "content": content}], "session_id": uuid.uuid4().hex, **extra}


def _file_part(data: bytes, name="a.txt"):
    return {"type": "file", "file": {"filename": name, "file_data": data_url(data)}}


PNG = png_1x1()
# (id, JSON body, expected status). The status decides what the document must say of the body:
# 400 means "invalid against the request schema", anything else "valid".
CLIENT_TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}

JSON_CASES = [
    ("plain", _user("hello"), 200),
    (
        "sdk-fields",
        _user(
            "hi",
            model="scripted",
            temperature=0.2,
            max_tokens=5,
            n=1,
            user="u",
            tools=[],
            stream=False,
            stream_options=None,
            tool_choice="auto",
        ),
        200,
    ),
    ("nulls", {"messages": [{"role": "user", "content": "x"}], "session_id": None, "model": None, "stream": None}, 200),
    ("empty-model", _user("x", model=""), 200),
    (
        "parts",
        _user(
            [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": data_url(PNG)}},
                _file_part(b"some notes\n", "notes.md"),
            ]
        ),
        200,
    ),
    ("image-url-string", _user([{"type": "image_url", "image_url": data_url(PNG, "image/png")}]), 200),
    (
        "folded-base64",
        _user([{"type": "file", "file": {"file_data": "data:text/plain;base64,eHh4\neHh4\n  eA=="}}]),
        200,
    ),
    ("stream", _user("stream me", stream=True, stream_options={"include_usage": True}), 200),
    (
        "stream-tools",
        _user(
            '#tool:message {"content":"inline"} go',
            stream=True,
            stream_options={"include_tool_events": True, "include_usage": True},
        ),
        200,
    ),
    ("stream-error-frame", _user("#die", stream=True), 200),
    ("client-tool-call", _user('#call:f {"a": 1} go', tools=[CLIENT_TOOL], parallel_tool_calls=True), 200),
    (
        "client-tool-stream",
        _user(
            "#call:f go",
            tools=[CLIENT_TOOL],
            tool_choice="required",
            stream=True,
            stream_options={"include_usage": True},
        ),
        200,
    ),
    ("tools-not-list", _user("x", tools={"f": CLIENT_TOOL}), 400),
    ("tool-bad-name", _user("x", tools=[{"type": "function", "function": {"name": "a b"}}]), 400),
    ("tool-not-function", _user("x", tools=[{"type": "web_search"}]), 400),
    ("tool-choice-word", _user("x", tools=[CLIENT_TOOL], tool_choice="always"), 400),
    (
        "response-format",
        _user("x", response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}),
        200,
    ),
    ("response-format-text", _user("x", response_format={"type": "text"}), 200),
    ("bad-response-format", _user("x", response_format={"type": "xml"}), 400),
    ("n-2", _user("x", n=2), 400),
    ("n-1", _user("x", n=1, logprobs=False, modalities=["text"]), 200),
    ("logprobs", _user("x", logprobs=True), 400),
    ("no-messages", {"model": "scripted"}, 400),
    ("messages-not-list", {"messages": "hi"}, 400),
    ("two-messages", {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}, 400),
    ("system-role", {"messages": [{"role": "system", "content": "a"}]}, 400),
    ("system-message", {"messages": [{"role": "system", "content": "a"}, {"role": "user", "content": "b"}]}, 200),
    (
        "developer-parts",
        {
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "a"}]},
                {"role": "user", "content": "b"},
            ]
        },
        200,
    ),
    (
        "system-after-user",
        {"messages": [{"role": "user", "content": "b"}, {"role": "system", "content": "a"}]},
        400,
    ),
    (
        "system-too-long",
        {"messages": [{"role": "system", "content": "a" * 40000}, {"role": "user", "content": "b"}]},
        400,
    ),
    (
        "system-image",
        {
            "messages": [
                {"role": "system", "content": [{"type": "image_url", "image_url": "x"}]},
                {"role": "user", "content": "b"},
            ]
        },
        400,
    ),
    (
        "history",
        {
            "messages": [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"},
            ]
        },
        400,
    ),
    ("blank", _user("   "), 400),
    ("no-content", {"messages": [{"role": "user"}]}, 400),
    ("empty-parts", _user([]), 400),
    ("blank-text-part", _user([{"type": "text", "text": " \n"}]), 400),
    ("bad-part-type", _user([{"type": "audio", "audio": {}}]), 400),
    ("wrong-model", _user("x", model="gpt-4o"), 400),
    ("empty-session", _user("x", session_id=""), 400),
    ("long-session", _user("x", session_id="s" * 257), 400),
    ("control-session", _user("x", session_id="a\tb"), 400),
    ("string-stream", _user("x", stream="true"), 400),
    ("bad-stream-options", _user("x", stream_options=[1]), 400),
    ("remote-image", _user([{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]), 400),
    ("no-base64-marker", _user([{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]), 400),
    ("bad-base64", _user([{"type": "file", "file": {"file_data": "data:text/plain;base64,@@@="}}]), 400),
    ("empty-file", _user([{"type": "file", "file": {"file_data": "data:text/plain;base64,"}}]), 400),
    ("image-part-not-image", _user([{"type": "image_url", "image_url": {"url": data_url(b"just text")}}]), 415),
    ("unknown-binary", _user([_file_part(bytes(range(256)) * 2, "blob.bin")]), 415),
    ("file-too-large", _user([_file_part(b"a" * 4000)]), 413),
    ("corrupt-pdf", _user([_file_part(b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nbroken", "bad.pdf")]), 422),
    ("upstream-500", _user("#status:500"), 502),
    ("upstream-garbage", _user("#garbage"), 502),
    ("timeout", _user("#slow:4000 wait"), 504),
]


# Refused by the server, valid to the schema, which cannot say where in the list a message stands
# (the description says it).
SCHEMA_CANNOT_SAY = {"system-after-user"}


@pytest.mark.alone
@pytest.mark.parametrize("name, body, status", JSON_CASES, ids=[c[0] for c in JSON_CASES])
def test_json_requests_and_responses_match_document(doc_server, live_doc, name, body, status):
    r = requests.post(doc_server.url + CHAT, json=body, headers={**AUTH, "X-Request-ID": f"case-{name}"}, timeout=30)
    assert r.status_code == status, r.text[:500]
    assert r.headers["X-Request-ID"] == f"case-{name}"
    assert live_doc.check_response("POST", CHAT, r) == []
    problems = live_doc.request_body_errors("post", CHAT, "application/json", body)
    if name in SCHEMA_CANNOT_SAY:
        assert problems == [], problems
    elif status == 400:
        assert problems, "the server refused a body that the document calls valid"
    else:
        assert problems == [], "the server accepted a body that the document calls invalid"
    if name == "stream-error-frame":
        assert r.content.rstrip().endswith(b"}") and b"[DONE]" not in r.content


RESPONSES = "/v1/responses"


def _input(content, **extra):
    return {"input": [{"role": "user", "content": content}], **extra}


# The same for POST /v1/responses.
RESPONSES_CASES = [
    ("plain", {"input": "hello"}, 200),
    (
        "sdk-fields",
        {"input": "hi", "model": "scripted", "temperature": 0.2, "max_output_tokens": 5, "store": True},
        200,
    ),
    ("nulls", {"input": "x", "model": None, "stream": None, "instructions": None, "previous_response_id": None}, 200),
    ("items", {"input": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "x"}]}, 200),
    (
        "parts",
        _input(
            [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": data_url(PNG, "image/png")},
                {"type": "input_file", "filename": "n.md", "file_data": data_url(b"notes\n")},
            ]
        ),
        200,
    ),
    ("stream", {"input": "stream me", "stream": True}, 200),
    ("stream-failed", {"input": "#die", "stream": True}, 200),
    ("metadata", {"input": "x", "metadata": {"a": "b"}}, 200),
    ("text-format", {"input": "x", "text": {"format": {"type": "json_object"}}}, 200),
    ("no-input", {"model": "scripted"}, 400),
    ("blank-input", {"input": " "}, 400),
    ("empty-list", {"input": []}, 400),
    ("only-instructions", {"input": [{"role": "system", "content": "a"}]}, 400),
    ("blank-earlier-user", {"input": [{"role": "user", "content": " "}, {"role": "user", "content": "x"}]}, 400),
    ("bad-part", _input([{"type": "audio"}]), 400),
    ("remote-image", _input([{"type": "input_image", "image_url": "https://example.com/a.png"}]), 400),
    ("file-id", _input([{"type": "input_file", "file_id": "file-1", "file_data": data_url(b"x")}]), 400),
    ("wrong-model", {"input": "x", "model": "gpt-4o"}, 400),
    ("function-tools", {"input": "x", "tools": [{"type": "function", "name": "f"}]}, 200),
    ("hosted-tool", {"input": "x", "tools": [{"type": "web_search"}]}, 400),
    ("background", {"input": "x", "background": True}, 400),
    ("bad-metadata", {"input": "x", "metadata": {"a": 1}}, 400),
    ("long-instructions", {"input": "x", "instructions": "a" * 40000}, 400),
    ("image-not-image", _input([{"type": "input_image", "image_url": data_url(b"just text")}]), 415),
    ("file-too-large", _input([{"type": "input_file", "filename": "a.txt", "file_data": data_url(b"a" * 4000)}]), 413),
    ("upstream-500", {"input": "#status:500"}, 502),
]


@pytest.mark.parametrize("name, body, status", RESPONSES_CASES, ids=[c[0] for c in RESPONSES_CASES])
def test_responses_requests_and_responses_match_document(doc_server, live_doc, name, body, status):
    r = requests.post(doc_server.url + RESPONSES, json=body, headers=AUTH, timeout=30)
    assert r.status_code == status, r.text[:500]
    assert live_doc.check_response("POST", RESPONSES, r) == []
    problems = live_doc.request_body_errors("post", RESPONSES, "application/json", body)
    assert bool(problems) == (status == 400), problems
    if name == "stream-failed":
        assert b"event: response.failed\n" in r.content


def test_stored_response_routes_match_document(doc_server, live_doc):
    created = requests.post(doc_server.url + RESPONSES, json={"input": "keep"}, headers=AUTH, timeout=30).json()
    base = f"{doc_server.url}{RESPONSES}/{created['id']}"
    cases = [
        ("GET", "", {}, 200),
        ("GET", "/input_items", {"params": {"order": "asc", "limit": "1"}}, 200),
        ("GET", "/input_items", {"params": {"limit": "0"}}, 400),
        ("DELETE", "", {}, 200),
        ("GET", "", {}, 404),
        ("DELETE", "", {}, 404),
        ("GET", "/input_items", {}, 404),
    ]
    for method, tail, kwargs, status in cases:
        r = requests.request(method, base + tail, headers=AUTH, timeout=10, **kwargs)
        assert r.status_code == status, (method, tail, r.text)
        assert live_doc.check_response(method, RESPONSES + "/{id}" + tail, r) == [], (method, tail)


# (id, form fields, files as (field, name, bytes), expected status). Part names other than the
# documented ones cannot be told apart in a schema (a file part vs a text part), so the last
# column says whether the request-body check applies.
FORM_CASES = [
    ("message", {"message": "hi there"}, [], 200, True),
    ("files-only", {}, [("files", "n.txt", b"plain notes")], 200, True),
    (
        "all-fields",
        {"message": "m", "session_id": "form-s", "model": "scripted", "stream": "Yes", "x-extra": "1"},
        [("files", "a.txt", b"one"), ("files", "b.txt", b"two")],
        200,
        True,
    ),
    ("stream-off", {"message": "m", "stream": " off ", "model": "", "session_id": ""}, [], 200, True),
    ("nothing", {"session_id": "s"}, [], 400, True),
    ("blank-message", {"message": " \t "}, [], 400, True),
    ("bad-stream", {"message": "m", "stream": "maybe"}, [], 400, True),
    ("wrong-model", {"message": "m", "model": "gpt-4o"}, [], 400, True),
    ("control-session", {"message": "m", "session_id": "a\x01b"}, [], 400, True),
    ("long-session", {"message": "m", "session_id": "s" * 257}, [], 400, True),
    ("empty-file", {"message": "m"}, [("files", "e.txt", b"")], 400, True),
    ("other-file-field", {"message": "m"}, [("upload", "a.txt", b"x")], 400, False),
    ("binary-file", {}, [("files", "b.bin", bytes(range(256)))], 415, True),
    ("big-file", {}, [("files", "big.txt", b"a" * 4000)], 413, True),
]


@pytest.mark.parametrize("name, fields, files, status, check_request", FORM_CASES, ids=[c[0] for c in FORM_CASES])
def test_multipart_requests_and_responses_match_document(
    doc_server, live_doc, name, fields, files, status, check_request
):
    parts = [(k, (None, v)) for k, v in fields.items()] + [(f, (fname, data)) for f, fname, data in files]
    r = requests.post(doc_server.url + CHAT, headers=AUTH, timeout=30, files=parts)
    assert r.status_code == status, r.text[:500]
    assert live_doc.check_response("POST", CHAT, r) == []
    if check_request:
        instance: dict = dict(fields)
        for field, _, data in files:
            instance.setdefault(field, []).append(data.decode("latin-1"))
        problems = live_doc.request_body_errors("post", CHAT, "multipart/form-data", instance)
        assert bool(problems) == (status == 400), problems


GETS = ["/health", "/v1/models", "/openapi.json", "/metrics"]


@pytest.mark.parametrize("path", GETS)
def test_get_routes_match_document(doc_server, live_doc, path):
    for headers in (
        AUTH,
        {},
        {"Authorization": "Bearer wrong"},
        {**AUTH, "Origin": "https://evil.example"},
        {**AUTH, "X-Request-ID": "x" * 200},
    ):
        r = requests.get(doc_server.url + path, headers=headers, timeout=10)
        assert live_doc.check_response("GET", path, r) == [], headers
    assert live_doc.check_response("GET", path, requests.get(doc_server.url + path, headers=AUTH)) == []


@pytest.mark.parametrize("path", GETS + [CHAT, RESPONSES])
def test_preflights_match_document(doc_server, live_doc, path):
    for origin, expected in (
        (ALLOWED_ORIGIN, 204),
        ("https://evil.example", 204 if path == "/health" else 403),
        (None, 204),
    ):
        headers = {"Access-Control-Request-Method": "POST"} | ({"Origin": origin} if origin else {})
        r = requests.options(doc_server.url + path, headers=headers, timeout=10)
        assert r.status_code == expected, (origin, r.text)
        assert live_doc.check_response("OPTIONS", path, r) == []
        if origin == ALLOWED_ORIGIN:
            assert r.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN


def test_other_errors_match_document(doc_server, live_doc):
    url = doc_server.url
    cases = [
        ("GET", "/v2/nothing", {}, 404),
        ("GET", "/v2/nothing", {"headers": AUTH}, 404),
        ("POST", "/v1/completions", {"headers": AUTH, "json": {}}, 404),
        ("DELETE", "/v1/models", {"headers": AUTH}, 405),
        ("GET", CHAT, {"headers": AUTH}, 405),
        ("POST", "/health", {}, 405),
        ("POST", CHAT, {"headers": AUTH}, 415),
        ("POST", CHAT, {"headers": {**AUTH, "Content-Type": "text/plain"}, "data": b'{"messages": []}'}, 415),
        (
            "POST",
            CHAT,
            {"headers": {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}, "data": b"message=hi"},
            415,
        ),
        ("POST", CHAT, {"headers": {**AUTH, "Content-Type": "application/json"}, "data": b"{nope"}, 400),
        ("POST", CHAT, {"headers": {**AUTH, "Content-Type": "application/json"}, "data": b"[1]"}, 400),
        ("POST", CHAT, {"headers": {**AUTH, "Content-Type": "multipart/form-data"}, "data": b"x"}, 400),
        ("POST", CHAT, {"headers": {**AUTH, "Content-Type": "application/json"}, "data": b"x" * 70000}, 413),
        ("POST", CHAT, {"json": _user("x")}, 401),
        ("POST", CHAT, {"json": _user("x"), "headers": {"Origin": "https://evil.example"}}, 403),
    ]
    for method, path, kwargs, status in cases:
        r = requests.request(method, url + path, timeout=10, **kwargs)
        assert r.status_code == status, (method, path, r.text)
        assert live_doc.check_response(method, path, r) == [], (method, path)


def test_overload_503_matches_document(doc_server, live_doc):
    """maxConcurrentRequests is 1 here: a second request while one runs gets 503 + Retry-After."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(
            requests.post, doc_server.url + CHAT, json=_user("#slow:1000 hold"), headers=AUTH, timeout=30
        )
        time.sleep(0.4)
        r = requests.post(doc_server.url + CHAT, json=_user("second"), headers=AUTH, timeout=10)
        assert slow.result().status_code == 200
    assert r.status_code == 503 and r.headers["Retry-After"].isdigit()
    assert live_doc.check_response("POST", CHAT, r) == []


def test_chat_page_matches_document(doc_server, live_doc):
    """GET / is public (no key, any Origin), HTML, with its security headers; ETag gives a 304."""
    for headers in ({}, {"Origin": "https://evil.example"}, {"Authorization": "Bearer wrong"}):
        r = requests.get(doc_server.url + "/", headers=headers, timeout=10)
        assert r.status_code == 200 and live_doc.check_response("GET", "/", r) == []
    r = requests.get(doc_server.url + "/", headers={"If-None-Match": r.headers["Etag"]}, timeout=10)
    assert r.status_code == 304 and live_doc.check_response("GET", "/", r) == []
    r = requests.options(doc_server.url + "/", headers={"Origin": "https://evil.example"}, timeout=10)
    assert r.status_code == 204 and live_doc.check_response("OPTIONS", "/", r) == []


def test_page_assets_match_document(doc_server, live_doc):
    template = "/static/{path}"
    url = doc_server.url + "/static/app.js"
    r = requests.get(url, timeout=10)
    assert r.status_code == 200
    problems = live_doc.check_response("GET", template, r)
    for method, headers, status in (
        ("HEAD", {}, 200),
        ("GET", {"If-None-Match": r.headers["Etag"]}, 304),
        ("GET", {"Range": "bytes=0-9"}, 206),
        ("GET", {"Range": "bytes=999999999-"}, 416),
    ):
        r = requests.request(method, url, headers=headers, timeout=10)
        assert r.status_code == status
        problems += live_doc.check_response(method, template, r)
    r = requests.get(doc_server.url + "/static/missing.js", timeout=10)
    assert r.status_code == 404
    problems += live_doc.check_response("GET", template, r)
    assert problems == []


def test_resuming_a_paused_turn_matches_document(doc_server, live_doc):
    """The results that resume a paused turn, and the answer, fit the document (reject mode)."""
    body = _user("#call:f {} go", tools=[CLIENT_TOOL])
    r = requests.post(doc_server.url + CHAT, json=body, headers=AUTH, timeout=30)
    assert r.status_code == 200 and live_doc.check_response("POST", CHAT, r) == []
    message = r.json()["choices"][0]["message"]
    resume = {
        "session_id": body["session_id"],
        "messages": [
            {"role": "assistant", "content": None, "tool_calls": message["tool_calls"]},
            {
                "role": "tool",
                "tool_call_id": message["tool_calls"][0]["id"],
                "content": [{"type": "text", "text": "r"}],
            },
        ],
    }
    assert live_doc.request_body_errors("post", CHAT, "application/json", resume) == []
    r = requests.post(doc_server.url + CHAT, json=resume, headers=AUTH, timeout=30)
    assert r.status_code == 200 and live_doc.check_response("POST", CHAT, r) == []
