"""A paused turn lives in the store: it survives a restart, any node resumes it, a disconnect keeps nothing.

Real server processes on real SQLite files and a real PostgreSQL cluster.
"""

from __future__ import annotations

import json
import socket
import sys
import time
import uuid
from typing import Any

import requests
from common import CHAT
from mcp_servers import TEST_SERVER
from servers import ServerProcess, merge, upstream_config

TOOLS: Any = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


def pause(server: Any, sid: str, text: str = '#call:lookup {"q": "x"} find it') -> str:
    r = requests.post(
        server.url + CHAT, json={"messages": [{"role": "user", "content": text}], "session_id": sid, "tools": TOOLS}
    )
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call_id: str = choice["message"]["tool_calls"][0]["id"]
    return call_id


def resume(server: Any, sid: str, call_id: str, result: str = "found") -> requests.Response:
    body: Any = {"messages": [{"role": "tool", "tool_call_id": call_id, "content": result}], "session_id": sid}
    return requests.post(server.url + CHAT, json=body, timeout=60)


def roles_seen_next(server: Any, upstream: Any, sid: str) -> list[str]:
    """The roles of the history the next turn on ``sid`` sends the model."""
    upstream.clear()
    r = requests.post(server.url + CHAT, json={"messages": [{"role": "user", "content": "next"}], "session_id": sid})
    assert r.status_code == 200, r.text
    return [m["role"] for m in upstream.requests()[-1]["body"]["messages"][1:]]


ONE_TURN = ["user", "assistant", "tool", "assistant", "user"]


def test_a_paused_turn_survives_a_restart(upstream):
    sid = uuid.uuid4().hex
    config = upstream_config(upstream.url)
    first = ServerProcess(config)
    try:
        call_id = pause(first, sid)
    finally:
        first.stop()
    with ServerProcess(config, workspace=first.workspace) as second:
        r = resume(second, sid, call_id)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "tool result: found"
        assert roles_seen_next(second, upstream, sid) == ONE_TURN


def test_pause_on_one_postgres_node_resume_on_another(postgres, upstream):
    url = postgres.new_database()
    config = merge(upstream_config(upstream.url), {"database": {"url": url}})
    sid = uuid.uuid4().hex
    with ServerProcess(config) as a, ServerProcess(config) as b:
        call_id = pause(a, sid)
        assert resume(a, sid, "call_unknown").json()["error"]["code"] == "unknown_tool_call_id"
        r = resume(b, sid, call_id)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == "tool result: found"
        assert resume(a, sid, call_id).json()["error"]["code"] == "no_pending_tool_calls"  # resumed once only
        assert roles_seen_next(a, upstream, sid) == ONE_TURN
        # Paused on b, closed by a user message on a.
        other = uuid.uuid4().hex
        pause(b, other)
        assert roles_seen_next(a, upstream, other) == ["user", "assistant", "tool", "user"]
        assert upstream.requests()[-1]["body"]["messages"][3]["content"] == "Error: no result from the client"
    db = url.rsplit("/", 1)[1]
    assert postgres.psql("SELECT count(*) FROM nanobot_paused", db).strip() == "0"


def test_a_disconnect_while_server_tools_of_a_pausing_reply_run_keeps_nothing(make_server, upstream):
    mcp = {"tools": {"mcpServers": {"t": {"command": sys.executable, "args": [TEST_SERVER], "enabledTools": ["slow"]}}}}
    server = make_server(merge(upstream_config(upstream.url), mcp))
    deadline = time.monotonic() + 30
    while True:  # the MCP server connects in the background
        upstream.clear()
        requests.post(server.url + CHAT, json={"messages": [{"role": "user", "content": "#empty"}]}, timeout=30)
        offered = [t["function"]["name"] for t in upstream.requests()[-1]["body"].get("tools", [])]
        if "mcp_t_slow" in offered:
            break
        assert time.monotonic() < deadline, offered
        time.sleep(0.2)
    sid = uuid.uuid4().hex
    body = {
        "messages": [{"role": "user", "content": '#tool:mcp_t_slow {"seconds": 30} #call:lookup {} go'}],
        "session_id": sid,
        "tools": TOOLS,
        "stream": True,
        "stream_options": {"include_tool_events": True},
    }
    raw = json.dumps(body).encode()
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\n\r\n"
    ).encode()
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(head + raw)
    got = b""
    while b'"status":"started"' not in got:  # the server tool is running
        chunk = s.recv(4096)
        assert chunk, got
        got += chunk
    assert b"lookup" not in got  # tool events report server tools only
    s.close()
    # Nothing was kept: no paused turn to resume, and the next turn sees an empty history.
    deadline = time.monotonic() + 10
    while True:
        r = resume(server, sid, "call_any")
        if r.status_code == 400:
            break
        assert r.status_code == 503 and time.monotonic() < deadline, r.text  # the session is still busy
    assert r.json()["error"]["code"] == "no_pending_tool_calls"
    assert roles_seen_next(server, upstream, sid) == ["user"]


def test_two_sqlite_workers_share_paused_turns(make_server, upstream):
    """With api.workers 2 a turn may pause in one worker and resume in the other (their caches agree)."""
    server = make_server(merge(upstream_config(upstream.url), {"api": {"workers": 2}}))
    for _ in range(6):  # connections are spread over the workers: both orders happen
        sid = uuid.uuid4().hex
        assert roles_seen_next(server, upstream, sid) == ["user"]  # each worker may cache the window
        call_id = pause(server, sid)
        assert resume(server, sid, call_id).status_code == 200
        assert resume(server, sid, call_id).json()["error"]["code"] == "no_pending_tool_calls"
        assert roles_seen_next(server, upstream, sid) == ["user", "assistant", *ONE_TURN]
