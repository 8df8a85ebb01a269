"""``exec`` in a real bubblewrap sandbox, and through real ``nanobot serve`` turns."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
from common import unframed
from servers import ROOT, TESTS_DIR, merge, upstream_config

from nanobot.agent.tools import TurnScope
from nanobot.config import ExecToolConfig
from nanobot.tools.exec import ExecTool
from nanobot.tools.paths import Workspace

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


def run_exec(root: Path, command: str, **cfg) -> str:
    tool = ExecTool(Workspace(root), ExecToolConfig(enabled=True, **cfg), 16000)
    return asyncio.run(tool.run({"command": command}, TurnScope("api", "t", session_key="api:t")))


def alive(marker: str) -> list[int]:
    """Pids whose command line holds ``marker``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and b"pytest" not in cmdline:
            found.append(int(pid))
    return found


def wait_gone(marker: str, seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (pids := alive(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return pids


@pytest.fixture
def root(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


def test_output_and_exit_code(root: Path) -> None:
    assert run_exec(root, "echo hello; echo oops >&2") == "Exit code: 0\nhello\noops\n"
    assert run_exec(root, "exit 3") == "Exit code: 3\n(no output)"
    assert run_exec(root, "echo made > f.txt && cat f.txt") == "Exit code: 0\nmade\n"
    assert (root / "f.txt").read_text() == "made\n"


def test_long_output_keeps_the_tail(root: Path) -> None:
    result = run_exec(root, "head -c 50000000 /dev/zero | tr '\\0' a; echo; echo THE-END")
    assert result.startswith("Exit code: 0\n[... the first ")
    assert result.endswith("THE-END\n") and len(result) < 16000


def test_the_sandbox_walls(root: Path, tmp_path: Path, upstream) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "nanobot.db").write_bytes(b"SECRET-STATE")
    os.environ["NANOBOT_TEST_SECRET"] = "leak-me"
    port = int(upstream.url.rsplit(":", 1)[1])
    try:
        script = "; ".join(
            [
                f"touch {outside}/x 2>/dev/null && echo WROTE-OUTSIDE",
                "touch /etc/nanobot-x 2>/dev/null && echo WROTE-ETC",
                "mount -o remount,rw / 2>/dev/null && echo REMOUNTED",
                "echo tmp > /tmp/mine && echo TMP-OK",
                "echo pid=$$",
                "ls /proc | grep -c '^[0-9]'",
                "cat nanobot.db 2>/dev/null | grep -c SECRET",
                "env | grep -c NANOBOT_TEST_SECRET",
                f"(echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo NET-OK || echo NO-NET",
            ]
        )
        result = run_exec(root, script)
        lines = result.splitlines()
        assert "WROTE-OUTSIDE" not in result and "WROTE-ETC" not in result and "REMOUNTED" not in result
        assert "TMP-OK" in lines and not Path("/tmp/mine").exists()
        assert "pid=2" in lines  # bwrap is PID 1 of the sandbox's own namespace
        assert int(lines[lines.index("pid=2") + 1]) < 10  # the host's processes are not visible
        assert lines[-3:] == ["0", "0", "NO-NET"]  # no database, no server env, no network
        assert (root / "nanobot.db").read_bytes() == b"SECRET-STATE"
        assert run_exec(root, f"(echo > /dev/tcp/127.0.0.1/{port}) && echo NET-OK", network=True).endswith("NET-OK\n")
    finally:
        del os.environ["NANOBOT_TEST_SECRET"]


def test_timeout_kills_the_whole_tree(root: Path) -> None:
    marker = f"{uuid.uuid4().int % 10**6 + 10**6}.25"
    started = time.monotonic()
    result = run_exec(
        root, f"sleep {marker} & setsid sleep {marker} & (sleep {marker} &); echo started; wait", timeout=1
    )
    assert time.monotonic() - started < 5
    assert result.startswith("Error: the command took longer than 1 s and was killed.\n")
    assert "started" in result
    assert wait_gone(marker) == []


def test_bad_arguments(root: Path) -> None:
    tool = ExecTool(Workspace(root), ExecToolConfig(enabled=True), 16000)
    scope = TurnScope("api", "t", session_key="api:t")

    async def main():
        return [
            await tool.run(args, scope)
            for args in (
                {},
                {"command": 5},
                {"command": "  "},
                {"command": "echo \x00"},
                {"command": "x" * 70000},
                {"command": "pwd", "working_dir": "../.."},
                {"command": "pwd", "working_dir": "nope"},
            )
        ]

    results = asyncio.run(main())
    assert all(r.startswith("Error: ") for r in results), results
    assert "outside the workspace" in results[5] and "not an existing folder" in results[6]
    (root / "sub").mkdir()
    assert asyncio.run(tool.run({"command": "pwd", "working_dir": "sub"}, scope)) == f"Exit code: 0\n{root}/sub\n"


def exec_config(upstream, **exec_cfg) -> dict:
    return {**upstream_config(upstream.url), "tools": {"exec": {"enabled": True, **exec_cfg}}}


def test_turn_runs_exec_and_client_disconnect_kills_it(make_server, upstream) -> None:
    server = make_server(exec_config(upstream))
    r = requests.post(
        server.url + "/v1/chat/completions",
        timeout=30,
        json={"messages": [{"role": "user", "content": '#tool:exec {"command":"echo from-sandbox; exit 4"}'}]},
    )
    assert unframed(r.json()["choices"][0]["message"]["content"]) == "tool result: Exit code: 4\nfrom-sandbox\n"
    marker = f"{uuid.uuid4().int % 10**6 + 10**6}.5"
    body = json.dumps(
        {
            "messages": [{"role": "user", "content": f'#tool:exec {{"command":"sleep {marker}"}}'}],
            "stream": True,
            "stream_options": {"include_tool_events": True},
        }
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        seen = b""
        while b'"started"' not in seen:
            seen += sock.recv(65536)
        deadline = time.monotonic() + 10
        while not alive(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alive(marker)
    assert wait_gone(marker) == []
    assert requests.get(server.url + "/health", timeout=5).status_code == 200


def test_exec_is_off_by_default(agent_server, upstream) -> None:
    upstream.clear()
    r = requests.post(
        agent_server.url + "/v1/chat/completions",
        timeout=30,
        json={"messages": [{"role": "user", "content": '#tool:exec {"command":"id"}'}]},
    )
    assert r.json()["choices"][0]["message"]["content"] == "tool result: Error: unknown tool 'exec'."
    assert "exec" not in [t["function"]["name"] for t in upstream.requests()[0]["body"]["tools"]]


def config_check(tmp_path: Path, config: dict, path_env: str) -> subprocess.CompletedProcess:
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"agents": {"defaults": {"workspace": str(tmp_path / "w")}}, **config}))
    env = {**os.environ, "PATH": path_env, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), str(ROOT)])}
    return subprocess.run(
        [sys.executable, "-m", "nanobot", "config", "check", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_missing_bwrap_is_a_startup_error(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    done = config_check(tmp_path, {"tools": {"exec": {"enabled": True}}}, str(empty))
    assert done.returncode == 2
    assert "bwrap is not installed" in done.stderr and "apt-get install bubblewrap" in done.stderr
    assert "Traceback" not in done.stderr
    # Off, or without a sandbox, it is not needed; "none" warns.
    assert config_check(tmp_path, {}, str(empty)).returncode == 0
    unsandboxed = config_check(tmp_path, {"tools": {"exec": {"enabled": True, "sandbox": "none"}}}, str(empty))
    assert unsandboxed.returncode == 0 and "WITHOUT a sandbox" in unsandboxed.stderr


def test_sandbox_none_runs_directly(root: Path) -> None:
    os.environ["NANOBOT_TEST_SECRET"] = "leak-me"
    try:
        result = run_exec(root, "echo $$ > pid; env | grep -c NANOBOT_TEST_SECRET; echo ok", sandbox="none")
    finally:
        del os.environ["NANOBOT_TEST_SECRET"]
    assert result == "Exit code: 0\n0\nok\n"  # the server's environment stays out
    assert int((root / "pid").read_text()) > 2  # a host pid, not a sandbox's


def start_sleep(server, marker: str) -> concurrent.futures.Future:
    """A turn whose exec sleeps, sent from a thread; returns once the sleep runs."""

    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(
        requests.post,
        server.url + "/v1/chat/completions",
        timeout=60,
        json={"messages": [{"role": "user", "content": f'#tool:exec {{"command":"sleep {marker}"}}'}]},
    )
    pool.shutdown(wait=False)
    deadline = time.monotonic() + 10
    while not alive(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive(marker)
    return future


def test_api_timeout_and_shutdown_kill_running_commands(make_server, upstream) -> None:
    server = make_server(merge(exec_config(upstream, timeout=600), {"api": {"timeout": 2, "shutdownGrace": 1}}))
    marker = f"{uuid.uuid4().int % 10**6 + 10**6}.75"
    reply = start_sleep(server, marker).result(timeout=30)
    assert reply.status_code == 504
    assert wait_gone(marker) == []
    # SIGTERM with a turn still running past the grace: the command goes with it.
    server2 = make_server(merge(exec_config(upstream, timeout=600), {"api": {"timeout": 600, "shutdownGrace": 1}}))
    marker2 = f"{uuid.uuid4().int % 10**6 + 10**6}.85"
    start_sleep(server2, marker2)
    server2.stop()
    assert wait_gone(marker2) == []
