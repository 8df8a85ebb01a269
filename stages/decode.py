"""decode: the raw body into a JSON object or multipart fields and files.

Only ``application/json`` and ``multipart/form-data`` are accepted: the
browser "simple" types ``text/plain`` and form-urlencoded are refused, so a
web page cannot drive the agent with a request that skips CORS preflight.
Large bodies are parsed on a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio

import orjson
from tornado.httputil import HTTPFile, HTTPInputError, parse_body_arguments

from nanobot.context import IncomingFile, RequestContext
from nanobot.errors import InvalidRequest, UnsupportedMediaType

# Below this, parsing in place is cheaper than a thread hand-off.
OFFLOAD_BYTES = 256 * 1024
MAX_MULTIPART_PARTS = 1000


def _parse_json(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc.msg}.", code="invalid_json") from None
    except RecursionError:
        raise InvalidRequest("The request body is nested too deeply.", code="invalid_json") from None


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, list[str]], list[IncomingFile]]:
    if "boundary=" not in content_type:
        raise InvalidRequest("multipart/form-data needs a boundary.", code="invalid_multipart")
    # Count parts before Tornado builds objects for them: a body of thousands
    # of tiny parts is refused in one pass over the bytes.
    boundary = content_type.split("boundary=", 1)[1].split(";", 1)[0].strip().strip('"')
    if body.count(b"--" + boundary.encode("latin-1", "replace")) > MAX_MULTIPART_PARTS + 1:
        raise InvalidRequest(f"Too many multipart parts (at most {MAX_MULTIPART_PARTS}).", code="too_many_parts")
    arguments: dict[str, list[bytes]] = {}
    files: dict[str, list[HTTPFile]] = {}
    try:
        parse_body_arguments(content_type, body, arguments, files)
    except HTTPInputError as exc:
        raise InvalidRequest(f"Malformed multipart body: {exc}", code="invalid_multipart") from None
    fields = {}
    for name, values in arguments.items():
        try:
            fields[name] = [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise InvalidRequest(f"Form field '{name}' is not UTF-8 text.", param=name) from None
    incoming = []
    for name, uploads in files.items():
        if name not in ("files", "file", "files[]"):
            raise InvalidRequest(f"Unexpected file field '{name}' (use 'files').", param=name)
        for i, f in enumerate(uploads):
            incoming.append(IncomingFile(param=f"files[{i}]", filename=f.filename, data=f.body))
    return fields, incoming


class Decode:
    name = "decode"

    async def __call__(self, ctx: RequestContext) -> None:
        content_type = ctx.headers.get("Content-Type", "")
        media = content_type.split(";", 1)[0].strip().lower()
        big = len(ctx.body) > OFFLOAD_BYTES
        if media == "application/json":
            data = await asyncio.to_thread(_parse_json, ctx.body) if big else _parse_json(ctx.body)
            if not isinstance(data, dict):
                raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
            ctx.payload = data
        elif media == "multipart/form-data":
            if big:
                ctx.form, ctx.files = await asyncio.to_thread(_parse_multipart, content_type, ctx.body)
            else:
                ctx.form, ctx.files = _parse_multipart(content_type, ctx.body)
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
