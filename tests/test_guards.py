"""API key, origin and concurrency rules, and stages added through config."""

from __future__ import annotations

import concurrent.futures
import socket
import time

import openai
import pytest
import requests
from common import CHAT, HI, sdk
from servers import ServerProcess, upstream_config


@pytest.fixture(scope="module")
def keyed(request):

    server = ServerProcess({"api": {"apiKey": "s3cret-key", "corsOrigins": ["https://app.example"]}})
    yield server
    server.stop()


def test_key_required_everywhere_but_health(keyed):
    assert requests.get(keyed.url + "/health").status_code == 200
    for method, path in (("GET", "/v1/models"), ("POST", CHAT)):
        r = requests.request(method, keyed.url + path, json=HI)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert r.json()["error"]["code"] == "missing_api_key"
        r = requests.request(method, keyed.url + path, json=HI, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = requests.request(method, keyed.url + path, json=HI, headers={"Authorization": "s3cret-key"})
        assert r.status_code == 401
    # Unknown routes are 404 with or without a key.
    assert requests.get(keyed.url + "/nope").status_code == 404
    assert requests.get(keyed.url + "/nope", headers={"Authorization": "Bearer s3cret-key"}).status_code == 404


def test_sdk_with_key(keyed):
    c = sdk(keyed, "s3cret-key")
    assert c.chat.completions.create(model="echo", messages=HI["messages"]).choices[0].message.content == "hi"
    bad = sdk(keyed, "nope")
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="echo", messages=HI["messages"])


def test_hostile_origin_is_403_before_body(keyed, echo_server):
    for server, auth in ((echo_server, {}), (keyed, {"Authorization": "Bearer s3cret-key"})):
        files = {"files": ("a.txt", b"hello", "text/plain")}
        r = requests.post(
            server.url + CHAT, files=files, data={"message": "hi"}, headers={"Origin": "https://evil.example", **auth}
        )
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
        r = requests.post(server.url + CHAT, json=HI, headers={"Origin": "https://evil.example", **auth})
        assert r.status_code == 403
    # Without a key the origin still decides first: no 401 leak for hostile pages.
    r = requests.post(keyed.url + CHAT, json=HI, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    # The server's own origin and listed origins pass.
    own = f"http://127.0.0.1:{echo_server.port}"
    assert requests.post(echo_server.url + CHAT, json=HI, headers={"Origin": own}).status_code == 200
    r = requests.post(
        keyed.url + CHAT, json=HI, headers={"Origin": "https://app.example", "Authorization": "Bearer s3cret-key"}
    )
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "https://app.example"


def test_preflight(keyed):
    r = requests.options(
        keyed.url + CHAT,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert r.status_code == 204
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
    assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    r = requests.options(keyed.url + CHAT, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403


def test_over_capacity_is_503(make_server, upstream):
    server = make_server(upstream_config(upstream.url) | {"api": {"maxConcurrentRequests": 2}})

    def slow(i):
        return requests.post(
            server.url + CHAT,
            json={"messages": [{"role": "user", "content": "#slow:1500 wait"}], "session_id": f"slow-{i}"},
        )

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(slow, i) for i in range(2)]
        time.sleep(0.6)
        r = requests.post(
            server.url + CHAT, json={"messages": [{"role": "user", "content": "x"}], "session_id": "other"}
        )
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "1"
        assert r.json()["error"]["type"] == "overloaded_error"
        assert [f.result().status_code for f in futures] == [200, 200]
    # Slots are given back.
    r = requests.post(server.url + CHAT, json={"messages": [{"role": "user", "content": "again"}]})
    assert r.status_code == 200


def test_custom_stages_from_config(make_server):
    stages = [
        "decode",
        "custom_stages:RejectFlagged",
        "validate",
        "extract_files",
        "resolve_session",
        "custom_stages:stamp",
        "custom_stages:NoOp",
        "run_agent",
        "encode",
    ]
    server = make_server({"pipeline": {"stages": stages}})
    r = requests.post(server.url + CHAT, json={**HI, "session_id": "s1"})
    assert r.status_code == 200 and r.headers["X-Stamped-By"] == "stamp:api:s1"
    r = requests.post(server.url + CHAT, json={**HI, "stream": True})
    assert r.status_code == 200 and r.headers["X-Stamped-By"] == "stamp:api:default"
    r = requests.post(server.url + CHAT, json=HI, headers={"X-Block-Me": "1"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "blocked"


def test_chat_page_is_public_with_csp(keyed):
    r = requests.get(keyed.url + "/")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["Content-Security-Policy"]
    assert "/static/app.js" in r.text
    js = requests.get(keyed.url + "/static/app.js")
    assert js.status_code == 200 and "javascript" in js.headers["Content-Type"]
    r = requests.get(keyed.url + "/static/nope.js")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = requests.get(keyed.url + "/static/../config.py")
    assert r.status_code in (403, 404)
    # Everything else behind the key.
    for path in ("/metrics", "/openapi.json", "/v1/models"):
        assert requests.get(keyed.url + path).status_code == 401


def test_early_errors_say_connection_close(keyed):
    """A 401 answered before the body is read closes the connection, and says so."""

    body = b'{"messages":[{"role":"user","content":"hi"}]}'
    with socket.create_connection(("127.0.0.1", keyed.port)) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        head = s.recv(65536).split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 401") and b"connection: close" in head
    # A body that was read keeps the connection alive.
    with requests.Session() as session:
        auth = {"Authorization": "Bearer s3cret-key"}
        r = session.post(
            keyed.url + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "x"}], "model": "nope"},
            headers=auth,
        )
        assert r.status_code == 400 and r.headers.get("Connection", "").lower() != "close"
