"""The ``components`` section: schemas, shared responses and headers."""

from __future__ import annotations

from nanobot.errors import ERROR_TYPES
from nanobot.request_rules import IGNORED_OPENAI_FIELDS, SESSION_ID_MAX_CHARS, SESSION_ID_PATTERN, STREAM_FIELD_PATTERN
from nanobot.server.openapi.common import (
    DATA_URL_PATTERN,
    ERROR_RESPONSES,
    FORM_FIELD_NAME_PATTERN,
    MAX_FORM_PARTS,
    NOT_BLANK,
    REQUEST_ID_PATTERN,
    Json,
    Spec,
    json_content,
    ref,
    request_id_header,
)
from nanobot.server.openapi.messages import message_schemas, messages_field
from nanobot.server.openapi.options import refused_fields, response_format
from nanobot.server.openapi.responses import schemas as responses_schemas
from nanobot.server.openapi.tools import request_fields, tool_call, tool_call_delta


def _error_schema_for(status: int) -> Json:
    return {
        "allOf": [
            ref("Error"),
            {"properties": {"error": {"properties": {"type": {"const": ERROR_TYPES[status]}}}}},
        ]
    }


def _components(spec: Spec) -> Json:
    api = spec.config.api
    responses: Json = {}
    for status, (name, description) in ERROR_RESPONSES.items():
        headers = request_id_header()
        if status == 503:
            headers["Retry-After"] = {
                "description": "Seconds to wait before retrying.",
                "required": True,
                "schema": {"type": "string", "pattern": r"^[0-9]+$"},
            }
        if status == 413:
            description += f" Limits here: {api.max_file_bytes} bytes per file, {api.max_body_bytes} per body."
        responses[name] = {
            "description": description,
            "headers": headers,
            "content": json_content(_error_schema_for(status)),
        }
    components: Json = {
        "schemas": _schemas(spec),
        "responses": responses,
        "parameters": {
            "RequestId": {
                "name": "X-Request-ID",
                "in": "header",
                "required": False,
                "description": "Echoed in the response when it is 1-128 visible ASCII characters; "
                "otherwise the server makes one up.",
                "schema": {"type": "string"},
            }
        },
        "headers": {
            "X-Request-ID": {
                "description": "The request's id: the client's, or a new one.",
                "required": True,
                "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN},
            }
        },
    }
    if spec.keyed:
        components["securitySchemes"] = {
            "bearerAuth": {
                "type": "http",
                "scheme": "bearer",
                "description": "`Authorization: Bearer <api.apiKey>` on every route but `/health` "
                "(and CORS preflights).",
            }
        }
    return components


