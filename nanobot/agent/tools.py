"""Tools the model may call, and the ``message`` tool.

A tool never kills a turn: bad arguments, an unknown name or an exception
become an error result that the model reads and can react to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from nanobot.outbound.base import UNDELIVERABLE, Outbox
from nanobot.providers.base import ToolCall

log = logging.getLogger("nanobot.tools")


@dataclass
class TurnScope:
    """Where a turn runs, and the text tools add to this turn's reply."""

    channel: str  # "api" or "cli": the synthetic channel of this turn
    chat_id: str
    inline: list[str] = field(default_factory=list)


class Tool(Protocol):
    name: str
    schema: dict[str, Any]

    async def run(self, args: dict[str, Any], scope: TurnScope) -> str: ...


class MessageTool:
    """Sends a message: into this reply, or onto the outbound queue for a channel."""

    name = "message"
    schema = {
        "type": "function",
        "function": {
            "name": "message",
            "description": (
                "Send a message. Without channel it is shown to the user in this "
                "conversation. With channel and chat_id it is delivered to that chat "
                "channel (e.g. telegram, webhook)."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    "content": {"type": "string", "description": "The message text."},
                    "channel": {"type": "string", "description": "Target channel, e.g. telegram."},
                    "chat_id": {"type": "string", "description": "Chat id on that channel."},
                },
                "required": ["content"],
            },
        },
    }

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox

    async def run(self, args: dict[str, Any], scope: TurnScope) -> str:
        content = args.get("content")
        if not isinstance(content, str) or not content:
            return "Error: 'content' must be a non-empty string."
        channel = args.get("channel")
        chat_id = args.get("chat_id")
        if channel in (None, "", scope.channel):
            scope.inline.append(content)
            return "Message shown to the user in this conversation."
        if not isinstance(channel, str):
            return "Error: 'channel' must be a string."
        if chat_id is None or chat_id == "":
            return f"Error: 'chat_id' is required to send to channel '{channel}'."
        if isinstance(chat_id, (int, float)) and not isinstance(chat_id, bool):
            chat_id = str(chat_id)
        if not isinstance(chat_id, str):
            return "Error: 'chat_id' must be a string."
        queued = await self._outbox.enqueue(channel, chat_id, content)
        if queued.state == UNDELIVERABLE:
            return (
                f"Channel '{channel}' is not enabled: no delivery will occur. "
                f"The message was recorded as undeliverable (outbox id {queued.id})."
            )
        return f"Message queued for delivery to {channel}:{chat_id} (outbox id {queued.id})."


class ToolRegistry:
    def __init__(self, tools: list[Tool]) -> None:
        self._tools = {t.name: t for t in tools}
        self.schemas = [t.schema for t in tools]

    def add(self, tool: Tool) -> None:
        """Offer ``tool`` from the next model call on (MCP tools arrive after startup)."""
        self._tools[tool.name] = tool
        self.schemas = [t.schema for t in self._tools.values()]  # a new list: a turn may be reading the old

    async def close(self) -> None:
        """Let tools that hold resources (worker processes, clients) release them."""
        for tool in self._tools.values():
            close = getattr(tool, "close", None)
            if close is not None:
                await close()

    async def run(self, call: ToolCall, scope: TurnScope) -> str:
        tool = self._tools.get(call.name)
        if tool is None:
            return f"Error: unknown tool '{call.name}'."
        try:
            args = orjson.loads(call.arguments or "{}")
        except orjson.JSONDecodeError:
            return "Error: the tool arguments are not valid JSON."
        if not isinstance(args, dict):
            return "Error: the tool arguments must be a JSON object."
        try:
            return await tool.run(args, scope)
        except Exception as exc:  # the model gets the error; the turn goes on
            log.warning("tool %s failed: %s", call.name, exc, exc_info=True)
            return f"Error: tool '{call.name}' failed: {type(exc).__name__}: {exc}"
