"""MCP servers (``tools.mcpServers``) through the official ``mcp`` SDK: stdio and streamable HTTP.

Each server's session lives in one long-lived task of its own (the SDK's
anyio task groups must be entered and left by the same task). Callers never
touch the session: a call is started in the session's task group and its
result comes back through a future, bounded in number (:data:`MAX_IN_FLIGHT`)
and in time (``toolTimeout``). A turn that is cancelled cancels only its
future, which cancels that one request; the session goes on.

The hub connects every server in the background, so startup and ``/health``
never wait for it; a server that does not answer within its connect timeout
is logged and its tools stay absent. A session whose transport ended (a
stdio server that exited) is dropped, and the next call starts it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import CONNECTION_CLOSED

from nanobot.agent.tools import Tool, fail
from nanobot.config import McpServerConfig
from nanobot.tools.mcp_tool import McpTool, tool_name

log = logging.getLogger("nanobot.mcp")

CONNECT_TIMEOUT = 20.0  # spawn (or reach), initialize and list the tools
MAX_IN_FLIGHT = 32  # calls at once per server; more are refused, not queued without bound
MAX_IN_FLIGHT_PER_SESSION = 8  # of those, one session's: it cannot take the whole server
_STOP_TIMEOUT = 10.0  # the SDK closes stdin, waits, then kills the process tree


class McpDown(Exception):
    """The server could not be reached or stopped; the message says why."""


def _reason(exc: BaseException) -> str:
    """A short reason, digging out the first real error of an exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc).strip() or type(exc).__name__
    return text if isinstance(exc, (MCPError, McpDown)) else f"{type(exc).__name__}: {text}"


@dataclass
class _Live:
    """A connected session and the task group its calls run in."""

    session: ClientSession
    group: anyio.abc.TaskGroup
    stop: anyio.Event
    in_flight: int = 0


