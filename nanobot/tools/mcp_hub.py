"""The MCP hub the services hold: the real one only when ``tools.mcpServers`` names a server.

The ``mcp`` SDK with what it imports (starlette, uvicorn, pydantic models,
opentelemetry) is about 25 MB resident; a server with no MCP servers
configured never imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from nanobot.agent.tools import Tool
from nanobot.config import McpServerConfig


class McpTools(Protocol):
    """What the services use of a hub (:class:`nanobot.tools.mcp.McpHub`)."""

    async def start(self) -> None: ...

    async def wait(self) -> None: ...

    async def close(self) -> None: ...


class NoMcpServers:
    """``tools.mcpServers`` is empty: nothing to connect."""

    async def start(self) -> None:
        pass

    async def wait(self) -> None:
        pass

    async def close(self) -> None:
        pass


def mcp_hub(servers: dict[str, McpServerConfig], on_tool: Callable[[Tool], None], *, max_result_chars: int) -> McpTools:
    if not servers:
        return NoMcpServers()
    # imported here, not at the top: see the module docstring
    from nanobot.tools.mcp import McpHub

    return McpHub(servers, on_tool, max_result_chars=max_result_chars)
