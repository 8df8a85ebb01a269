"""The provider interface: one streamed LLM call.

A provider's ``stream`` yields ``str`` text deltas as they arrive and ends
with exactly one :class:`Completion` (tool calls assembled, usage counted).
Plain ``str`` for deltas keeps the per-token path free of allocations.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Protocol

from nanobot.protocol import Usage


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # the raw JSON text, as the model wrote it

    def as_message_part(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(slots=True)
class Completion:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"


@dataclass(slots=True)
class ClientOffer:
    """What a call offers beside the server's tools: the client's tools and the tool fields.

    ``tools`` is the client tools' JSON list items (no brackets), encoded
    once per request; ``tool_choice`` and ``parallel_tool_calls`` are the
    OpenAI fields, sent as given (None: not sent).
    """

    tools: bytes = b""
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None


class Provider(Protocol):
    name: str
    model: str

    def stream(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        incremental: bool = True,
        response_format: dict[str, Any] | None = None,
        client: ClientOffer | None = None,
    ) -> AsyncGenerator[str | Completion, None]:
        """Text deltas, then the Completion. ``incremental=False``: the caller
        only wants the whole reply, so the provider may fetch it in one piece.
        ``response_format``: the OpenAI field, sent as given (None: not sent).
        ``client``: the client's tools, offered after the server's ``tools``."""

    async def close(self) -> None: ...
