"""Streaming under failure: SSE error frames, timeouts, pings, disconnects."""

from __future__ import annotations

import concurrent.futures
import socket
import time
import uuid

import openai
import pytest
import requests
from common import CHAT, ask, free_port, sdk
from servers import ServerProcess, upstream_config

from nanobot.protocol import parse_frames
from nanobot.testing.process import UpstreamProcess


@pytest.fixture(scope="module")
def fast_timeout_server(upstream):

    cfg = upstream_config(upstream.url)
    cfg["api"] = {"timeout": 1.5, "pingInterval": 0.25}
    server = ServerProcess(cfg)
    yield server
    server.stop()


def history_sent_for(server, upstream, sid):
    """What the server sends upstream as history for ``sid`` (one probe turn)."""
    upstream.clear()
    ask(server, "probe", session_id=sid)
    return [m["content"] for m in upstream.requests()[-1]["body"]["messages"][1:-1]]


def test_upstream_failures_non_streaming(agent_server, upstream):
    sid = uuid.uuid4().hex
    ask(agent_server, "keep me", session_id=sid)
    for text, needle in (
        ("#status:500 x", "answered HTTP 500"),
        ("#status:429 x", "answered HTTP 429"),
        ("#garbage", "malformed"),
        ("#die", "provider 'scripted'"),
    ):
        r = ask(agent_server, text, session_id=sid)
        assert r.status_code == 502, (text, r.text)
        err = r.json()["error"]
        assert err["type"] == "upstream_error" and needle in err["message"]
        assert "test-key" not in err["message"]
    # Failed turns left the history exactly as it was.
    assert history_sent_for(agent_server, upstream, sid) == ["keep me", "You said: keep me"]


def test_upstream_unreachable_is_502(make_server):
    server = make_server(upstream_config(f"http://127.0.0.1:{free_port()}"))
    r = ask(server, "hi")
    assert r.status_code == 502 and "unreachable" in r.json()["error"]["message"]
    r = ask(server, "hi", stream=True)
    assert r.status_code == 200
    frames = parse_frames(r.content)
    assert frames[0]["choices"][0]["delta"]["role"] == "assistant"
    assert frames[-1]["error"]["type"] == "upstream_error" and "[DONE]" not in frames


def test_sse_error_frame_after_headers(agent_server, upstream):
    sid = uuid.uuid4().hex
    r = ask(agent_server, "#die now", stream=True, session_id=sid)
    assert r.status_code == 200
    frames = parse_frames(r.content)
    assert frames[-1]["error"]["type"] == "upstream_error"
    assert set(frames[-1]["error"]) == {"message", "type", "param", "code"}
    assert "[DONE]" not in frames
    # The openai SDK raises on such a stream.
    c = sdk(agent_server)
    with pytest.raises(openai.APIError):
        for _ in c.chat.completions.create(
            model="scripted", messages=[{"role": "user", "content": "#status:500"}], stream=True
        ):
            pass
    assert history_sent_for(agent_server, upstream, sid) == []


def test_timeout_504_and_sse_timeout_frame(fast_timeout_server, upstream):
    sid = uuid.uuid4().hex
    t0 = time.monotonic()
    r = ask(fast_timeout_server, "#slow:5000 zzz", session_id=sid)
    assert r.status_code == 504 and r.json()["error"]["type"] == "timeout_error"
    assert time.monotonic() - t0 < 4
    r = ask(fast_timeout_server, "#slow:5000 zzz", session_id=sid, stream=True)
    frames = parse_frames(r.content)
    assert frames[-1]["error"]["type"] == "timeout_error" and "[DONE]" not in frames
    assert history_sent_for(fast_timeout_server, upstream, sid) == []


def test_session_wait_counts_against_timeout(fast_timeout_server):
    """A stalled turn cannot hold the session's queue past api.timeout."""

    sid = uuid.uuid4().hex
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(ask, fast_timeout_server, "#slow:5000 stall", session_id=sid)
        time.sleep(0.3)
        t0 = time.monotonic()
        second = ask(fast_timeout_server, "queued", session_id=sid)
        waited = time.monotonic() - t0
        assert first.result().status_code == 504
    # The queued request either got the session after the first timed out and
    # answered, or hit its own deadline; it never waited unboundedly.
    assert second.status_code in (200, 504) and waited < 3