def _schemas(spec: Spec) -> Json:
    model = spec.model
    api = spec.config.api
    data_url = {
        "type": "string",
        "pattern": DATA_URL_PATTERN,
        "description": "An inline file: `data:<mime>;base64,<data>`. Remote (http/https) URLs are never "
        f"fetched (400). At most {api.max_file_bytes} bytes once decoded (413). The bytes decide the type: "
        "PNG, JPEG, GIF, WebP images; PDF, DOCX, XLSX, PPTX and UTF-8 text documents (else 415).",
    }
    text_part = {
        "type": "object",
        "required": ["type", "text"],
        "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
    }
    image_part = {
        "type": "object",
        "required": ["type", "image_url"],
        "properties": {
            "type": {"const": "image_url"},
            "image_url": {
                "oneOf": [
                    data_url,
                    {"type": "object", "required": ["url"], "properties": {"url": data_url}},
                ],
                "description": "The data URL, or an object holding it in `url`; the bytes must be an image.",
            },
        },
    }
    file_part = {
        "type": "object",
        "required": ["type", "file"],
        "properties": {
            "type": {"const": "file"},
            "file": {
                "type": "object",
                "required": ["file_data"],
                "properties": {
                    "file_data": data_url,
                    "filename": {"type": ["string", "null"], "description": "Shown to the model as `[file: NAME]`."},
                },
            },
        },
    }
    substantive_part = {
        "anyOf": [
            {"required": ["type", "text"], "properties": {"type": {"const": "text"}, "text": {"pattern": NOT_BLANK}}},
            {"required": ["type"], "properties": {"type": {"enum": ["image_url", "file"]}}},
        ]
    }
    user_message = {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {"const": "user"},
            "content": {
                "oneOf": [
                    {"type": "string", "pattern": NOT_BLANK},
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": ref("ContentPart"),
                        "contains": substantive_part,
                        "description": "At least one text part with some non-blank text, or a file.",
                    },
                ],
                "description": "Some non-blank text, or a list of parts with some text or a file. Without "
                'text, files get the text "Please analyze the uploaded file(s)."',
            },
        },
    }
    messages = messages_field(spec)
    session_id = {
        "type": ["string", "null"],
        "minLength": 1,
        "maxLength": SESSION_ID_MAX_CHARS,
        "pattern": SESSION_ID_PATTERN,
        "description": "Continues the session `api:<session_id>`; omitted or null: the `X-Session-Id` header, "
        "else the shared `api:default`.",
    }
    request_properties: Json = {
        "messages": messages,
        "model": {
            "enum": [model, "", None],
            "description": f"Omitted, null, empty, or exactly `{model}` (else 400 `model_not_found`).",
        },
        "session_id": session_id,
        "stream": {"type": ["boolean", "null"], "description": "true: answer as an SSE stream."},
        "stream_options": {
            "type": ["object", "null"],
            "properties": {
                "include_usage": {"description": "`true`: a last chunk with `usage` (other values: off)."},
                "include_tool_events": {
                    "description": "`true`: `nanobot_tool` deltas while tools run (other values: off)."
                },
            },
        },
    }
    for name in IGNORED_OPENAI_FIELDS:
        request_properties[name] = {"description": "Accepted and ignored: the server's config decides."}
    request_properties.update(request_fields())
    request_properties["response_format"] = response_format(spec.config)
    request_properties.update(refused_fields())
    form_session_id = {
        "type": "string",
        "maxLength": SESSION_ID_MAX_CHARS,
        "pattern": SESSION_ID_PATTERN,
        "description": "As `session_id` in JSON; empty means omitted.",
    }
    usage = {
        "type": "object",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "additionalProperties": False,
        "properties": {
            "prompt_tokens": {"type": "integer", "minimum": 0},
            "completion_tokens": {"type": "integer", "minimum": 0},
            "total_tokens": {"type": "integer", "minimum": 0},
        },
        "description": "Summed over every LLM call of the turn.",
    }
    completion_id = {"type": "string", "pattern": "^chatcmpl-[0-9a-f]+$"}
    delta = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "role": {"const": "assistant"},
            "content": {"type": "string"},
            "tool_calls": tool_call_delta(),
            "nanobot_tool": {
                "type": "object",
                "required": ["name", "status", "id"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "status": {"enum": ["started", "finished"]},
                    "id": {"type": "string", "description": "The tool call's id."},
                    "ok": {"type": "boolean", "description": "When finished: false for an error result."},
                },
                "description": "Only with `stream_options.include_tool_events`.",
            },
        },
    }
    return {
        "Health": {
            "type": "object",
            "required": ["status"],
            "additionalProperties": False,
            "properties": {"status": {"const": "ok"}},
        },
        "Model": {
            "type": "object",
            "required": ["id", "object", "created", "owned_by"],
            "additionalProperties": False,
            "properties": {
                "id": {"const": model},
                "object": {"const": "model"},
                "created": {"type": "integer"},
                "owned_by": {"const": "nanobot"},
            },
        },
        "ModelList": {
            "type": "object",
            "required": ["object", "data"],
            "additionalProperties": False,
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "minItems": 1, "maxItems": 1, "items": ref("Model")},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "param", "code"],
                    "additionalProperties": False,
                    "properties": {
                        "message": {"type": "string", "minLength": 1},
                        "type": {"enum": sorted(set(ERROR_TYPES.values()))},
                        "param": {
                            "type": ["string", "null"],
                            "description": "The offending field, e.g. `messages[0].content[1].image_url.url`.",
                        },
                        "code": {
                            "type": ["string", "null"],
                            "pattern": "^[a-z][a-z0-9_]*$",
                            "description": "A short snake_case code (`model_not_found`, `file_too_large`, ...).",
                        },
                    },
                }
            },
        },
        "TextPart": text_part,
        "ImagePart": image_part,
        "FilePart": file_part,
        "ContentPart": {"oneOf": [ref("TextPart"), ref("ImagePart"), ref("FilePart")]},
        "UserMessage": user_message,
        **message_schemas(spec),
        "ChatCompletionRequest": {
            "type": "object",
            "required": ["messages"],
            "properties": request_properties,
            "additionalProperties": True,
            "description": "Other OpenAI fields are accepted and ignored.",
        },
        "ChatCompletionForm": {
            "type": "object",
            "properties": {
                "message": {"type": "string", "description": "The user's text."},
                "session_id": form_session_id,
                "model": {"enum": [model, ""], "description": f"Empty or exactly `{model}`."},
                "stream": {
                    "type": "string",
                    "pattern": STREAM_FIELD_PATTERN,
                    "description": "true/1/yes/on or false/0/no/off (any case); empty: false.",
                },
                "response_format": False,  # refused (400): a format goes in a JSON body
                "files": {
                    "type": "array",
                    "items": {
                        "type": "string",
                        "format": "binary",
                        "contentMediaType": "application/octet-stream",
                        "minLength": 1,
                    },
                    "description": "Files (parts with a filename; not empty). A file part under another name "
                    "is refused.",
                },
            },
            # Tornado refuses a part whose name is empty or holds a control character.
            "propertyNames": {"pattern": FORM_FIELD_NAME_PATTERN},
            "additionalProperties": {"type": "string"},
            "anyOf": [
                {"required": ["message"], "properties": {"message": {"pattern": NOT_BLANK}}},
                {"required": ["files"], "properties": {"files": {"minItems": 1}}},
            ],
            "description": "A `message` with some non-blank text, or `files`, or both; without a message, "
            f'"Please analyze the uploaded file(s).". Other text fields are ignored. At most {MAX_FORM_PARTS} '
            "parts in all (400 past it).",
        },
        "Usage": usage,
        "ToolCall": tool_call(),
        "ChatCompletion": {
            "type": "object",
            "required": ["id", "object", "created", "model", "choices", "usage"],
            "additionalProperties": False,
            "properties": {
                "id": completion_id,
                "object": {"const": "chat.completion"},
                "created": {"type": "integer"},
                "model": {"const": model},
                "choices": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["index", "message", "finish_reason"],
                        "additionalProperties": False,
                        "properties": {
                            "index": {"const": 0},
                            "message": {
                                "type": "object",
                                "required": ["role", "content"],
                                "additionalProperties": False,
                                "properties": {
                                    "role": {"const": "assistant"},
                                    "content": {"type": ["string", "null"]},
                                    "tool_calls": {"type": "array", "minItems": 1, "items": ref("ToolCall")},
                                },
                            },
                            "finish_reason": {
                                "enum": ["stop", "tool_calls"],
                                "description": "`tool_calls`: the turn paused on calls of the client's tools.",
                            },
                        },
                    },
                },
                "usage": ref("Usage"),
            },
        },
        "ChatCompletionChunk": {
            "type": "object",
            "required": ["id", "object", "created", "model", "choices"],
            "additionalProperties": False,
            "properties": {
                "id": completion_id,
                "object": {"const": "chat.completion.chunk"},
                "created": {"type": "integer"},
                "model": {"const": model},
                "choices": {
                    "type": "array",
                    "maxItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["index", "delta", "finish_reason"],
                        "additionalProperties": False,
                        "properties": {
                            "index": {"const": 0},
                            "delta": delta,
                            "finish_reason": {"enum": [None, "stop", "tool_calls"]},
                        },
                    },
                    "description": "Empty only in the last chunk, the one with `usage`.",
                },
                "usage": {
                    "anyOf": [ref("Usage"), {"type": "null"}],
                    "description": "Present only with `stream_options.include_usage`: null until the last chunk.",
                },
            },
        },
        "StreamEvent": {
            "anyOf": [ref("ChatCompletionChunk"), ref("Error"), {"const": "[DONE]"}],
            "description": "The payload of one `data:` line: a chunk, an error (then the stream ends without "
            "[DONE]), or the final `[DONE]`.",
        },
        "ServerSentEvent": {
            "type": "object",
            "required": ["data"],
            "properties": {
                "event": {"const": "message"},
                "data": {
                    "anyOf": [
                        {"const": "[DONE]"},
                        {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {"anyOf": [ref("ChatCompletionChunk"), ref("Error")]},
                        },
                    ]
                },
            },
            "description": "One event of the stream (see StreamEvent for its decoded `data`).",
        },
        **responses_schemas(spec),
        "OpenApiDocument": {
            "type": "object",
            "required": ["openapi", "info", "paths"],
            "properties": {"openapi": {"const": "3.1.0"}},
        },
    }
