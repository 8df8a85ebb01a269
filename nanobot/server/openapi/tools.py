"""Schemas of client function tools: the request's ``tools`` fields and the calls handed back.

They follow ``nanobot/client_tools.py`` and ``stages/chat_tools.py``. What a
schema cannot say (a name that is a server tool's, the schemas' byte limits)
is in the descriptions.
"""

from __future__ import annotations

from nanobot.client_tools import MAX_CLIENT_TOOLS, MAX_TOOL_BYTES, MAX_TOOLS_BYTES, TOOL_NAME_PATTERN
from nanobot.server.openapi.common import Json, ref


def function_properties() -> dict[str, Json]:
    """A function tool's own fields (nested in ``function`` on chat completions, flat on responses)."""
    return {
        "name": {"type": "string", "pattern": TOOL_NAME_PATTERN},
        "description": {"type": ["string", "null"]},
        "parameters": {"type": ["object", "null"], "description": "A JSON Schema object."},
        "strict": {"type": ["boolean", "null"]},
    }


def request_fields() -> dict[str, Json]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` of ``ChatCompletionRequest``."""
    function = {"type": "object", "required": ["name"], "properties": function_properties()}
    return {
        "tools": {
            "type": ["array", "null"],
            "maxItems": MAX_CLIENT_TOOLS,
            "items": {
                "type": "object",
                "required": ["type", "function"],
                "properties": {"type": {"const": "function"}, "function": function},
            },
            "description": "Function tools that run on the client, offered to the model beside the server's own "
            "tools. A reply that calls one ends the answer with `tool_calls` (`finish_reason: tool_calls`); send "
            "the results as `tool` messages on the same session. Names are unique and none is a server tool's; "
            f"at most {MAX_TOOL_BYTES} bytes per tool and {MAX_TOOLS_BYTES} in all (else 400).",
        },
        "tool_choice": {
            "anyOf": [
                {"enum": ["auto", "none", "required", None]},
                {
                    "type": "object",
                    "required": ["type", "function"],
                    "properties": {
                        "type": {"const": "function"},
                        "function": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {"name": {"type": "string", "minLength": 1}},
                        },
                    },
                },
            ],
            "description": "Sent to the model. `required` or a named tool (one of `tools`) holds for the request's "
            "first model call only.",
        },
        "parallel_tool_calls": {"type": ["boolean", "null"], "description": "Sent to the model."},
    }


def tool_call() -> Json:
    return {
        "type": "object",
        "required": ["id", "type", "function"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "minLength": 1},
            "type": {"const": "function"},
            "function": {
                "type": "object",
                "required": ["name", "arguments"],
                "additionalProperties": False,
                "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
            },
        },
    }


def tool_call_delta() -> Json:
    """One streamed piece of a call: its index, then id/type/name, arguments possibly in fragments."""
    return {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "required": ["index"],
            "additionalProperties": False,
            "properties": {
                "index": {"type": "integer", "minimum": 0},
                "id": {"type": "string"},
                "type": {"const": "function"},
                "function": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
                },
            },
        },
    }


def result_messages() -> dict[str, Json]:
    """The messages that resume a paused turn (server-side history)."""
    return {
        "EchoedToolCalls": {
            "type": "object",
            "required": ["role", "tool_calls"],
            "properties": {"role": {"const": "assistant"}, "tool_calls": {"type": "array"}},
            "description": "The assistant message with the `tool_calls` the server answered (optional, not read).",
        },
        "ToolResultMessage": {
            "type": "object",
            "required": ["role", "tool_call_id", "content"],
            "properties": {
                "role": {"const": "tool"},
                "tool_call_id": {"type": "string", "minLength": 1, "maxLength": 256},
                "content": {
                    "oneOf": [
                        {"type": "string"},
                        {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["type", "text"],
                                "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
                            },
                        },
                    ]
                },
            },
            "description": "The client's result for one pending call (`tool_call_id`).",
        },
    }


def resume_messages(instructions: list[Json]) -> Json:
    """``messages`` that resume the session's paused turn (``api.clientHistory`` reject)."""
    return {
        "type": "array",
        "minItems": 1,
        "items": {"anyOf": [*instructions, ref("EchoedToolCalls"), ref("ToolResultMessage")]},
        "contains": ref("ToolResultMessage"),
        "description": "The results of the session's paused turn: one `tool` message per pending call, "
        "optionally after the echoed assistant message with the `tool_calls` (unknown or missing ids: 400).",
    }
