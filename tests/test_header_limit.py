"""A header block over the limit is answered 431 with the OpenAI error body, not a silent close."""

from __future__ import annotations

import json
import socket
import time

import requests
from fault_helpers import recv_all

from nanobot.server.limits import LINGER_SECONDS, MAX_HEADER_BYTES


def split(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def assert_431(raw: bytes) -> None:
    status, headers, body = split(raw)
    assert status == 431, raw[:300]
    assert headers["Content-Type"] == "application/json" and headers["Connection"] == "close"
    assert len(headers["X-Request-ID"]) == 32 and int(headers["Content-Length"]) == len(body)
    err = json.loads(body)["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "headers_too_large"
    assert str(MAX_HEADER_BYTES) in err["message"] and set(err) == {"message", "type", "param", "code"}


def test_one_huge_header_gets_431(echo_server):
    r = requests.get(echo_server.url + "/health", headers={"X-Big": "a" * (MAX_HEADER_BYTES + 10)}, timeout=10)
    assert r.status_code == 431 and r.json()["error"]["code"] == "headers_too_large"
    # A header block under the limit is served, and so is the next request.
    assert (
        requests.get(
            echo_server.url + "/health", headers={"X-Big": "a" * (MAX_HEADER_BYTES - 2000)}, timeout=10
        ).status_code
        == 200
    )


def test_many_headers_and_a_body_behind_them_get_431(echo_server):
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    head += b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 40) for i in range(MAX_HEADER_BYTES // 50 + 100))
    body = b'{"messages":[{"role":"user","content":"hi"}]}' * 1000
    head += b"Content-Length: %d\r\n\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", echo_server.port), timeout=10) as s:
        s.sendall(head + body)
        raw = recv_all(s, timeout=10)
    assert_431(raw)
    assert requests.get(echo_server.url + "/health", timeout=10).json() == {"status": "ok"}


def test_a_client_that_keeps_sending_is_cut_off(echo_server):
    """The lingering read after the answer is bounded in time."""
    with socket.create_connection(("127.0.0.1", echo_server.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (MAX_HEADER_BYTES + 10))
        start, raw = time.monotonic(), b""
        s.settimeout(0.1)
        while time.monotonic() - start < LINGER_SECONDS + 5:
            try:
                s.sendall(b"a" * 100)
            except OSError:
                break
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            raw += chunk
        took = time.monotonic() - start
    assert_431(raw)
    assert took < LINGER_SECONDS + 2
