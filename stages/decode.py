"""decode: the raw body into a JSON object or multipart fields and files.

Only ``application/json`` and ``multipart/form-data`` are accepted: the
browser "simple" types ``text/plain`` and form-urlencoded are refused, so a
web page cannot drive the agent with a request that skips CORS preflight.
Multipart bodies were already parsed while they arrived
(``nanobot.multipart``); a JSON body is parsed here in one piece.
"""

from __future__ import annotations

import orjson

from nanobot.context import RequestContext
from nanobot.errors import InvalidRequest, UnsupportedMediaType
from nanobot.multipart import MultipartReader, media_type

# A chat request holds a few dozen objects and arrays; millions of tiny ones
# ("{},{},...") would cost ~30x the body in memory. Counting brackets is
# cheap; only when there are many is the count redone without those inside
# strings, so a text full of "{" is never refused.
MAX_JSON_CONTAINERS = 10_000
_OPENERS = bytes.maketrans(b"[", b"{")
_NOT_MARKS = bytes(sorted(set(range(256)) - set(b'"{[')))


def count_containers(body: bytes, limit: int = MAX_JSON_CONTAINERS) -> int:
    """The ``{`` and ``[`` of a JSON text outside its strings, counted up to just past ``limit``.

    Whole-buffer C passes (replace, translate, find), never a Python step per
    byte: escaped backslashes and quotes are dropped, then everything but
    quotes and brackets, then adjacent quote pairs (which keeps every
    bracket on its side of every string), so each string is one find and
    each gap between strings holds a bracket: the loop runs at most
    ``limit`` + 2 times.
    """
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    marks = body.translate(_OPENERS, _NOT_MARKS).replace(b'""', b"")
    count = pos = 0
    while (start := marks.find(b'"', pos)) >= 0:
        count += start - pos
        if count > limit:
            return count
        end = marks.find(b'"', start + 1)
        if end < 0:  # an unterminated string: the parser refuses it there
            return count
        pos = end + 1
    return count + len(marks) - pos


def _parse_json(body: bytes) -> object:
    if body.count(b"{") + body.count(b"[") > MAX_JSON_CONTAINERS and count_containers(body) > MAX_JSON_CONTAINERS:
        raise InvalidRequest(
            f"The request body holds more than {MAX_JSON_CONTAINERS} JSON objects and arrays.",
            code="invalid_json",
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc.msg}.", code="invalid_json") from None
    except RecursionError:
        raise InvalidRequest("The request body is nested too deeply.", code="invalid_json") from None


class Decode:
    name = "decode"
    requires = ("headers", "body", "multipart", "media_type", "services")
    provides = ("payload", "form", "files", "body")

    async def __call__(self, ctx: RequestContext) -> None:
        content_type = ctx.headers.get("Content-Type", "")
        # The server parsed it once, before the body arrived; a context built by hand did not.
        media = media_type(content_type) if ctx.media_type is None else ctx.media_type
        if media == "application/json":
            # In place: orjson holds the GIL for the whole parse, so a worker
            # thread would not free the loop (about 1.6 ms per MB of body,
            # bounded by api.maxBodyBytes; the bulk is a file's base64 text).
            data = _parse_json(ctx.body)
            if not isinstance(data, dict):
                raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
            ctx.payload = data
        elif media == "multipart/form-data":
            reader = ctx.multipart
            if reader is None:  # not parsed while arriving (a context built by hand)
                reader = MultipartReader(content_type, ctx.services.config.api.max_file_bytes)
                reader.feed(ctx.body)
            ctx.form, ctx.files = reader.result()
        elif not media:
            raise UnsupportedMediaType(
                "Missing Content-Type: send application/json or multipart/form-data.",
                code="unsupported_content_type",
            )
        else:
            raise UnsupportedMediaType(
                f"Unsupported Content-Type '{media}': send application/json or multipart/form-data.",
                code="unsupported_content_type",
            )
        # The parsed form holds what the stages need; drop the raw bytes early.
        ctx.body = b""


stage = Decode()
