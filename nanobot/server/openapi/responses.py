"""The Responses API in the OpenAPI document: ``/v1/responses`` and the stored responses.

Mirrors ``nanobot/responses/request.py`` (what is accepted) and
``nanobot/responses/protocol.py`` (what is answered). What a schema cannot
say (the last message item is the turn; earlier ``assistant`` items; an
unknown ``previous_response_id``) is in the descriptions.
"""

from __future__ import annotations

from nanobot.client_messages import MAX_HISTORY_MESSAGES, MAX_INSTRUCTION_CHARS
from nanobot.client_tools import MAX_CLIENT_TOOLS
from nanobot.request_rules import SESSION_ID_MAX_CHARS, SESSION_ID_PATTERN
from nanobot.responses.request import MAX_METADATA_KEY, MAX_METADATA_KEYS, MAX_METADATA_VALUE
from nanobot.server.openapi.common import DATA_URL_PATTERN, NOT_BLANK, Json, Spec, json_content, ref
from nanobot.server.openapi.options import response_format
from nanobot.server.openapi.tools import function_properties

_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}, "example": "resp_0"}
_STREAM_HEADERS = {
    name: {"description": text, "required": False, "schema": {"type": "string"}}
    for name, text in (("Cache-Control", "`no-cache` on streams."), ("X-Accel-Buffering", "`no` on streams."))
}


# What a created (JSON) response's id leads to.
_LINKS = {
    name: {"operationId": op, "parameters": {"id": "$response.body#/id"}}
    for name, op in (
        ("GetResponse", "getResponse"),
        ("ListInputItems", "listResponseInputItems"),
        ("DeleteResponse", "deleteResponse"),
    )
}


def create_path(spec: Spec) -> Json:
    return {
        "post": {
            "operationId": "createResponse",
            "tags": ["openai"],
            "summary": "One turn of the agent, in the Responses API's wire format",
            "description": (
                "The same agent, tools, files and limits as chat completions. `input` is the turn's user "
                "message, or a list of message items ending with it (earlier `assistant` items, "
                "`{role: assistant, content: string | [output_text parts]}`, are accepted too). The "
                "context is the chain reached through `previous_response_id` (400 "
                "`previous_response_not_found` for one that is unknown, deleted, expired or was not "
                "stored). The answer is one `response` object, or with `stream: true` an SSE stream of "
                "`event: <type>` + `data: <event>` frames ending with `response.completed` (no `[DONE]`); "
                "a failure once the stream started is `response.failed`. With `store` (the default) the "
                "response is kept for `api.responses.retentionDays`."
            ),
            "parameters": [
                {
                    "name": "X-Session-Id",
                    "in": "header",
                    "required": False,
                    "description": "The session a new chain runs in (tools, workspace, ordering).",
                    "schema": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": SESSION_ID_MAX_CHARS,
                        "pattern": SESSION_ID_PATTERN,
                    },
                }
            ],
            "requestBody": {"required": True, "content": json_content(ref("ResponseRequest"))},
            "responses": {
                "200": spec.ok(
                    "The response (`application/json`), or its events (`text/event-stream`).",
                    {
                        "application/json": {"schema": ref("Response")},
                        "text/event-stream": {"schema": ref("ResponseServerSentEvent")},
                    },
                    headers=_STREAM_HEADERS,
                )
                | {"links": _LINKS},
                **spec.errors(400, 413, 415, 422, 502, 503, 504),
            },
        }
    }


def stored_path(spec: Spec) -> Json:
    return {
        "get": {
            "operationId": "getResponse",
            "tags": ["openai"],
            "summary": "A stored response",
            "parameters": [_ID],
            "responses": {
                "200": spec.ok("The response, as it was answered.", json_content(ref("Response"))),
                "304": spec.not_modified(),
                **spec.errors(404, 503),
            },
        },
        "delete": {
            "operationId": "deleteResponse",
            "tags": ["openai"],
            "summary": "Delete a stored response",
            "description": "It can no longer be retrieved nor continued.",
            "parameters": [_ID],
            "responses": {
                "200": spec.ok("Deleted.", json_content(ref("ResponseDeleted"))),
                **spec.errors(404, 503),
            },
        },
    }


def input_items_path(spec: Spec) -> Json:
    return {
        "get": {
            "operationId": "listResponseInputItems",
            "tags": ["openai"],
            "summary": "The input items of a stored response",
            "parameters": [
                _ID,
                {"name": "order", "in": "query", "required": False, "schema": {"enum": ["asc", "desc"]}},
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                },
                {
                    "name": "after",
                    "in": "query",
                    "required": False,
                    "description": "An item id of this response: the page starts after it (another id: an empty page).",
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "200": spec.ok("A page of items (default: 20, newest first).", json_content(ref("ResponseItemList"))),
                "304": spec.not_modified(),
                **spec.errors(400, 404, 503),
            },
        }
    }


