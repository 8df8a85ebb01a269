"""The OpenAI Responses wire format (``/v1/responses``), kept apart from serving logic.

Builds the ``response`` object, its output items and the streamed events in
the shapes of the openai SDK's ``openai.types.responses`` (tests parse every
one of them with those types). Nothing here knows about requests, stages or
storage: ``stages/responses_encode.py`` drives it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from nanobot.errors import ApiError
from nanobot.ids import new_id
from nanobot.protocol import Usage


def new_response_id() -> str:
    return "resp_" + new_id()


def new_message_id() -> str:
    return "msg_" + new_id()


def usage_object(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str | None, status: str = "completed") -> dict[str, Any]:
    """An assistant output message; ``text`` None: one not started yet (no content part)."""
    content = [] if text is None else [output_text(text)]
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": content}


def new_function_call_id() -> str:
    return "fc_" + new_id()


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    """A client function call the response ends with; the next request answers it (``function_call_output``)."""
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


# Error codes a ``response.error`` may carry (the SDK's ``ResponseError.code``):
# this server's own failures (provider down, timeout) are all ``server_error``.
ERROR_CODE = "server_error"


@dataclass(slots=True)
class ResponseShape:
    """What a response echoes of its request: the same in every event and in storage."""

    model: str
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    metadata: dict[str, str] = field(default_factory=dict)
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    temperature: float | None = None
    max_output_tokens: int | None = None
    truncation: str = "disabled"
    user: str | None = None
    text_format: dict[str, Any] = field(default_factory=lambda: {"type": "text"})


def response_object(
    shape: ResponseShape,
    response_id: str,
    created_at: int,
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None = None,
    error: ApiError | None = None,
    completed_at: int | None = None,
) -> dict[str, Any]:
    """The whole ``response`` object, every field OpenAI sends (``null`` where unused)."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "completed_at": completed_at,
        "error": None if error is None else {"code": ERROR_CODE, "message": error.message},
        "incomplete_details": None,
        "instructions": shape.instructions,
        "max_output_tokens": shape.max_output_tokens,
        "max_tool_calls": None,
        "model": shape.model,
        "output": output,
        "parallel_tool_calls": shape.parallel_tool_calls,
        "previous_response_id": shape.previous_response_id,
        "prompt": None,
        "prompt_cache_key": None,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": None,
        "service_tier": "default",
        "store": shape.store,
        "temperature": shape.temperature,
        "text": {"format": shape.text_format, "verbosity": "medium"},
        "tool_choice": shape.tool_choice,
        "tools": shape.tools,
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": shape.truncation,
        "usage": None if usage is None else usage_object(usage),
        "user": shape.user,
        "metadata": shape.metadata,
    }


def deleted_body(response_id: str) -> bytes:
    return orjson.dumps({"id": response_id, "object": "response", "deleted": True})


def item_list_body(items: list[dict[str, Any]], has_more: bool) -> bytes:
    return orjson.dumps(
        {
            "object": "list",
            "data": items,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None,
            "has_more": has_more,
        }
    )


class EventEncoder:
    """The SSE events of one streamed response: ``event:`` + ``data:`` frames, ``sequence_number`` rising by one.

    A text delta is the hot path: its frame is a prefix and suffix computed
    once per output item around one ``orjson.dumps`` of the text.
    """

    __slots__ = ("_seq", "_delta_head", "_delta_tail")

    def __init__(self) -> None:
        self._seq = 0
        self._delta_head = b""
        self._delta_tail = b""

    def frame(self, kind: str, body: dict[str, Any]) -> bytes:
        payload = orjson.dumps({"type": kind, "sequence_number": self._seq, **body})
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + payload + b"\n\n"

    def lifecycle(self, kind: str, response: bytes) -> bytes:
        """A ``response.*`` lifecycle event around the response already serialised (stored as these bytes too)."""
        seq = self._seq
        self._seq += 1
        head = b'event: %s\ndata: {"type":"%s","sequence_number":%d,"response":' % (kind.encode(), kind.encode(), seq)
        return head + response + b"}\n\n"

    def start_text(self, item_id: str, output_index: int) -> None:
        """Later :meth:`delta` frames belong to this message item's first content part."""
        self._delta_head = (
            b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","item_id":'
            + orjson.dumps(item_id)
            + b',"output_index":%d,"content_index":0,"logprobs":[],"delta":' % output_index
        )
        self._delta_tail = b',"sequence_number":'

    def delta(self, text: str) -> bytes:
        seq = self._seq
        self._seq += 1
        return self._delta_head + orjson.dumps(text) + self._delta_tail + b"%d}\n\n" % seq


def now() -> int:
    return int(time.time())
