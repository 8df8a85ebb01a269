"""Byte encoders for OpenAI Chat Completions objects and SSE frames.

Streamed chunks of one response share `id`, `created` and `model`, so their
common JSON prefix is built once per stream and each frame is a few byte
concatenations; this keeps per-chunk cost low when thousands of streams run.
"""

from __future__ import annotations

from typing import Any

import orjson

from nanobot.testing.script import Reply

DONE_FRAME = b"data: [DONE]\n\n"
GARBAGE_BODY = b"this is not json"
GARBAGE_FRAME = b"data: {not json\n\n"

_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def error_body(status: int, message: str) -> bytes:
    """An OpenAI-style error object for an HTTP status."""
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": None}})


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(cid: str, created: int, model: str, reply: Reply, call_ids: list[str], prompt_tokens: int) -> bytes:
    """A non-streamed `chat.completion` object for a reply."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    finish = "stop"
    if reply.tool_calls:
        message["content"] = None
        message["tool_calls"] = [
            {"id": call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for call_id, c in zip(call_ids, reply.tool_calls, strict=False)
        ]
        finish = "tool_calls"
    return orjson.dumps(
        {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
            "usage": usage(prompt_tokens, reply.completion_tokens),
        }
    )


def split_arguments(arguments: str) -> list[str]:
    """Cut tool-call arguments into 2+ pieces, as a model streams them."""
    size = max(1, min(16, len(arguments) // 2))
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]


class ChunkFrames:
    """Encodes the `chat.completion.chunk` SSE frames of one stream."""

    __slots__ = ("_head", "_tail")

    def __init__(self, cid: str, created: int, model: str, include_usage: bool) -> None:
        self._head = b"".join(
            (
                b'data: {"id":',
                orjson.dumps(cid),
                b',"object":"chat.completion.chunk","created":',
                str(created).encode(),
                b',"model":',
                orjson.dumps(model),
                b',"choices":',
            )
        )
        # OpenAI only adds `"usage": null` to chunks when usage was asked for.
        self._tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"

    def delta(self, delta: bytes, finish_reason: bytes = b"null") -> bytes:
        return b"".join(
            (
                self._head,
                b'[{"index":0,"delta":',
                delta,
                b',"logprobs":null,"finish_reason":',
                finish_reason,
                b"}]",
                self._tail,
            )
        )

    def role(self, for_tools: bool) -> bytes:
        content = b"null" if for_tools else b'""'
        return self.delta(b'{"role":"assistant","content":' + content + b"}")

    def content(self, text: str) -> bytes:
        return self.delta(b'{"content":' + orjson.dumps(text) + b"}")

    def tool_start(self, index: int, call_id: str, name: str) -> bytes:
        call = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        return self.delta(b'{"tool_calls":[' + orjson.dumps(call) + b"]}")

    def tool_arguments(self, index: int, piece: str) -> bytes:
        call = {"index": index, "function": {"arguments": piece}}
        return self.delta(b'{"tool_calls":[' + orjson.dumps(call) + b"]}")

    def finish(self, reason: str) -> bytes:
        return self.delta(b"{}", orjson.dumps(reason))

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        body = orjson.dumps(usage(prompt_tokens, completion_tokens))
        return self._head + b'[],"usage":' + body + b"}\n\n"