@dataclass
class McpServer:
    """One configured server: its status, its tools, and calls to it."""

    name: str
    config: McpServerConfig
    connect_timeout: float = CONNECT_TIMEOUT
    status: str = "not started"
    specs: list[types.Tool] = field(default_factory=list)
    _live: _Live | None = None
    _task: asyncio.Task[None] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _retiring: set[asyncio.Task[None]] = field(default_factory=set)
    _per_session: dict[str, int] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "streamable HTTP" if self.config.url else "stdio"

    @property
    def _gone(self) -> McpDown:
        again = "reconnected" if self.config.url else "started again"
        return McpDown(f"stopped during the call (it is {again} on next use)")

    def enabled(self, tool: str) -> bool:
        allowed = self.config.enabled_tools
        return "*" in allowed or tool in allowed

    async def start(self) -> _Live:
        """Connect (or reconnect) and return the live session; :class:`McpDown` when it fails."""
        async with self._lock:
            if self._live is not None and not self._live.stop.is_set():
                return self._live
            if self.status == "closed":
                raise McpDown("closed (the server is shutting down)")
            self._retire()
            ready: asyncio.Future[_Live] = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._serve(ready), name=f"mcp-{self.name}")
            try:
                # The session task bounds its own connect; this wait only
                # covers a transport that hangs before it gets there.
                done, _ = await asyncio.wait({ready}, timeout=self.connect_timeout + 2)
                live = ready.result() if done else None
            except BaseException as exc:  # the connect failed, or our caller was cancelled
                self._retire()
                self.status = f"not connected: {_reason(exc)}"
                if isinstance(exc, Exception):
                    raise McpDown(self.status) from None
                raise
            if live is None:
                ready.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warning
                self._retire()
                self.status = "not connected: no answer in time"
                raise McpDown(self.status)
            self.status = "connected"
            return live

    async def call(self, tool: str, args: dict[str, Any], session: str = "") -> types.CallToolResult | str:
        """The tool's result, or an ``Error: ...`` text; never raises for a server fault.

        Starting a server that is down is bounded by the connect timeout, the
        call itself by ``toolTimeout``: a server slower to start than its
        tools are to answer still comes back.
        """
        live = self._live
        try:
            if live is None or live.stop.is_set():  # never connected, or the session ended
                live = await self.start()
        except McpDown as exc:
            return fail(f"Error: MCP server '{self.name}' is {exc}.")
        if live.in_flight >= MAX_IN_FLIGHT:
            return fail(f"Error: MCP server '{self.name}' already has {MAX_IN_FLIGHT} calls running; try again.")
        mine = self._per_session.get(session, 0)
        if mine >= MAX_IN_FLIGHT_PER_SESSION:
            return fail(
                f"Error: this session already has {MAX_IN_FLIGHT_PER_SESSION} calls to MCP server "
                f"'{self.name}' running; wait for them first."
            )
        self._per_session[session] = mine + 1
        try:
            return await self._call_live(live, tool, args)
        finally:
            left = self._per_session.pop(session) - 1
            if left:
                self._per_session[session] = left

    async def _call_live(self, live: _Live, tool: str, args: dict[str, Any]) -> types.CallToolResult | str:
        future: asyncio.Future[types.CallToolResult] = asyncio.get_running_loop().create_future()
        live.group.start_soon(self._call, live, tool, args, future)
        timeout = self.config.tool_timeout
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError:
            return fail(
                f"Error: MCP tool '{tool}' of server '{self.name}' did not answer within {timeout:g} s (toolTimeout)."
            )
        except McpDown as exc:
            return fail(f"Error: MCP server '{self.name}' {exc}.")
        except MCPError as exc:
            return fail(f"Error: MCP server '{self.name}' refused the call: {exc.message}")

    async def close(self) -> None:
        """End the session; a stdio server's process tree is stopped and reaped."""
        async with self._lock:
            self._retire()
            await asyncio.gather(*(self._reap(task) for task in list(self._retiring)))
            self.status = "closed"

    def _retire(self) -> None:
        """Tell the current session to end; it winds down (the SDK reaps the process) in the background."""
        if self._live is not None:
            self._live.stop.set()
            self._live = None
        if self._task is not None:
            self._retiring.add(self._task)
            self._task.add_done_callback(self._retiring.discard)
            self._task = None

    @staticmethod
    async def _reap(task: asyncio.Task[None]) -> None:
        """Cancel a session task and wait for it: the SDK's cleanup closes the
        server's stdin, waits briefly, then kills its process tree."""
        task.cancel()
        try:
            async with asyncio.timeout(_STOP_TIMEOUT):
                await asyncio.shield(task)
        except BaseException:  # its own failure was reported through its future
            pass

    async def _serve(self, ready: asyncio.Future[_Live]) -> None:
        """The session's task: connect, publish the session, wait until told (or forced) to stop."""
        stop = anyio.Event()
        try:
            async with self._transport() as (read, write), anyio.create_task_group() as group:
                relay_in, relay_out = anyio.create_memory_object_stream[Any](0)
                group.start_soon(self._relay, read, relay_in, stop)
                async with ClientSession(relay_out, write) as session:
                    with anyio.fail_after(self.connect_timeout):
                        await session.initialize()
                        self.specs = await _list_tools(session)
                    live = _Live(session, group, stop)
                    if asyncio.current_task() is self._task:  # else start() gave up on us: just end
                        self._live = live
                        ready.set_result(live)
                        await stop.wait()
                    if self._live is live:
                        self._live = None
                group.cancel_scope.cancel()  # the relay, and calls still waiting on a dead session
        except Exception as exc:
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.warning("MCP server %s: session ended: %s", self.name, _reason(exc))
        finally:
            stop.set()  # calls see at once that this session is over
            if self._task is asyncio.current_task():  # still this server's session, not a retired one
                self._live = None
                if ready.done() and self.status == "connected":
                    self.status = "disconnected (started again on next use)"

    async def _relay(self, read: Any, out: Any, stop: anyio.Event) -> None:
        """Forward the transport's messages to the session; its end means the server is gone."""
        async with out:
            async for message in read:
                await out.send(message)
        log.warning("MCP server %s closed its connection", self.name)
        stop.set()

    async def _call(self, live: _Live, tool: str, args: dict[str, Any], future: asyncio.Future[Any]) -> None:
        if future.done():  # the caller gave up before the call started
            return
        live.in_flight += 1
        try:
            with anyio.CancelScope() as scope:
                # The caller's cancellation (turn cancelled, toolTimeout) cancels this request only.
                future.add_done_callback(lambda _: scope.cancel())
                result = await live.session.call_tool(tool, args)
                if not future.done():
                    future.set_result(result)
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                live.stop.set()
            else:
                _fail(future, exc)
        except Exception as exc:  # a transport fault: drop the session, reconnect on next use
            live.stop.set()
            _fail(future, McpDown(f"failed during the call: {_reason(exc)}"))
        finally:  # also when the session's task group is cancelled under us
            live.in_flight -= 1
            if not future.done():  # no answer and not given up: the session is broken
                live.stop.set()
                future.set_exception(self._gone)

    @asynccontextmanager
    async def _transport(self) -> AsyncIterator[Any]:
        c = self.config
        if c.url and c.command:
            raise McpDown("set either command (stdio) or url (streamable HTTP), not both")
        if c.url:
            async with create_mcp_http_client(headers=c.headers or None) as http:
                async with streamable_http_client(c.url, http_client=http) as streams:
                    yield streams
        elif c.command:
            params = StdioServerParameters(command=c.command, args=c.args, env=c.env or None, cwd=c.cwd)
            async with stdio_client(params) as streams:
                yield streams
        else:
            raise McpDown("neither command nor url is set")


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


