"""What the Responses API tests share: strict parsing with the openai SDK's own types, raw SSE reading."""

from __future__ import annotations

from typing import Any

import orjson
import requests
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

RESPONSES = "/v1/responses"
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


def item_texts(page: Any) -> list[str]:
    """The text of each message item of an ``input_items`` page (read as plain data: the SDK's item union is wide)."""
    return [item.model_dump()["content"][0]["text"] for item in page.data]


def strict_response(body: dict[str, Any]) -> Response:
    """``body`` parsed by the SDK's ``Response`` type: any missing or mistyped field fails the test."""
    return Response.model_validate(body, strict=False)


def post(server: Any, body: dict[str, Any], **kwargs: Any) -> requests.Response:
    return requests.post(server.url + RESPONSES, json=body, timeout=60, **kwargs)


def sse_events(raw: bytes, extra: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The events of a raw Responses stream, each frame checked: ``event:`` then ``data:``, LF only.

    ``extra``: this server's own event types asked for (not in the SDK's types).
    """
    assert b"\r" not in raw, "SSE frames end with LF only"
    assert raw.endswith(b"\n\n")
    out = []
    for block in raw[:-2].split(b"\n\n"):
        lines = block.split(b"\n")
        if lines[0].startswith(b":"):  # a ping comment
            assert lines == [b": ping"], lines
            continue
        assert len(lines) == 2 and lines[0].startswith(b"event: ") and lines[1].startswith(b"data: "), block
        data = orjson.loads(lines[1][6:])
        assert data["type"] == lines[0][7:].decode()
        if data["type"] not in extra:
            EVENTS.validate_python(data)  # an unknown event or a wrong field fails here
        out.append(data)
    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    return out


def stream_raw(server: Any, body: dict[str, Any]) -> requests.Response:
    r = requests.post(server.url + RESPONSES, json={**body, "stream": True}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/event-stream")
    return r
