"""What the server shows, and to whom: Host rule, headers, ids, paths, unsafe configs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import timeit

import pytest
import requests
from common import CHAT, HI
from fault_helpers import OpenApiDoc, recv_all, status_of
from servers import ROOT, ServerProcess

from nanobot import ids


def raw_request(port: int, host: str, method: str = "GET", path: str = "/health", body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    if method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head.encode() + b"\r\n" + body)
        return recv_all(s, timeout=5)


@pytest.fixture(scope="module")
def open_server():
    """No API key: the Host rule applies. ``mybox`` is listed in api.allowedHosts."""
    with ServerProcess({"api": {"allowedHosts": ["mybox", "LAN.example."]}}) as server:
        yield server


# ---------------------------------------------------------------------------------- DNS rebinding


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:{port}",
        "127.0.0.1",
        "localhost:{port}",
        "LOCALHOST",
        "127.9.8.7:{port}",
        "[::1]:{port}",
        "[::1]",
        "app.localhost:{port}",
        "mybox:{port}",
        "mybox",
        "lan.example:{port}",
    ],
)
def test_hosts_that_name_the_server_are_served(open_server, host):
    host = host.format(port=open_server.port)
    assert status_of(raw_request(open_server.port, host)) == 200
    raw = raw_request(open_server.port, host, "POST", CHAT, json.dumps(HI).encode())
    assert status_of(raw) == 200, raw[:300]


@pytest.mark.parametrize("path", ["/health", CHAT, "/v1/models", "/", "/static/app.js", "/metrics", "/nope"])
def test_a_rebinding_host_is_421_on_every_route(open_server, path):
    for host in (f"evil.example:{open_server.port}", "evil.example", "127.0.0.1.evil.example", "0.0.0.0", "[::2]"):
        raw = raw_request(open_server.port, host, "POST" if path == CHAT else "GET", path, json.dumps(HI).encode())
        assert status_of(raw) == 421, (host, raw[:300])
        error = json.loads(raw.split(b"\r\n\r\n", 1)[1])["error"]
        assert error["type"] == "permission_error" and error["code"] == "host_not_allowed"
        assert "api.allowedHosts" in error["message"]


def test_rebinding_page_is_refused_before_its_body_is_read(open_server):
    """A same-origin POST from a rebound name: 421 as soon as the headers are in."""
    origin = f"http://evil.example:{open_server.port}"
    with socket.create_connection(("127.0.0.1", open_server.port)) as s:
        s.sendall(
            f"POST {CHAT} HTTP/1.1\r\nHost: evil.example:{open_server.port}\r\nOrigin: {origin}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000\r\n\r\n".encode()
        )
        raw = recv_all(s, timeout=5)  # no body sent: an answer means the server did not wait for it
    assert status_of(raw) == 421 and b"connection: close" in raw.lower()


def test_the_421_is_documented_on_every_route(open_server):
    doc = OpenApiDoc(requests.get(open_server.url + "/openapi.json", timeout=10).json())
    problems = []
    for method, path in (
        ("GET", "/health"),
        ("GET", "/v1/models"),
        ("POST", CHAT),
        ("GET", "/openapi.json"),
        ("GET", "/metrics"),
        ("GET", "/"),
        ("GET", "/static/app.js"),
    ):
        r = requests.request(method, open_server.url + path, json=HI, headers={"Host": "evil.example"}, timeout=10)
        assert r.status_code == 421, (path, r.status_code)
        if doc.operation(method, path) is not None:
            problems += doc.check_response(method, path, r)
    assert not problems, problems


def test_with_a_key_any_host_goes(make_server):
    server = make_server({"api": {"apiKey": "k"}})
    assert status_of(raw_request(server.port, "anything.example")) == 200


# ------------------------------------------------------------------------------------ paths, headers


def test_nul_in_a_path_is_404_and_no_traceback(open_server):
    for path in ("/static/%00", "/static/app.js%00.png", "/%00", "/v1/models%00"):
        r = requests.get(open_server.url + path, timeout=5)
        assert r.status_code in (400, 404), (path, r.status_code)
        assert r.json()["error"]["type"] in ("invalid_request_error", "not_found_error")
    assert requests.get(open_server.url + "/health", timeout=5).status_code == 200
    assert "Traceback" not in open_server.stderr_text()


def test_no_server_version_in_any_response(open_server):
    for method, path in (
        ("GET", "/health"),
        ("GET", "/"),
        ("GET", "/static/app.js"),
        ("GET", "/nope"),
        ("GET", "/static/nope.js"),
        ("POST", CHAT),
        ("DELETE", "/health"),
    ):
        r = requests.request(method, open_server.url + path, json=HI, timeout=10)
        assert "tornado" not in r.headers.get("Server", "").lower(), (path, r.headers.get("Server"))


# ------------------------------------------------------------------------------------------- ids


def _unrelated(a: str, b: str) -> bool:
    """Two random 16-hex-digit tails: few positions alike, and not one after the other."""
    return sum(x == y for x, y in zip(a, b, strict=False)) < 8 and abs(int(a, 16) - int(b, 16)) > 1000


def test_ids_are_unpredictable_and_cheap():
    a, b = ids.new_id(), ids.new_id()
    assert len(a) == len(b) == 32 and int(a, 16) >= 0 and a != b
    # The first half names the process; the second is random, not a counter.
    assert a[:16] == b[:16] and _unrelated(a[16:], b[16:]), (a, b)
    many = {ids.new_id() for _ in range(100_000)}
    assert len(many) == 100_000
    per_id = min(timeit.repeat(ids.new_id, number=20_000, repeat=5)) / 20_000
    assert per_id < 3e-6, f"{per_id * 1e6:.2f} µs per id"


def test_forked_children_have_their_own_prefix():
    parent = ids.new_id()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(w, ids.new_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(r, 64).decode()
    os.close(r)
    os.close(w)
    assert child[:16] != parent[:16]


def test_completion_ids_do_not_count_requests(open_server):
    got = [requests.post(open_server.url + CHAT, json=HI, timeout=10).json()["id"] for _ in range(3)]
    tails = [g.removeprefix("chatcmpl-")[16:] for g in got]
    assert _unrelated(tails[0], tails[1]) and _unrelated(tails[1], tails[2]), tails


# ------------------------------------------------------------------------------------ unsafe configs


def test_any_origin_without_a_key_refuses_to_start(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps(
            {
                "agents": {"defaults": {"workspace": str(tmp_path / "ws")}},
                "api": {"corsOrigins": ["https://a.example", "*"]},
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for args in (("serve", "--port", "0"), ("config", "check")):
        p = subprocess.run(
            [sys.executable, "-m", "nanobot", *args, "--config", str(path)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert "api.corsOrigins" in p.stderr and "api.apiKey" in p.stderr and "Traceback" not in p.stderr
    path.write_text(
        json.dumps(
            {"agents": {"defaults": {"workspace": str(tmp_path / "ws")}}, "api": {"corsOrigins": ["*"], "apiKey": "k"}}
        )
    )
    p = subprocess.run(
        [sys.executable, "-m", "nanobot", "config", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
