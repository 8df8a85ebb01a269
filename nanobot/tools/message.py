"""The ``message`` tool: into this reply, or onto the outbound queue for a channel.

A model's arguments may come from a hostile page or file, so the targets are
the operator's: a chat in ``channels.<name>.allowedChatIds`` ("*": any), or
the chat the session itself is bound to. An unknown channel is refused before
anything is stored.
"""

from __future__ import annotations

from typing import Any

from nanobot.agent.tools import Tool, TurnScope, fail, function_schema
from nanobot.config import ChannelsConfig
from nanobot.outbound.base import UNDELIVERABLE, Outbox
from nanobot.outbound.channels import KNOWN_CHANNELS
from nanobot.tools.base import BuiltinTool, ToolDeps


class MessageTool(BuiltinTool):
    """Sends a message: into this reply, or onto the outbound queue for a channel. Always offered."""

    name = "message"
    schema = function_schema(
        name,
        "Send a message. Without channel it is shown to the user in this conversation. "
        "With channel and chat_id it is delivered to that chat channel (e.g. telegram, webhook).",
        {
            "content": {"type": "string", "description": "The message text."},
            "channel": {"type": "string", "description": "Target channel, e.g. telegram."},
            "chat_id": {"type": "string", "description": "Chat id on that channel."},
        },
        ["content"],
    )

    def __init__(self, outbox: Outbox, channels: ChannelsConfig | None = None) -> None:
        self._outbox = outbox
        self._channels = channels or ChannelsConfig()

    @classmethod
    def build(cls, deps: ToolDeps) -> Tool:
        return cls(deps.outbox, deps.config.channels)

    def refusal(self, channel: str, chat_id: str, scope: TurnScope) -> str | None:
        """Why the message may not go to ``channel:chat_id``, or None."""
        return target_refusal(self._channels, channel, chat_id, scope)

    async def run(self, args: dict[str, Any], scope: TurnScope) -> str:
        content = args.get("content")
        if not isinstance(content, str) or not content:
            return fail("Error: 'content' must be a non-empty string.")
        channel = args.get("channel")
        chat_id = args.get("chat_id")
        if channel in (None, "", scope.channel):
            scope.inline.append(content)
            return "Message shown to the user in this conversation."
        if not isinstance(channel, str):
            return fail("Error: 'channel' must be a string.")
        if chat_id is None or chat_id == "":
            return fail(f"Error: 'chat_id' is required to send to channel '{channel}'.")
        if isinstance(chat_id, (int, float)) and not isinstance(chat_id, bool):
            chat_id = str(chat_id)
        if not isinstance(chat_id, str):
            return fail("Error: 'chat_id' must be a string.")
        refused = self.refusal(channel, chat_id, scope)
        if refused is not None:
            return refused
        queued = await self._outbox.enqueue(channel, chat_id, content)
        if queued.state == UNDELIVERABLE:
            return (
                f"Channel '{channel}' is not enabled: no delivery will occur. "
                f"The message was recorded as undeliverable (outbox id {queued.id})."
            )
        return f"Message queued for delivery to {channel}:{chat_id} (outbox id {queued.id})."


def target_refusal(channels: ChannelsConfig, channel: str, chat_id: str, scope: TurnScope) -> str | None:
    """Why a turn in ``scope`` may not send to ``channel:chat_id``, or None (also the cron tool's rule)."""
    if channel not in KNOWN_CHANNELS:
        known = ", ".join((*KNOWN_CHANNELS, scope.channel))
        return fail(f"Error: unknown channel '{channel}' (known: {known}); nothing was sent or stored.")
    if channel == scope.channel and chat_id == scope.chat_id:
        return None  # the chat this session is bound to
    allowed = getattr(channels, channel).allowed_chat_ids
    if "*" in allowed or chat_id in allowed:
        return None
    return fail(
        f"Error: chat_id '{chat_id}' is not an allowed target on channel '{channel}': "
        f"the operator lists allowed chats in channels.{channel}.allowedChatIds; nothing was sent or stored."
    )
