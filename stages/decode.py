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
from nanobot.multipart import MultipartReader



# A chat request holds a few dozen objects and arrays; millions of tiny ones
# ("{},{},...") would cost ~30x the body in memory. Base64 holds neither
# bracket, so counting them is cheap and never refuses a large file.
MAX_JSON_CONTAINERS = 10_000


def _parse_json(body: bytes) -> object:
    if body.count(b"{") + body.count(b"[") > MAX_JSON_CONTAINERS:
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

    async def __call__(self, ctx: RequestContext) -> None:
        content_type = ctx.headers.get("Content-Type", "")
        media = content_type.split(";", 1)[0].strip().lower()
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
