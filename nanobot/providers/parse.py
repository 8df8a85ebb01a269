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


class Reported(Exception):
    """The upstream answered with an error document (in a 200 body or inside the stream)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _load_object(raw: bytes, what: str) -> dict[str, Any]:
    """A JSON object; :class:`Malformed` if it is none, :class:`Reported` if it is an error.

    As the SDK does, only a non-empty ``error`` is one: some servers send
    ``"error": null`` in every chunk.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Malformed(f"{what} is not JSON") from None
    if not isinstance(data, dict):
        raise Malformed(f"{what} is not an object")
    if "error" in data and (err := data["error"]):
        message = err.get("message") if isinstance(err, dict) else err
        raise Reported(shorten(message if isinstance(message, str) and message else "an unspecified error"))
    return data


# An SSE line or event longer than this is not a chat chunk: refuse rather than buffer.
MAX_LINE_BYTES = 4 * 1024 * 1024


class StreamParser:
    """Assembles text, tool-call fragments and usage from SSE bytes.

    Lines end at LF, CR or CRLF; an event's ``data:`` lines are joined with
    LF and the event is taken at the blank line that ends it, as the SSE
    spec (and the SDK's decoder) has it. Nothing after ``[DONE]`` is read.
    """

    __slots__ = (
        "parts",
        "calls",
        "usage",
        "finish_reason",
        "done",
        "seen_any",
        "_carry",
        "_rest",
        "_held",
        "_cr",
        "_event",
    )

    def __init__(self) -> None:
        self._carry = False  # the last read left something for the next: ``_rest`` or ``_cr``
        self._rest: list[bytes] = []  # the start of a line not ended yet
        self._held = 0
        self._cr = False  # the last read ended with CR: a LF first in the next is its CRLF's
        self._event: bytes | None = None  # the data of an event not ended yet
        self.parts: list[str] = []
        self.calls: dict[int, list[str]] = {}  # index -> [id, name, arguments...]
        self.usage = Usage()
        self.finish_reason = "stop"
        self.done = False
        self.seen_any = False

    def feed(self, data: bytes) -> list[str]:
        """The text deltas in ``data``; an unfinished line or event waits for more."""
        if self._carry:
            data = self._resume(data)
            if not data:
                return []
        # Membership by int is a plain memchr; a one-byte bytes needle is several times slower.
        if 13 in data:
            if data[-1] == 13:
                self._cr = self._carry = True
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = data.split(b"\n")
        last = lines.pop()
        if last:
            self._hold(last)
        texts = []
        event = self._event
        for line in lines:
            if line.startswith(b"data:"):
                value = line[6:] if len(line) > 5 and line[5] == 32 else line[5:]  # one leading space goes
                if event is None:
                    event = value
                else:  # one event's data over several lines
                    event = b"%s\n%s" % (event, value)
                    if len(event) > MAX_LINE_BYTES:
                        raise Malformed("a stream event is too long")
            elif not line and event is not None:
                text = self._data(event)
                event = None
                if text:
                    texts.append(text)
                elif self.done:
                    break
            # else: comments, other fields, blank lines between events
        self._event = event
        return texts

    def _resume(self, data: bytes) -> bytes:
        """``data`` after what the last read left: the LF of a CRLF cut in two
        dropped, the start of a cut line put back. Empty while a long line
        goes on (its pieces are kept, not re-joined per read)."""
        if self._cr and data:
            self._cr = False
            if data[0] == 10:
                data = data[1:]
        rest = self._rest
        if rest:
            if 10 not in data and 13 not in data:
                self._hold(data)
                return b""
            rest.append(data)
            data = b"".join(rest)
            rest.clear()
            self._held = 0
        self._carry = self._cr
        return data

    def _hold(self, piece: bytes) -> None:
        self._rest.append(piece)
        self._carry = True
        self._held += len(piece)
        if self._held > MAX_LINE_BYTES:
            raise Malformed("a stream line is too long")

    def _data(self, data: bytes) -> str | None:
        if data == b"[DONE]":
            self.done = True
            return None
        try:
            chunk = _load_object(data, "a stream chunk")
        except Malformed:
            if data.startswith(b"[DONE]"):  # the SDK's own test; only now, as it costs per chunk
                self.done = True
                return None
            raise
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
            return str(text)
        return None

    def _add_call(self, tc: dict[str, Any]) -> None:
        index = tc.get("index", len(self.calls))
        entry = self.calls.get(index)
        if entry is None:
            entry = self.calls[index] = ["", "", ""]
        fn = tc.get("function") or {}
        if tc.get("id"):
            entry[0] = _text(tc["id"])
        if fn.get("name"):
            entry[1] += fn["name"]
        if fn.get("arguments"):
            entry[2] += fn["arguments"]

    def completion(self) -> Completion:
        calls = [
            ToolCall(id=e[0] or f"call_{i}", name=e[1], arguments=e[2] or "{}") for i, e in sorted(self.calls.items())
        ]
        return Completion("".join(self.parts), calls, self.usage, self.finish_reason)


def parse_completion(body: bytes) -> Completion:
    """A whole non-streaming ``chat.completion`` body."""
    data = _load_object(body, "the answer")
    try:
        choice = data["choices"][0]
        message = choice["message"]
        text = message.get("content") or ""
        calls = [_whole_call(i, c) for i, c in enumerate(message.get("tool_calls") or ())]
        usage = data.get("usage") or {}
        return Completion(
            text if isinstance(text, str) else "",
            calls,
            Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)),
            choice.get("finish_reason") or "stop",
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError):
        raise Malformed("the answer has an unexpected shape") from None


def _whole_call(index: int, call: dict[str, Any]) -> ToolCall:
    """One tool call of a whole answer; its name, arguments and id must be text.

    They are kept in the session and sent on every later turn: a number in
    their place would fail each of those turns, not just this one.
    """
    function = call["function"]
    name, arguments, call_id = function["name"], function.get("arguments") or "{}", call.get("id")
    return ToolCall(id=_text(call_id) if call_id else f"call_{index}", name=_text(name), arguments=_text(arguments))


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("a tool call's id, name and arguments are strings")  # Malformed, by the caller
    return value
