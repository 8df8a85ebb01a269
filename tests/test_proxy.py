"""Streams to HTTP/1.0 clients and through a real reverse proxy (nginx at its defaults).

An HTTP/1.0 response has no chunked encoding: its body ends when the
connection closes. nginx speaks HTTP/1.0 to its upstream unless told
otherwise (``proxy_http_version 1.0``), so a server that chunk-framed every
stream put ``c9\\r\\n`` lines into the event stream a proxied client saw.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import requests
from common import CHAT, free_port
from fault_helpers import recv_all

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)


def stream_body(text: str) -> bytes:
    return b'{"messages":[{"role":"user","content":"%s"}],"stream":true,"session_id":"%s"}' % (
        text.encode(),
        uuid.uuid4().hex.encode(),
    )


def http10(port: int, body: bytes, connection: str | None = None) -> tuple[bytes, bytes, float]:
    """POST ``body`` as HTTP/1.0; the response head, its body, and how long until the server closed."""
    head = b"POST %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
        CHAT.encode(),
        len(body),
    )
    if connection:
        head += b"Connection: %s\r\n" % connection.encode()
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + b"\r\n" + body)
        raw = recv_all(s, timeout=10)
    took = time.monotonic() - start
    response_head, _, response_body = raw.partition(b"\r\n\r\n")
    return response_head, response_body, took


def assert_plain_sse(body: bytes, text: str) -> None:
    """Only SSE lines: every line a ``data:`` frame or a comment, ending with [DONE]."""
    lines = [line for line in body.split(b"\n") if line]
    assert lines and all(line.startswith((b"data: ", b":")) for line in lines), body[:300]
    assert lines[-1] == b"data: [DONE]"
    assert f"You said: {text}".split()[-1].encode() in body


@pytest.mark.parametrize("connection", [None, "keep-alive", "close"])
def test_http10_stream_is_not_chunked_and_ends_with_the_connection(agent_server, connection):
    head, body, took = http10(agent_server.port, stream_body("over one zero"), connection)
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding" not in head.lower() and b"content-length" not in head.lower()
    assert_plain_sse(body, "over one zero")
    assert took < 5, "the server must close an HTTP/1.0 stream when it ends"


def test_http10_json_and_http11_stream_keep_their_framing(agent_server):
    body = b'{"messages":[{"role":"user","content":"plain"}]}'
    head, response, _ = http10(agent_server.port, body)
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: %d" % len(response) in head
    # HTTP/1.1 streams stay chunked.
    with socket.create_connection(("127.0.0.1", agent_server.port), timeout=10) as s:
        payload = stream_body("chunked still")
        s.sendall(
            b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (CHAT.encode(), len(payload), payload)
        )
        raw = recv_all(s, timeout=10)
    assert b"Transfer-Encoding: chunked" in raw and raw.endswith(b"0\r\n\r\n")


# --------------------------------------------------------------------------------------------- nginx


@pytest.fixture(scope="module")
def nginx(agent_server) -> Iterator[str]:
    """nginx on a free loopback port in front of the server, at its default proxy settings."""
    if NGINX is None:
        pytest.skip("nginx is not installed (.ci/run installs it)")
    prefix = Path(tempfile.mkdtemp(prefix="nanobot-nginx-"))
    port = free_port()
    temp = "\n".join(
        f"  {kind}_temp_path {prefix / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (prefix / "nginx.conf").write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 64; }}
http {{
  access_log off;
{temp}
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://127.0.0.1:{agent_server.port}; }}
  }}
}}
""")
    proc = subprocess.Popen(
        [NGINX, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(prefix / "nginx.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"nginx did not start: {proc.communicate()[1].decode(errors='replace')}")
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    shutil.rmtree(prefix, ignore_errors=True)


def test_stream_through_nginx(nginx):
    r = requests.post(
        nginx + CHAT, data=stream_body("through the proxy"), headers={"Content-Type": "application/json"}, timeout=30
    )
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
    assert_plain_sse(r.content, "through the proxy")
    client = openai.OpenAI(base_url=nginx + "/v1", api_key="unused", max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="scripted",
            messages=[{"role": "user", "content": "sdk via nginx"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "You said: sdk via nginx"
    assert chunks[-1].usage.completion_tokens == 5


def test_json_through_nginx(nginx):
    client = openai.OpenAI(base_url=nginx + "/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model="scripted", messages=[{"role": "user", "content": "plain via nginx"}])
    assert reply.choices[0].message.content == "You said: plain via nginx"
