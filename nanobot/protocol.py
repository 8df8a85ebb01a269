"""The OpenAI Chat Completions wire format, kept apart from serving logic.

Streaming frames are built from byte prefixes computed once per response, so
a content chunk costs one ``orjson.dumps`` of its text and a concatenation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from nanobot.errors import ApiError, error_body
from nanobot.ids import new_id


class ToolCall(Protocol):
    """A function call as the wire shows it (``nanobot.providers.base.ToolCall`` is one)."""

    id: str
    name: str
    arguments: str

    def as_message_part(self) -> dict[str, Any]: ...


DONE_FRAME = b"data: [DONE]\n\n"
PING_FRAME = b": ping\n\n"


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def new_completion_id() -> str:
    return "chatcmpl-" + new_id()


def completion_body(model: str, text: str, usage: Usage, tool_calls: Sequence[ToolCall] | None = None) -> bytes:
    """A whole non-streaming ``chat.completion`` response (``tool_calls``: the client's, the turn paused)."""
    if tool_calls:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text or None,
            "tool_calls": [c.as_message_part() for c in tool_calls],
        }
        return _completion(model, message, "tool_calls", usage)
    return orjson.dumps(
        {
            "id": new_completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": usage.as_dict(),
        }
    )


def _completion(model: str, message: dict[str, Any], finish_reason: str, usage: Usage) -> bytes:
    return orjson.dumps(
        {
            "id": new_completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": usage.as_dict(),
        }
    )


def models_body(model: str) -> bytes:
    return orjson.dumps(
        {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "nanobot"}]}
    )


def error_json(err: ApiError) -> bytes:
    return orjson.dumps(error_body(err))


def error_frame(err: ApiError) -> bytes:
    """A failure after the SSE headers went out; the stream then ends without [DONE]."""
    return b"data: " + orjson.dumps(error_body(err)) + b"\n\n"


class ChunkEncoder:
    """Encodes one streamed response: every chunk shares one id and ``created``."""

    __slots__ = ("_head", "_tail", "_content_head", "_content_tail", "_include_usage", "_model")

    def __init__(self, model: str, include_usage: bool) -> None:
        self._model = model
        self._include_usage = include_usage
        head = orjson.dumps(
            {
                "id": new_completion_id(),
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
            }
        )
        # ``{"id":..,"model":"m"}`` -> ``data: {"id":..,"model":"m","choices":[{"index":0,"delta":``
        self._head = b"data: " + head[:-1] + b',"choices":[{"index":0,"delta":'
        self._tail = b',"finish_reason":null}]' + (b',"usage":null' if include_usage else b"") + b"}\n\n"
        # A token's frame is these two around its text: two joins per token, not four.
        self._content_head = self._head + b'{"content":'
        self._content_tail = b"}" + self._tail

    def role(self) -> bytes:
        return self._head + b'{"role":"assistant","content":""}' + self._tail

    def content(self, text: str) -> bytes:
        return self._content_head + orjson.dumps(text) + self._content_tail

    def tool_event(self, name: str, status: str, call_id: str = "", ok: bool | None = None) -> bytes:
        event: dict[str, Any] = {"name": name, "status": status, "id": call_id}
        if ok is not None:
            event["ok"] = ok
        delta = orjson.dumps({"nanobot_tool": event})
        return self._head + delta + self._tail

    def tool_calls(self, calls: Sequence[ToolCall]) -> bytes:
        """The client's calls as OpenAI streams them: per call, a chunk with its index, id,
        type, name and empty arguments, then one with the arguments."""
        frames = []
        for index, call in enumerate(calls):
            head = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
            frames.append(self._head + orjson.dumps({"tool_calls": [head]}) + self._tail)
            if call.arguments:
                args = {"index": index, "function": {"arguments": call.arguments}}
                frames.append(self._head + orjson.dumps({"tool_calls": [args]}) + self._tail)
        return b"".join(frames)

    def stop(self, finish_reason: str = "stop") -> bytes:
        reason = b'"tool_calls"' if finish_reason == "tool_calls" else b'"stop"'
        tail = b',"finish_reason":' + reason + b"}]" + (b',"usage":null' if self._include_usage else b"") + b"}\n\n"
        return self._head + b"{}" + tail

    def usage(self, usage: Usage) -> bytes:
        # Same id/created/model head, but ``choices`` is empty.
        head = self._head[: -len(b'[{"index":0,"delta":')]
        return head + b'[],"usage":' + orjson.dumps(usage.as_dict()) + b"}\n\n"


def parse_frames(raw: bytes) -> list[Any]:
    """Split an SSE body into decoded ``data:`` payloads (``"[DONE]"`` kept as a string).

    For clients of this server (the tests use it); comment lines are skipped.
    """
    out: list[Any] = []
    for block in raw.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data: "):
                data = line[6:]
                out.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return out
