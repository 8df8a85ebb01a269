"""MCP servers through the hub: the SDK-written test server (stdio and streamable HTTP)
and published ones (mcp-server-time from PyPI over stdio; npm's server-everything over
stdio and streamable HTTP), including their failures."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from common import SCOPE, unframed
from mcp_servers import EVERYTHING, TEST_SERVER, HttpMcpServer, everything_installed

from nanobot.agent.tool_args import compile_checker
from nanobot.agent.tools import ToolRegistry, ToolResult
from nanobot.config import McpServerConfig
from nanobot.providers.base import ToolCall
from nanobot.testing.server_process import ROOT
from nanobot.tools.mcp import McpHub
from nanobot.tools.mcp_tool import tool_name


def stdio(*args: str, **kw) -> McpServerConfig:
    return McpServerConfig(command=sys.executable, args=list(args), **kw)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: only its parent's reaping is missing.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def http_server() -> Iterator[HttpMcpServer]:
    server = HttpMcpServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def hub(runner: asyncio.Runner, http_server: HttpMcpServer) -> Iterator[McpHub]:
    added: list[str] = []
    hub = McpHub(
        {
            "t": stdio(TEST_SERVER, tool_timeout=2),
            "only": stdio(TEST_SERVER, enabled_tools=["echo", "nosuch"]),
            "time": stdio("-m", "mcp_server_time"),
            "web": McpServerConfig(url=http_server.url, tool_timeout=2),
            "broken": McpServerConfig(command="/nonexistent/mcp-server"),
        },
        lambda tool: added.append(tool.name),
        connect_timeout=20,
    )
    runner.run(hub.start())
    runner.run(hub.wait())
    hub.added = added  # type: ignore[attr-defined]
    yield hub
    runner.run(hub.close())


def call(runner: asyncio.Runner, hub: McpHub, name: str, **args) -> str:
    tool = {t.name: t for t in hub.tools()}[name]
    return runner.run(tool.run(args, SCOPE))


def server(hub: McpHub, name: str):
    return next(s for s in hub.servers if s.name == name)


def test_tools_offered_named_and_filtered(hub: McpHub) -> None:
    names = {t.name for t in hub.tools()}
    assert {"mcp_t_echo", "mcp_t_add", "mcp_t_parts", "mcp_web_echo", "mcp_time_get_current_time"} <= names
    assert [n for n in names if n.startswith("mcp_only_")] == ["mcp_only_echo"]  # enabledTools
    assert not any(n.startswith("mcp_broken_") for n in names)
    assert sorted(hub.added) == sorted(names)  # type: ignore[attr-defined]  # each was handed to the registry as it came
    for name in names:
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name), name
    long = [n for n in names if n.startswith("mcp_t_fetch_page")]
    assert len(long) == 1 and len(long[0]) == 64
    schema = {t.name: t.schema for t in hub.tools()}["mcp_t_add"]["function"]
    assert schema["parameters"]["required"] == ["a", "b"] and schema["description"] == "Add two integers."


def test_failed_server_is_reported_not_raised(hub: McpHub) -> None:
    broken = server(hub, "broken")
    assert broken.status.startswith("not connected: FileNotFoundError") and "/nonexistent/mcp-server" in broken.status


def test_names_are_sanitized_and_unique() -> None:
    assert tool_name("my server", "get.time") == "mcp_my_server_get_time"
    taken = {"mcp_my_server_get_time"}
    other = tool_name("my server", "get/time", taken)
    assert other != "mcp_my_server_get_time" and len(other) <= 64


@pytest.mark.parametrize("name", ["t", "web"])
def test_results_as_text(runner, hub: McpHub, name: str) -> None:
    assert call(runner, hub, f"mcp_{name}_echo", text="héllo") == "echo: héllo"
    assert call(runner, hub, f"mcp_{name}_add", a=2, b=40) == "42"
    assert call(runner, hub, f"mcp_{name}_parts") == (
        "first part\nsecond part\n[image content: image/png, about 42 bytes, not shown]"
    )
    out = call(runner, hub, f"mcp_{name}_fail", reason="disk full")
    assert out.startswith("Error: ") and "disk full" in out
    assert call(runner, hub, f"mcp_{name}_add", a="x").startswith("Error: ")


@pytest.mark.parametrize("name", ["t", "web"])
def test_the_server_checks_its_own_arguments(runner, hub: McpHub, name: str) -> None:
    """The registry checks an MCP tool's arguments only for being an object: the server's
    schema is its own (pydantic takes "2" and 2.0 for an integer), and so is its refusal."""
    tool = {t.name: t for t in hub.tools()}[f"mcp_{name}_add"]
    registry = ToolRegistry([tool])

    def run(args: object) -> ToolResult:
        return runner.run(registry.run(ToolCall("c", tool.name, json.dumps(args)), SCOPE))

    strict = compile_checker(tool.schema)
    coerced: tuple[dict[str, object], ...] = ({"a": "2", "b": 40}, {"a": 2.0, "b": 40})
    for args in coerced:
        assert strict.check(args) is not None  # what a check of the schema here would refuse
        result = run(args)
        assert (unframed(result), result.is_error) == ("42", False), args
    refused: tuple[dict[str, object], ...] = ({"a": 2}, {"a": "x", "b": 1})
    for args in refused:
        result = run(args)  # the server's own refusal, an error result
        assert result.startswith("Error: ") and "validation error" in result and result.is_error, args
    assert run([1]) == "Error: the tool arguments must be a JSON object."


def test_published_server_over_stdio(runner, hub: McpHub) -> None:
    out = call(runner, hub, "mcp_time_get_current_time", timezone="Europe/Paris")
    assert '"timezone": "Europe/Paris"' in out and '"datetime": "' in out


@pytest.fixture(scope="module")
def published(runner: asyncio.Runner) -> Iterator[McpHub]:
    """server-everything, as its users run it: over stdio and over streamable HTTP."""
    if not everything_installed():
        pytest.skip("npm's server-everything is not installed (npm ci --prefix tests/node)")
    http = HttpMcpServer(published=True)
    hub = McpHub(
        {
            "evs": McpServerConfig(command="node", args=[str(EVERYTHING), "stdio"]),
            "evh": McpServerConfig(url=http.url, enabled_tools=["echo", "get-sum", "get-tiny-image"]),
        },
        connect_timeout=30,
    )
    runner.run(hub.start())
    runner.run(hub.wait())
    yield hub
    runner.run(hub.close())
    http.stop()


@pytest.mark.parametrize("name", ["evs", "evh"])
def test_published_server_everything(runner, published: McpHub, name: str) -> None:
    assert server(published, name).status == "connected"
    assert call(runner, published, f"mcp_{name}_echo", message="héllo") == "Echo: héllo"
    assert call(runner, published, f"mcp_{name}_get-sum", a=2, b=40) == "The sum of 2 and 40 is 42."
    image = call(runner, published, f"mcp_{name}_get-tiny-image")
    assert "[image content: image/png" in image, image
    assert call(runner, published, f"mcp_{name}_get-sum", a="x").startswith("Error: ")


def test_enabled_tools_filter_a_published_server(published: McpHub) -> None:
    assert published.offered(server(published, "evh")) == ["mcp_evh_echo", "mcp_evh_get-sum", "mcp_evh_get-tiny-image"]
    assert len(published.offered(server(published, "evs"))) > 5


@pytest.mark.parametrize("name", ["t", "web"])
def test_tool_timeout_keeps_the_session(runner, hub: McpHub, name: str) -> None:
    pid = call(runner, hub, f"mcp_{name}_pid")
    started = time.monotonic()
    out = call(runner, hub, f"mcp_{name}_slow", seconds=30)
    assert out == f"Error: MCP tool 'slow' of server '{name}' did not answer within 2 s (toolTimeout)."
    assert time.monotonic() - started < 4
    assert call(runner, hub, f"mcp_{name}_pid") == pid


def test_cancelled_turn_cancels_only_its_call(runner, hub: McpHub) -> None:
    pid = call(runner, hub, "mcp_t_pid")
    slow = {t.name: t for t in hub.tools()}["mcp_t_slow"]

    async def cancel_midway() -> str:
        task = asyncio.create_task(slow.run({"seconds": 30}, SCOPE))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        echo = {t.name: t for t in hub.tools()}["mcp_t_echo"]
        return await echo.run({"text": "still here"}, SCOPE)

    assert runner.run(cancel_midway()) == "echo: still here"
    assert call(runner, hub, "mcp_t_pid") == pid
    assert server(hub, "t")._live.in_flight == 0


def test_crash_mid_call_then_started_again(runner, hub: McpHub) -> None:
    pid = int(call(runner, hub, "mcp_t_pid"))
    out = call(runner, hub, "mcp_t_crash")
    assert out == "Error: MCP server 't' stopped during the call (it is started again on next use)."
    new = int(call(runner, hub, "mcp_t_pid"))
    assert new != pid and alive(new)


def test_server_killed_while_idle_is_started_again_on_next_use(runner, hub: McpHub) -> None:
    pid = int(call(runner, hub, "mcp_t_pid"))
    os.kill(pid, signal.SIGKILL)
    runner.run(asyncio.sleep(0.5))  # the server's loop runs on while the process dies
    assert call(runner, hub, "mcp_t_echo", text="back") == "echo: back"
    assert int(call(runner, hub, "mcp_t_pid")) != pid


def test_http_server_down_then_back(runner, hub: McpHub, http_server: HttpMcpServer) -> None:
    http_server.stop()
    out = call(runner, hub, "mcp_web_echo", text="x")
    assert out.startswith("Error: MCP server 'web' "), out
    assert call(runner, hub, "mcp_web_echo", text="x").startswith("Error: MCP server 'web' is not connected")
    http_server.__init__(http_server.port)  # type: ignore[misc]  # the same address again
    assert call(runner, hub, "mcp_web_echo", text="again") == "echo: again"


def test_start_returns_at_once_and_a_silent_server_times_out(runner, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    silent = stdio("-c", f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(60)")
    hub = McpHub({"silent": silent}, connect_timeout=1.5)

    async def go() -> float:
        started = time.monotonic()
        await hub.start()
        took = time.monotonic() - started
        await hub.wait()
        return took

    assert runner.run(go()) < 0.05
    status = hub.servers[0].status
    assert status == "not connected: no answer in time" and hub.tools() == []
    deadline = time.monotonic() + 10
    while alive(int(pidfile.read_text())) and time.monotonic() < deadline:
        runner.run(asyncio.sleep(0.1))  # the session winds down in the background
    assert not alive(int(pidfile.read_text())), "the silent server's process was left running"
    runner.run(hub.close())


def test_close_stops_every_stdio_process(runner) -> None:
    hub = McpHub({"a": stdio(TEST_SERVER), "b": stdio(TEST_SERVER)}, connect_timeout=20)
    runner.run(hub.start())
    runner.run(hub.wait())
    pids = [int(call(runner, hub, f"mcp_{n}_pid")) for n in "ab"]
    assert all(alive(p) for p in pids)
    runner.run(hub.close())
    assert not any(alive(p) for p in pids)
    assert call(runner, hub, "mcp_a_echo", text="x").startswith("Error: ")  # closed: no restart... or a clear error


def test_config_check_lists_servers_and_their_tools(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "tools": {
                    "mcpServers": {
                        "t": {"command": sys.executable, "args": [TEST_SERVER], "enabledTools": ["echo", "add"]},
                        "broken": {"command": "/nonexistent/mcp-server"},
                    }
                }
            }
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "nanobot", "config", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr
    json.loads(out.stdout)  # stdout stays the resolved config alone
    lines = out.stderr.splitlines()
    assert f"# mcp server t (stdio: {sys.executable} {TEST_SERVER}): connected" in lines
    assert "#   tools (2): mcp_t_echo, mcp_t_add" in lines
    assert any(
        line.startswith("# mcp server broken (stdio: /nonexistent/mcp-server): not connected: FileNotFoundError")
        for line in lines
    ), out.stderr


def test_one_session_gets_a_share_of_a_server(runner, hub: McpHub) -> None:
    from nanobot.agent.tools import TurnScope
    from nanobot.tools.mcp import MAX_IN_FLIGHT_PER_SESSION

    tools = {t.name: t for t in hub.tools()}
    attacker, victim = TurnScope("api", "a", session_key="api:a"), TurnScope("api", "v", session_key="api:v")

    async def flood() -> tuple[str, str]:
        hogs = [
            asyncio.create_task(tools["mcp_t_slow"].run({"seconds": 1.5}, attacker))
            for _ in range(MAX_IN_FLIGHT_PER_SESSION)
        ]
        while server(hub, "t")._live is None or server(hub, "t")._live.in_flight < MAX_IN_FLIGHT_PER_SESSION:
            await asyncio.sleep(0.02)
        refused = await tools["mcp_t_echo"].run({"text": "more"}, attacker)
        served = await tools["mcp_t_echo"].run({"text": "victim"}, victim)
        await asyncio.gather(*hogs)
        return refused, served

    refused, served = runner.run(flood())
    assert refused.startswith("Error: this session already has 8 calls to MCP server 't' running")
    assert served == "echo: victim"