async def _list_tools(session: ClientSession) -> list[types.Tool]:
    specs: list[types.Tool] = []
    cursor = None
    for _ in range(100):  # pages; a server that never stops paging is cut off
        page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        specs.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return specs


class McpHub:
    """Every configured MCP server, connected in the background; their tools as they come."""

    def __init__(
        self,
        servers: dict[str, McpServerConfig],
        on_tool: Callable[[Tool], None] | None = None,
        *,
        max_result_chars: int = 16000,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.servers = [McpServer(name, cfg, connect_timeout) for name, cfg in servers.items()]
        self._on_tool = on_tool
        self._max_chars = max_result_chars
        self._tools: dict[str, McpTool] = {}
        self._connecting: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Begin connecting every server; returns at once."""
        self._connecting = [asyncio.create_task(self._connect(s), name=f"mcp-connect-{s.name}") for s in self.servers]

    async def wait(self) -> None:
        """Until every server connected or failed (``config check`` and tests)."""
        await asyncio.gather(*self._connecting, return_exceptions=True)

    def tools(self) -> list[Tool]:
        return list(self._tools.values())

    def offered(self, server: McpServer) -> list[str]:
        return [t.name for t in self._tools.values() if t.server is server]

    async def report(self) -> list[str]:
        """Connect every server, then one line each: connected or not (why), and the tools it offers."""
        await self.start()
        await self.wait()
        lines = []
        for server in self.servers:
            where = server.config.url or " ".join([server.config.command, *server.config.args])
            lines.append(f"mcp server {server.name} ({server.kind}: {where}): {server.status}")
            if server.status == "connected":
                names = self.offered(server)
                lines.append(f"  tools ({len(names)}): {', '.join(names) or 'none (enabledTools matches none)'}")
        await self.close()
        return lines

    async def close(self) -> None:
        for task in self._connecting:
            task.cancel()
        await asyncio.gather(*self._connecting, return_exceptions=True)
        await asyncio.gather(*(s.close() for s in self.servers), return_exceptions=True)

    async def _connect(self, server: McpServer) -> None:
        try:
            await server.start()
        except McpDown:
            log.warning("MCP server %s (%s) %s; its tools are not offered", server.name, server.kind, server.status)
            return
        for spec in server.specs:
            if not server.enabled(spec.name):
                continue
            tool = McpTool(server, spec, tool_name(server.name, spec.name, set(self._tools)), self._max_chars)
            self._tools[tool.name] = tool
            if self._on_tool is not None:
                self._on_tool(tool)
        log.info("MCP server %s (%s) connected: %d tools", server.name, server.kind, len(self.offered(server)))
