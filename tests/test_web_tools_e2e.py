"""Real ``nanobot serve`` turns where the scripted model calls the web tools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from common import CHAT, ask, unframed
from mcp_servers import TEST_SERVER
from servers import ROOT, ServerProcess, upstream_config

from nanobot.testing.process import children
from nanobot.testing.website import Site


def answer(server: ServerProcess, text: str) -> str:
    r = ask(server, text, uuid.uuid4().hex)
    assert r.status_code == 200, r.text
    content: str = r.json()["choices"][0]["message"]["content"]
    assert "<<untrusted-data id=" in content or "Error: unknown tool" in content  # fetched text is framed
    return unframed(content)


def test_web_fetch_and_search_turns(upstream, make_server) -> None:
    with Site() as site:
        server = make_server(
            {
                **upstream_config(upstream.url),
                "tools": {
                    "ssrfWhitelist": ["127.0.0.0/8"],
                    "web": {"search": {"provider": "searxng", "apiBase": site.url + "/searxng"}},
                },
            }
        )
        call = json.dumps({"url": site.url + "/page"})
        reply = answer(server, f"#tool:web_fetch {call}")
        assert reply.startswith(f"tool result: URL: {site.url}/page\nStatus: 200 OK")
        assert "Growing tomatoes on a balcony" in reply and "trackPageView" not in reply
        # The same server refuses the cloud metadata address: an error result, the turn goes on.
        call = json.dumps({"url": "http://169.254.169.254/latest/meta-data/"})
        reply = answer(server, f"#tool:web_fetch {call}")
        assert reply.startswith("tool result: Error: refused to connect to 169.254.169.254: link-local")
        reply = answer(server, '#tool:web_search {"query": "kettles", "count": 1}')
        assert reply == (
            "tool result: Results for 'kettles':\n1. kettles hit 1 & more\n"
            "   https://example.org/1\n   About kettles, part 1."
        )


def test_mcp_tool_turn_and_health_while_a_server_hangs(upstream, make_server, tmp_path) -> None:
    """A real turn calls a tool of the SDK test server; a server that never answers
    delays neither /health nor that turn."""
    pidfile = tmp_path / "hanging.pid"
    hanging = {
        "command": sys.executable,
        "args": ["-c", f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(120)"],
    }
    server = make_server(
        {
            **upstream_config(upstream.url),
            "tools": {"mcpServers": {"t": {"command": sys.executable, "args": [TEST_SERVER]}, "hang": hanging}},
        }
    )
    started = time.monotonic()
    assert requests.get(server.url + "/health", timeout=5).status_code == 200
    assert time.monotonic() - started < 1.0
    deadline = time.monotonic() + 30
    while True:  # the test server connects in the background
        reply = answer(server, '#tool:mcp_t_echo {"text": "from the model"}')
        if "unknown tool" not in reply or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert reply == "tool result: echo: from the model"
    reply = answer(server, '#tool:mcp_t_add {"a": 20, "b": 22}')
    assert reply == "tool result: 42"
    hanging_pid = int(pidfile.read_text())
    assert server.stop() == 0
    with pytest.raises(ProcessLookupError):
        os.kill(hanging_pid, 0)  # stopped with the server, not left behind


def test_progress_of_web_and_mcp_tools_in_the_stream_and_the_terminal(upstream, make_server, tmp_path) -> None:
    """These tools report their progress as every other tool does: SSE tool events and ``[tool]`` lines."""
    mcp = {"t": {"command": sys.executable, "args": [TEST_SERVER]}}
    with Site() as site:
        fetch = json.dumps({"url": site.url + "/page"})
        server = make_server(
            {**upstream_config(upstream.url), "tools": {"ssrfWhitelist": ["127.0.0.0/8"], "mcpServers": mcp}}
        )
        body: dict = {
            "messages": [{"role": "user", "content": f"#tool:web_fetch {fetch}"}],
            "stream": True,
            "session_id": uuid.uuid4().hex,
            "stream_options": {"include_tool_events": True},
        }
        r = requests.post(server.url + CHAT, json=body, timeout=60)
        frames = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
        events = [
            f["choices"][0]["delta"]["nanobot_tool"]
            for f in frames
            if f["choices"] and "nanobot_tool" in f["choices"][0]["delta"]
        ]
        assert [(e["name"], e["status"], e.get("ok")) for e in events] == [
            ("web_fetch", "started", None),
            ("web_fetch", "finished", True),
        ]

        config = tmp_path / "agent.json"
        config.write_text(
            json.dumps({**upstream_config(upstream.url, workspace=str(tmp_path / "ws")), "tools": {"mcpServers": mcp}})
        )
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "nanobot",
                "agent",
                "--config",
                str(config),
                "-m",
                '#tool:mcp_t_echo {"text": "hi"} #tool:mcp_t_fail {"reason": "no disk"}',
            ],
            capture_output=True,
            text=True,
            timeout=90,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    assert lines.count("[tool] mcp_t_echo ...") == 1 and "[tool] mcp_t_echo done" in lines
    assert "[tool] mcp_t_fail failed" in lines
    assert p.stdout.startswith("tool result: Error: ") and "no disk" in p.stdout  # the scripted model says the last


def test_each_worker_holds_its_own_mcp_connections(upstream, make_server) -> None:
    """With ``api.workers: 2`` each worker starts its own stdio server (sessions are not shared over a fork)."""
    server = make_server(
        {
            **upstream_config(upstream.url),
            "api": {"workers": 2},
            "tools": {"mcpServers": {"t": {"command": sys.executable, "args": [TEST_SERVER]}}},
        }
    )
    workers = children(server.pid)
    assert len(workers) == 2

    def mcp_children() -> dict[int, list[int]]:
        return {
            w: [c for c in children(w) if TEST_SERVER.encode() in Path(f"/proc/{c}/cmdline").read_bytes()]
            for w in workers
        }

    deadline = time.monotonic() + 30
    while not all(mcp_children().values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    found = mcp_children()
    assert all(len(pids) == 1 for pids in found.values()), found
    spawned = [pid for pids in found.values() for pid in pids]
    assert server.stop() == 0
    for pid in spawned:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