def _text_parts(kind: str) -> Json:
    return {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["type", "text"],
            "properties": {"type": {"const": kind}, "text": {"type": "string"}},
        },
    }


def schemas(spec: Spec) -> Json:
    api = spec.config.api
    data_url = {"type": "string", "pattern": DATA_URL_PATTERN}
    input_part = {
        "oneOf": [
            {
                "type": "object",
                "required": ["type", "text"],
                "properties": {"type": {"const": "input_text"}, "text": {"type": "string"}},
            },
            {
                "type": "object",
                "required": ["type", "image_url"],
                "properties": {
                    "type": {"const": "input_image"},
                    "image_url": data_url,
                    "detail": {"type": ["string", "null"]},
                    "file_id": {"type": "null"},
                },
            },
            {
                "type": "object",
                "required": ["type", "file_data"],
                "properties": {
                    "type": {"const": "input_file"},
                    "file_data": data_url,
                    "filename": {"type": ["string", "null"]},
                    "file_id": {"type": "null"},
                    "file_url": {"type": "null"},
                },
            },
        ]
    }
    substantive = {
        "anyOf": [
            {"required": ["text"], "properties": {"type": {"const": "input_text"}, "text": {"pattern": NOT_BLANK}}},
            {"required": ["type"], "properties": {"type": {"enum": ["input_image", "input_file"]}}},
        ]
    }
    message = {"type": {"const": "message"}, "id": {"type": "string"}}
    user = {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            **message,
            "role": {"const": "user"},
            "content": {
                "oneOf": [
                    {"type": "string", "pattern": NOT_BLANK},
                    {"type": "array", "minItems": 1, "items": input_part, "contains": substantive},
                ]
            },
        },
    }
    items: list[Json] = [user]
    if api.client_system != "reject":
        items.append(
            {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    **message,
                    "role": {"enum": ["system", "developer"]},
                    "content": {"oneOf": [{"type": "string"}, _text_parts("input_text")]},
                },
                "description": "Instructions: added to this turn's (`api.clientSystem`), never part of the chain.",
            }
        )
    nullable_string = {"type": ["string", "null"]}
    request: Json = {
        "type": "object",
        "required": ["input"],
        "additionalProperties": True,
        "description": "Other OpenAI fields are accepted and ignored.",
        "properties": {
            "input": {
                "oneOf": [
                    {"type": "string", "pattern": NOT_BLANK},
                    {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_HISTORY_MESSAGES,
                        "items": {"anyOf": items},
                        "contains": user,
                    },
                ],
                "description": "The turn's text, or message items whose last user message is the turn.",
            },
            "model": {"enum": [spec.model, "", None]},
            "instructions": {
                **nullable_string,
                "maxLength": MAX_INSTRUCTION_CHARS if api.client_system != "reject" else 0,
                "description": "This turn's only (as `api.clientSystem` `append`); never part of the chain.",
            },
            "previous_response_id": {**nullable_string, "description": "The stored response this one continues."},
            "store": {"type": ["boolean", "null"], "description": "false: never retrievable nor continued."},
            "stream": {"type": ["boolean", "null"]},
            "stream_options": {
                "type": ["object", "null"],
                "properties": {
                    "include_tool_events": {
                        "description": "`true`: `nanobot.tool` events while the server's tools run (other values: off)."
                    }
                },
            },
            "background": {"enum": [False, None]},
            "conversation": {"type": "null"},
            "metadata": {
                "type": ["object", "null"],
                "maxProperties": MAX_METADATA_KEYS,
                "propertyNames": {"maxLength": MAX_METADATA_KEY},
                "additionalProperties": {"type": "string", "maxLength": MAX_METADATA_VALUE},
            },
            "tools": {
                "type": ["array", "null"],
                "maxItems": MAX_CLIENT_TOOLS,
                "items": {
                    "type": "object",
                    "required": ["type", "name"],
                    "properties": {"type": {"const": "function"}, **function_properties()},
                },
                "description": "Client function tools, offered beside the agent's own: a call of one ends the "
                "response with `function_call` items; send `function_call_output` items with "
                "`previous_response_id`. Names are unique and none is a server tool's (else 400).",
            },
            "tool_choice": {"anyOf": [{"enum": ["auto", "none", "required", None]}, {"type": "object"}]},
            "parallel_tool_calls": {"type": ["boolean", "null"]},
            "truncation": {"enum": ["auto", "disabled", None]},
            "text": {
                "type": ["object", "null"],
                "properties": {"format": _text_format(spec)},
            },
            "session_id": {
                **nullable_string,
                "minLength": 1,
                "maxLength": SESSION_ID_MAX_CHARS,
                "pattern": SESSION_ID_PATTERN,
            },
            **{
                name: {"description": "Accepted and ignored: the server's config decides."}
                for name in ("temperature", "top_p", "max_output_tokens", "reasoning", "user", "include")
            },
        },
    }
    output_text = {
        "type": "object",
        "required": ["type", "text", "annotations"],
        "properties": {
            "type": {"const": "output_text"},
            "text": {"type": "string"},
            "annotations": {"type": "array", "maxItems": 0},
            "logprobs": {"type": "array"},
        },
    }
    output_message = {
        "type": "object",
        "required": ["id", "type", "status", "role", "content"],
        "properties": {
            "id": {"type": "string", "pattern": "^msg_"},
            "type": {"const": "message"},
            "status": {"enum": ["in_progress", "completed"]},
            "role": {"const": "assistant"},
            "content": {"type": "array", "items": output_text},
        },
    }
    function_call = {
        "type": "object",
        "required": ["id", "type", "status", "call_id", "name", "arguments"],
        "properties": {
            "id": {"type": "string", "pattern": "^fc_"},
            "type": {"const": "function_call"},
            "status": {"enum": ["in_progress", "completed"]},
            "call_id": {"type": "string"},
            "name": {"type": "string"},
            "arguments": {"type": "string"},
        },
        "description": "A client function call the response ended with.",
    }
    response = {
        "type": "object",
        "required": ["id", "object", "created_at", "status", "model", "output", "tools", "tool_choice"],
        "properties": {
            "id": {"type": "string", "pattern": "^resp_"},
            "object": {"const": "response"},
            "created_at": {"type": "integer"},
            "status": {"enum": ["in_progress", "completed", "failed"]},
            "model": {"const": spec.model},
            "output": {"type": "array", "items": {"anyOf": [output_message, function_call]}},
            "error": {
                "anyOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                    },
                ]
            },
            "usage": {
                "anyOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "required": ["input_tokens", "output_tokens", "total_tokens"],
                        "properties": {
                            "input_tokens": {"type": "integer", "minimum": 0},
                            "output_tokens": {"type": "integer", "minimum": 0},
                            "total_tokens": {"type": "integer", "minimum": 0},
                        },
                    },
                ]
            },
            "previous_response_id": nullable_string,
            "instructions": nullable_string,
            "store": {"type": "boolean"},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "description": "Every field the openai SDK's `Response` type has; null where unused.",
    }
    event = {
        "type": "object",
        "required": ["type", "sequence_number"],
        "properties": {
            "type": {
                "enum": [
                    "response.created",
                    "response.in_progress",
                    "response.output_item.added",
                    "response.content_part.added",
                    "response.output_text.delta",
                    "response.output_text.done",
                    "response.content_part.done",
                    "response.output_item.done",
                    "response.function_call_arguments.delta",
                    "response.function_call_arguments.done",
                    "response.completed",
                    "response.failed",
                    "nanobot.tool",
                ]
            },
            "sequence_number": {"type": "integer", "minimum": 0},
            "response": ref("Response"),
        },
        "description": "One event: its `type` is also the frame's `event:` line; `sequence_number` rises by one.",
    }
    return {
        "ResponseRequest": request,
        "Response": response,
        "ResponseStreamEvent": event,
        "ResponseServerSentEvent": {
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "event": {"type": "string", "pattern": "^response\\."},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": ref("ResponseStreamEvent"),
                },
            },
        },
        "ResponseDeleted": {
            "type": "object",
            "required": ["id", "object", "deleted"],
            "additionalProperties": False,
            "properties": {"id": {"type": "string"}, "object": {"const": "response"}, "deleted": {"const": True}},
        },
        "ResponseItemList": {
            "type": "object",
            "required": ["object", "data", "first_id", "last_id", "has_more"],
            "additionalProperties": False,
            "properties": {
                "object": {"const": "list"},
                "data": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "type", "role", "content"],
                        "properties": {"type": {"const": "message"}, "role": {"type": "string"}},
                    },
                },
                "first_id": {"type": ["string", "null"]},
                "last_id": {"type": ["string", "null"]},
                "has_more": {"type": "boolean"},
            },
        },
    }


def _text_format(spec: Spec) -> Json:
    """``text.format``: ``response_format``'s choices in the Responses shape (``json_schema`` fields flat)."""
    chat = response_format(spec.config)
    choices: list[Json] = []
    for choice in chat["anyOf"]:
        kind = choice.get("properties", {}).get("type", {}).get("const")
        if kind == "json_schema":
            inner = choice["properties"]["json_schema"]
            choices.append(
                {
                    "type": "object",
                    "required": ["type", *inner["required"]],
                    "properties": {"type": {"const": "json_schema"}, **inner["properties"]},
                }
            )
        else:
            choices.append(choice)
    return {"anyOf": choices, "description": chat["description"]}
