"""Raw HTTP responses of an OpenAI-compatible upstream, as bytes, for ``replay`` cases.

Every builder returns the exact bytes an upstream would write, so a case can
vary one thing (framing, line endings, a header, a field) and keep the rest
of a well-formed answer.
"""

from __future__ import annotations

import gzip
from typing import Any

import orjson

TEXT = "Hello, wörld 🙂 — ünïcode ok."
USAGE = (7, 5)  # prompt_tokens, completion_tokens
LAST_CHUNK = b"0\r\n\r\n"
PING = b": ping\n\n"


def head(status: int = 200, *headers: str, reason: str = "", version: str = "1.1") -> bytes:
    """A response head: status line, headers, blank line."""
    lines = [f"HTTP/{version} {status} {reason or _REASONS.get(status, 'Status')}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


_REASONS = {
    200: "OK",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def chunk(data: bytes, extension: bytes = b"") -> bytes:
    """One chunk of a chunked body (``extension`` is the ``;name=value`` after its size)."""
    return b"%x%s\r\n%s\r\n" % (len(data), extension, data)


def usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def words(text: str) -> list[str]:
    """``text`` cut after each space (joined, the pieces are ``text``)."""
    pieces = text.split(" ")
    return [piece + " " for piece in pieces[:-1]] + [pieces[-1]]


def chat_chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-replay",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "replay",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "usage": None,
        **extra,
    }


def events(
    text: str = TEXT,
    tokens: tuple[int, int] = USAGE,
    *,
    eol: bytes = b"\n",
    multiline: bool = False,
    fail: str | None = None,
    done: bool = True,
    **extra: Any,
) -> list[bytes]:
    """The SSE events of a streamed answer, one ``bytes`` per event.

    ``eol`` ends every line; ``multiline`` spreads each chunk's JSON over
    several ``data:`` lines; ``fail`` replaces everything after the first
    word with an error event; ``extra`` fields go into every chunk.
    """
    chunks = [chat_chunk({"role": "assistant", "content": ""}, **extra)]
    chunks += [chat_chunk({"content": word}, **extra) for word in words(text)]
    chunks += [chat_chunk({}, "stop", **extra), {**chat_chunk({}, **extra), "choices": [], "usage": usage(*tokens)}]
    if fail is not None:
        chunks = [*chunks[:2], {"error": {"message": fail, "type": "server_error", "param": None, "code": None}}]
    option = orjson.OPT_INDENT_2 if multiline else 0
    out = [_event(orjson.dumps(c, option=option), eol) for c in chunks]
    if done and fail is None:
        out.append(_event(b"[DONE]", eol))
    return out


def _event(data: bytes, eol: bytes) -> bytes:
    return b"".join(b"data: " + line + eol for line in data.split(b"\n")) + eol


def completion(text: str = TEXT, tokens: tuple[int, int] = USAGE, **extra: Any) -> bytes:
    """A non-streamed ``chat.completion`` body."""
    message = {"role": "assistant", "content": text}
    return orjson.dumps(
        {
            "id": "chatcmpl-replay",
            "object": "chat.completion",
            "created": 0,
            "model": "replay",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": usage(*tokens),
            **extra,
        }
    )


def sse(
    parts: list[bytes] | None = None,
    *headers: str,
    framing: str = "chunked",
    end: bool = True,
    encoding: str | None = None,
    extension: bytes = b"",
    trailers: tuple[str, ...] = (),
    version: str = "1.1",
) -> bytes:
    """A streamed answer: head and body, ``framing`` "chunked" (one chunk per event), "length" or "close".

    ``end=False`` leaves a chunked body without its terminating chunk;
    ``encoding="gzip"`` compresses the body (then framed in 4 KiB chunks).
    """
    parts = events() if parts is None else parts
    return respond(
        parts,
        "Content-Type: text/event-stream",
        *headers,
        framing=framing,
        end=end,
        encoding=encoding,
        extension=extension,
        trailers=trailers,
        version=version,
    )


def json_answer(
    body: bytes | None = None,
    *headers: str,
    framing: str = "length",
    status: int = 200,
    encoding: str | None = None,
    version: str = "1.1",
) -> bytes:
    """A non-streamed answer (``completion()`` unless ``body`` is given)."""
    body = completion() if body is None else body
    return respond(
        [body],
        "Content-Type: application/json",
        *headers,
        framing=framing,
        status=status,
        encoding=encoding,
        version=version,
    )


def error_answer(status: int, message: str, *headers: str) -> bytes:
    """An OpenAI-style error document with ``status``."""
    body = orjson.dumps({"error": {"message": message, "type": "server_error", "param": None, "code": None}})
    return json_answer(body, *headers, status=status)


def respond(
    parts: list[bytes],
    *headers: str,
    framing: str = "length",
    end: bool = True,
    status: int = 200,
    encoding: str | None = None,
    extension: bytes = b"",
    trailers: tuple[str, ...] = (),
    version: str = "1.1",
) -> bytes:
    """Head and body from ``parts`` (the pieces a chunked body sends as chunks)."""
    if encoding == "gzip":
        packed = gzip.compress(b"".join(parts))
        parts = [packed[i : i + 4096] for i in range(0, len(packed), 4096)]
        headers = (*headers, "Content-Encoding: gzip")
    body = b"".join(parts)
    if framing == "length":
        return head(status, *headers, f"Content-Length: {len(body)}", version=version) + body
    if framing == "close":
        return head(status, *headers, version=version) + body
    framed = b"".join(chunk(part, extension) for part in parts if part)
    tail = b"0\r\n" + b"".join(t.encode() + b"\r\n" for t in trailers) + b"\r\n" if end else b""
    return head(status, *headers, "Transfer-Encoding: chunked", version=version) + framed + tail


def pad_headers(total: int, size: int = 1024) -> tuple[str, ...]:
    """Filler headers adding up to about ``total`` bytes."""
    return tuple(f"X-Pad-{i}: {'a' * size}" for i in range(total // (size + 16)))