def test_ping_while_silent(fast_timeout_server):
    r = requests.post(
        fast_timeout_server.url + CHAT,
        stream=True,
        timeout=30,
        json={"messages": [{"role": "user", "content": "#slow:1000 hello"}], "stream": True},
    )
    raw = r.raw.read()
    assert b": ping\n\n" in raw
    first_ping = raw.index(b": ping")
    assert first_ping < raw.index(b'"content":"You')
    assert raw.endswith(b"data: [DONE]\n\n")


def test_frames_flushed_as_produced(make_server):

    with UpstreamProcess.start(tokens=6, interval_ms=150) as slow_up:
        server = make_server(upstream_config(slow_up.url))
        r = requests.post(
            server.url + CHAT,
            stream=True,
            timeout=30,
            json={"messages": [{"role": "user", "content": "go"}], "stream": True},
        )
        arrivals = []
        buf = b""
        for piece in r.iter_content(chunk_size=None):
            buf += piece
            while b"\n\n" in buf:
                frame, buf = buf.split(b"\n\n", 1)
                if b'"content":"tok' in frame:
                    arrivals.append(time.monotonic())
        assert len(arrivals) == 6
        # Produced over 6 x 150 ms: frames buffered up and sent at the end would
        # arrive together; a busy machine may bunch two, never spread them.
        assert arrivals[-1] - arrivals[0] > 0.45, arrivals


def test_disconnect_cancels_run(make_server, upstream):

    with UpstreamProcess.start(tokens=40, interval_ms=100) as slow_up:
        server = make_server(upstream_config(slow_up.url))
        sid = uuid.uuid4().hex
        s = socket.create_connection(("127.0.0.1", server.port))
        body = (f'{{"messages":[{{"role":"user","content":"long one"}}],"stream":true,"session_id":"{sid}"}}').encode()
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        got = b""
        while got.count(b'"content":"tok') < 2:
            got += s.recv(4096)
        s.close()
        # The server keeps serving at once...
        r = requests.get(server.url + "/health", timeout=5)
        assert r.status_code == 200
        # ...and the abandoned run never completes: after the time the whole
        # answer would have taken, the session still has no turn.
        time.sleep(4.5)
        slow_up.clear()
        r = requests.post(
            server.url + CHAT, timeout=30, json={"messages": [{"role": "user", "content": "after"}], "session_id": sid}
        )
        assert r.status_code == 200
        sent = slow_up.requests()[-1]["body"]["messages"]
        assert [m["role"] for m in sent] == ["system", "user"]
        assert "Traceback" not in server.stderr_text()


def test_client_that_stops_reading_gets_every_frame_in_order(echo_server):
    """A reader that pauses fills the socket: frames queue, nothing is lost or reordered.

    40,000 words make 8 MB of SSE, more than the loopback socket
    buffers hold, so the server meets partial sends and must wait for the
    client before writing on.
    """
    words = [f"w{i}" for i in range(40_000)]
    s = socket.create_connection(("127.0.0.1", echo_server.port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    body = ('{{"messages":[{{"role":"user","content":"{}"}}],"stream":true}}'.format(" ".join(words))).encode()
    s.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    )
    time.sleep(1.5)  # not reading: the server's sends stop going through
    r = requests.get(echo_server.url + "/health", timeout=5)  # and it serves others meanwhile
    assert r.status_code == 200
    s.settimeout(30)
    raw = b""
    while chunk := s.recv(65536):
        raw += chunk
    s.close()
    head, _, chunked = raw.partition(b"\r\n\r\n")
    assert b"200 OK" in head and b"chunked" in head.lower()
    pieces, at = [], 0
    while True:  # undo the chunked framing
        eol = chunked.index(b"\r\n", at)
        size = int(chunked[at:eol], 16)
        pieces.append(chunked[eol + 2 : eol + 2 + size])
        at = eol + 4 + size
        if size == 0:
            break
    frames = parse_frames(b"".join(pieces))
    assert frames[-1] == "[DONE]"
    text = "".join(f["choices"][0]["delta"].get("content") or "" for f in frames[:-1] if f.get("choices"))
    assert text.split() == words
