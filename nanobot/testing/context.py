"""Stages in process: a request context, a response that records, real services.

For tests (ours, and those of anyone writing a custom stage): a stage is one
async call on a :class:`~nanobot.context.RequestContext`, so it can run
without a server. :func:`make_ctx` builds the context a request would have
when it reaches the pipeline; :class:`RecordedResponse` keeps what the stages
wrote; :func:`running_services` starts the real services (the SQLite file,
the extraction pool, the configured provider) on a workspace of the test's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from tornado.httputil import HTTPHeaders

from nanobot.config import Config, parse_config
from nanobot.context import RequestContext
from nanobot.errors import ClientDisconnected
from nanobot.ids import new_id
from nanobot.services import Services


class RecordedResponse:
    """A :class:`~nanobot.context.Response` that keeps what was written to it.

    ``written`` holds the bytes given to ``write`` (the headers "go out" at
    the first ``flush``), ``frames`` the bytes given to ``send_frame``, and
    :meth:`body` both, in the order they were sent. Set
    ``gone`` to make every later frame raise ``ClientDisconnected``, as a
    client that left does.
    """

    def __init__(self) -> None:
        self.status = 200
        self.headers: dict[str, str] = {}
        self.written = bytearray()
        self.frames: list[bytes] = []
        self._sent = bytearray()
        self.flushes = 0
        self.gone = False

    def set_status(self, status_code: int, reason: str | None = None) -> None:
        self.status = status_code

    def set_header(self, name: str, value: Any) -> None:
        self.headers[name] = str(value)

    def write(self, chunk: bytes) -> None:
        self.written += chunk
        self._sent += chunk

    async def flush(self) -> None:
        self.flushes += 1

    def send_frame(self, frame: bytes) -> None:
        if self.gone:
            raise ClientDisconnected()
        self.frames.append(frame)
        self._sent += frame

    def body(self) -> bytes:
        """Everything the client would have read, in order."""
        return bytes(self._sent)

    def json(self) -> Any:
        return orjson.loads(self.written)


def make_ctx(
    services: Services,
    body: bytes | dict[str, Any] = b"",
    *,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
    **fields: Any,
) -> RequestContext:
    """The context of a ``POST /v1/chat/completions`` as the pipeline receives it.

    ``body`` may be a dict (sent as JSON); ``fields`` set any other context
    field directly, for a test that starts at a later stage.
    """
    raw = orjson.dumps(body) if isinstance(body, dict) else body
    http_headers = HTTPHeaders({"Content-Type": content_type, **(headers or {})})
    try:
        now = asyncio.get_running_loop().time()
    except RuntimeError:  # built outside a coroutine: asyncio's loops keep time.monotonic()
        now = time.monotonic()
    limit = services.config.api.timeout if timeout is None else timeout
    ctx = RequestContext(
        services=services,
        method="POST",
        path="/v1/chat/completions",
        headers=http_headers,
        body=raw,
        response=RecordedResponse(),
        request_id=new_id(),
        started=now,
        deadline=now + limit,
    )
    for name, value in fields.items():
        setattr(ctx, name, value)
    return ctx


def recorded(ctx: RequestContext) -> RecordedResponse:
    """``ctx``'s response, as made by :func:`make_ctx`."""
    assert isinstance(ctx.response, RecordedResponse)
    return ctx.response


@asynccontextmanager
async def running_services(workspace: Path, config: dict[str, Any] | None = None) -> AsyncIterator[Services]:
    """Started :class:`Services` for ``config`` (the shipped defaults: the echo provider) on ``workspace``."""
    data: dict[str, Any] = dict(config or {})
    agents = dict(data.get("agents") or {})
    defaults = dict(agents.get("defaults") or {})
    defaults["workspace"] = str(workspace)
    agents["defaults"] = defaults
    data["agents"] = agents
    checked: Config = parse_config(data)
    services = Services.build(checked)
    await services.start()
    try:
        yield services
    finally:
        await services.close()
