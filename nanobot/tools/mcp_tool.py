"""MCP tools as the agent sees them: OpenAI-safe names, and results as text.

The session side (connecting, restarting, timeouts) is :mod:`nanobot.tools.mcp`,
which imports this module; a tool knows its server only as a
:class:`ToolServer`, so this one imports nothing of that.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Protocol

import orjson
from mcp import types

from nanobot.agent.tools import TurnScope, fail

MAX_NAME = 64  # OpenAI's limit for a function name
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def tool_name(server: str, tool: str, taken: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    """``mcp_<server>_<tool>`` in the OpenAI function-name charset, at most 64 chars, not in ``taken``.

    A name that had to be shortened, or that clashes after the unsafe
    characters became ``_``, ends in a hash of the original so it stays unique.
    """
    raw = f"mcp_{server}_{tool}"
    name = _UNSAFE.sub("_", raw)
    if len(name) > MAX_NAME or name in taken:
        digest = hashlib.sha1(raw.encode()).hexdigest()[:8]
        name = f"{name[: MAX_NAME - 9]}_{digest}"
    return name


def describe(block: Any) -> str:
    """One content block as text; non-text content is named, not inlined."""
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, (types.ImageContent, types.AudioContent)):
        kind = "image" if isinstance(block, types.ImageContent) else "audio"
        return f"[{kind} content: {block.mime_type}, about {len(block.data) * 3 // 4} bytes, not shown]"
    if isinstance(block, types.ResourceLink):
        return f"[resource link: {block.name} {block.uri}]"
    if isinstance(block, types.EmbeddedResource):
        res = block.resource
        if isinstance(res, types.TextResourceContents):
            return f"[resource {res.uri}]\n{res.text}"
        return f"[resource {res.uri}: {res.mime_type or 'binary'} content, not shown]"
    return f"[{getattr(block, 'type', 'unknown')} content, not shown]"


def render(result: types.CallToolResult, max_chars: int) -> str:
    """A tool result as the agent's text: parts joined, ``Error: ...`` when the tool failed."""
    parts = [describe(block) for block in result.content]
    if not parts and result.structured_content is not None:
        parts.append(orjson.dumps(result.structured_content, default=str).decode())
    text = "\n".join(parts)
    if len(text) > max_chars:
        text = text[:max_chars] + f"\n[... {len(text) - max_chars} more characters left out]"
    if result.is_error:
        return fail(f"Error: {text or 'the MCP tool reported an error without a message'}")
    return text or "(the tool returned no content)"


class ToolServer(Protocol):
    """What a tool needs of its server (``McpServer`` in :mod:`nanobot.tools.mcp`)."""

    async def call(self, tool: str, args: dict[str, Any], session: str = "") -> types.CallToolResult | str:
        """The tool's result, or an ``Error: ...`` text; never raises for a server fault."""


class McpTool:
    """One tool of one MCP server, offered to the model as ``mcp_<server>_<tool>``."""

    # The server's schema may use any JSON Schema feature, and the server
    # checks (and coerces) its own arguments: see nanobot.agent.tool_args.
    loose_schema = True

    def __init__(self, server: ToolServer, spec: types.Tool, name: str, max_chars: int) -> None:
        self.server, self.remote, self.name, self._max_chars = server, spec.name, name, max_chars
        params = spec.input_schema if isinstance(spec.input_schema, dict) else {}
        self.schema = {
            "type": "function",
            "function": {
                "name": name,
                "description": (spec.description or spec.title or spec.name)[:1024],
                "parameters": {"type": "object", "properties": {}, **params},
            },
        }

    async def run(self, args: dict[str, Any], scope: TurnScope) -> str:
        outcome = await self.server.call(self.remote, args, scope.session_key)
        return outcome if isinstance(outcome, str) else render(outcome, self._max_chars)
