"""The built-in offline provider: it says back what it was told.

It exists so that a fresh install answers without any network or key. The
reply is the user's own text followed by one line per received file, streamed
word by word, with usage counted in words.

A reply as long as ``api.maxBodyBytes`` allows must not stall the server:
past the first words a stream goes in pieces of about 64 KiB (not millions of
one-word frames), a whole reply is one piece, and for big texts the
reading and counting run in a worker thread, a slice at a time.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from nanobot.errors import InvalidRequest
from nanobot.protocol import Usage
from nanobot.providers.base import ClientOffer, Completion

_FILE_BLOCK = re.compile(r"\[file: ([^\]\n]*)\]\n.*?\n\[/file\]", re.S)
_IMAGE = re.compile(r"\[image: ([^\]\n]*)\]")
_WORD = re.compile(r"\S+\s*")
_SPACES = re.compile(r"\s+")
WORD_PIECES = 1000  # a stream's first pieces are single words ...
PIECE_CHARS = 64 * 1024  # ... then pieces of about this many characters, cut after a space
_BIG = 64 * 1024  # characters of input past which the work leaves the event loop
_SLICE = 1 << 20  # characters per step of a long count (the GIL is let go between steps)

NO_STRUCTURED_OUTPUT = (
    "The offline echo provider cannot produce structured output (response_format json_object or "
    "json_schema): point agents.defaults.provider at a model that can."
)


def count_words(text: str) -> int:
    """``len(text.split())`` without a list of every word, a slice at a time."""
    count = 0
    joined = False  # the previous slice ended inside a word
    for start in range(0, len(text), _SLICE):
        part = text[start : start + _SLICE]
        count += len(part.split())
        if joined and not part[0].isspace():
            count -= 1  # one word cut in two by the slicing
        joined = not part[-1].isspace()
    return count


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def echo_reply(user_text: str) -> str:
    """The user's words, then a line naming each file or image it carried."""
    names = [f"[received file: {m.group(1)}]" for m in _FILE_BLOCK.finditer(user_text)]
    names += [f"[received image: {m.group(1)}]" for m in _IMAGE.finditer(user_text)]
    text = _IMAGE.sub("", _FILE_BLOCK.sub("", user_text)).strip()
    return "\n".join(part for part in [text, *names] if part)


def piece_ends(reply: str, incremental: bool) -> list[int]:
    """Where each streamed piece of ``reply`` ends; joined, the pieces are the reply."""
    if not incremental:
        return [len(reply)] if reply else []
    ends = [m.end() for m in itertools.islice(_WORD.finditer(reply), WORD_PIECES)]
    pos = ends[-1] if ends else 0
    while pos < len(reply):
        space = _SPACES.search(reply, pos + PIECE_CHARS)
        pos = space.end() if space else len(reply)
        ends.append(pos)
    return ends


@dataclass
class _Answer:
    reply: str
    ends: list[int]
    usage: Usage


def _answer(messages: list[dict[str, Any]], incremental: bool) -> _Answer:
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    reply = echo_reply(_text_of(last_user.get("content")) if last_user else "")
    prompt = sum(count_words(_text_of(m.get("content"))) for m in messages)
    return _Answer(reply, piece_ends(reply, incremental), Usage(prompt, count_words(reply)))


def _size(messages: list[dict[str, Any]]) -> int:
    total = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    return total


class EchoProvider:
    name = "echo"

    def __init__(self, model: str = "echo") -> None:
        self.model = model

    async def stream(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        incremental: bool = True,
        response_format: dict[str, Any] | None = None,
        client: ClientOffer | None = None,
    ) -> AsyncGenerator[str | Completion, None]:
        # The client's tools are never called: echo calls no tools at all.
        if response_format is not None:  # validate refuses it first; this holds for any other caller
            raise InvalidRequest(NO_STRUCTURED_OUTPUT, param="response_format", code="unsupported_parameter")
        if _size(messages) > _BIG:
            answer = await asyncio.to_thread(_answer, messages, incremental)
        else:
            answer = _answer(messages, incremental)
        start = 0
        for end in answer.ends:
            yield answer.reply[start:end]
            start = end
        yield Completion(text=answer.reply, usage=answer.usage)

    async def close(self) -> None:
        return None
