"""An MCP server for the tests, written with the official SDK.

``python tests/mcp_test_server.py`` serves over stdio;
``python tests/mcp_test_server.py --http PORT`` serves streamable HTTP at
``http://127.0.0.1:PORT/mcp``. Its tools cover what the client must handle:
text, several parts, an image, an error, a slow call, a crash mid-call.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image

server = MCPServer("nanobot-test", log_level="WARNING")
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return f"echo: {text}"


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def pid() -> str:
    """The server's process id."""
    return str(os.getpid())


@server.tool()
def parts() -> list:
    """Two text parts and an image."""
    return ["first part", "second part", Image(data=PNG, format="png")]


@server.tool()
def fail(reason: str = "it broke") -> str:
    """Always fails."""
    raise ToolError(reason)


@server.tool()
async def slow(seconds: float) -> str:
    """Answer after a while."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@server.tool()
def crash() -> str:
    """Exit the server process in the middle of the call."""
    os._exit(3)


@server.tool(name="fetch.page-with-a-very-long-name-that-goes-on-and-on-past-sixty-four-characters")
def weird() -> str:
    """A name no OpenAI function may have as it is."""
    return "weird ok"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
