"""Parsing OpenAI Chat Completions answers: SSE chunk bytes, or one JSON body.

Plain dicts from orjson, no pydantic objects: this runs once per streamed
token. Tool-call fragments are assembled by index; usage is taken from the
chunk that carries it (``stream_options.include_usage``).
"""

from __future__ import annotations

from typing import Any

import orjson

from nanobot.protocol import Usage
from nanobot.providers.base import Completion, ToolCall


class Malformed(Exception):
    """The upstream's answer is not what the protocol promises."""


def shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _load_object(raw: bytes, what: str) -> dict[str, Any]:
    """A JSON object that is not an error document, or :class:`Malformed`."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Malformed(f"{what} is not JSON") from None
    if not isinstance(data, dict):
        raise Malformed(f"{what} is not an object")
    if "error" in data:
        err = data["error"]
        raise Malformed(f"error in {what}: {shorten(str(err.get('message') if isinstance(err, dict) else err))}")
    return data


# An SSE line longer than this is not a chat chunk: refuse rather than buffer.
MAX_LINE_BYTES = 4 * 1024 * 1024


class StreamParser:
    """Assembles text, tool-call fragments and usage from SSE bytes."""

    __slots__ = ("parts", "calls", "usage", "finish_reason", "done", "seen_any", "_rest")

    def __init__(self) -> None:
        self._rest = b""
        self.parts: list[str] = []
        self.calls: dict[int, list[str]] = {}  # index -> [id, name, arguments...]
        self.usage = Usage()
        self.finish_reason = "stop"
        self.done = False
        self.seen_any = False

    def feed(self, data: bytes) -> list[str]:
        """The text deltas in ``data``; an incomplete last line waits for more."""
        if self._rest:
            data = self._rest + data
        lines = data.split(b"\n")
        self._rest = lines.pop()
        if len(self._rest) > MAX_LINE_BYTES:
            raise Malformed("a stream line is too long")
        texts = []
        for line in lines:
            if line.startswith(b"data:"):
                text = self._data(line[5:].strip())
                if text:
                    texts.append(text)
            # else: comments, event names, blank separators
        return texts

    def _data(self, data: bytes) -> str | None:
        if data == b"[DONE]":
            self.done = True
            return None
        chunk = _load_object(data, "a stream chunk")
        self.seen_any = True
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        choices = chunk.get("choices")
        if not choices:
            return None
        try:
            choice = choices[0]
            delta = choice.get("delta") or {}
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            for tc in delta.get("tool_calls") or ():
                self._add_call(tc)
            text = delta.get("content")
        except (AttributeError, TypeError, IndexError):
            raise Malformed("a stream chunk has an unexpected shape") from None
        if text:
            self.parts.append(text)
            return text
        return None

    def _add_call(self, tc: dict[str, Any]) -> None:
        index = tc.get("index", len(self.calls))
        entry = self.calls.get(index)
        if entry is None:
            entry = self.calls[index] = ["", "", ""]
        fn = tc.get("function") or {}
        if tc.get("id"):
            entry[0] = tc["id"]
        if fn.get("name"):
            entry[1] += fn["name"]
        if fn.get("arguments"):
            entry[2] += fn["arguments"]

    def completion(self) -> Completion:
        calls = [
            ToolCall(id=e[0] or f"call_{i}", name=e[1], arguments=e[2] or "{}")
            for i, e in sorted(self.calls.items())
        ]
        return Completion("".join(self.parts), calls, self.usage, self.finish_reason)


def parse_completion(body: bytes) -> Completion:
    """A whole non-streaming ``chat.completion`` body."""
    data = _load_object(body, "the answer")
    try:
        choice = data["choices"][0]
        message = choice["message"]
        text = message.get("content") or ""
        calls = [
            ToolCall(id=c.get("id") or f"call_{i}", name=c["function"]["name"],
                     arguments=c["function"].get("arguments") or "{}")
            for i, c in enumerate(message.get("tool_calls") or ())
        ]
        usage = data.get("usage") or {}
        return Completion(
            text if isinstance(text, str) else "",
            calls,
            Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)),
            choice.get("finish_reason") or "stop",
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise Malformed("the answer has an unexpected shape") from None
