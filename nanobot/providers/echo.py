"""The built-in offline provider: it says back what it was told.

It exists so that a fresh install answers without any network or key. The
reply is the user's own text followed by one line per received file, streamed
word by word, with usage counted in words.
"""

from __future__ import annotations

import re
from typing import Any, AsyncIterator

from nanobot.protocol import Usage
from nanobot.providers.base import Completion

_FILE_BLOCK = re.compile(r"\[file: ([^\]\n]*)\]\n.*?\n\[/file\]", re.S)
_IMAGE = re.compile(r"\[image: ([^\]\n]*)\]")


def _words(text: str) -> int:
    return len(text.split())


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


class EchoProvider:
    name = "echo"

    def __init__(self, model: str = "echo") -> None:
        self.model = model

    async def stream(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, incremental: bool = True
    ) -> AsyncIterator[str | Completion]:
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
        reply = echo_reply(_text_of(last_user.get("content")) if last_user else "")
        # Keep the separators so the joined chunks are exactly the reply.
        for piece in re.findall(r"\S+\s*", reply):
            yield piece
        prompt = sum(_words(_text_of(m.get("content"))) for m in messages)
        yield Completion(text=reply, usage=Usage(prompt, _words(reply)))

    async def close(self) -> None:
        return None
