"""The OpenAPI 3.1 document of this server, served at ``GET /openapi.json``.

The document describes exactly what the server accepts and answers with the
given config, which shapes it: the model name, whether a key is required
(``security``, 401s), the size limits, and ``api.clientHistory``. ``tests/test_openapi.py`` keeps it
true: every route of the app must be here (and nothing else), and live
responses, good and bad, are validated against it; ``tests/test_fuzz.py``
runs schemathesis against it.

Adding a route: write a function ``_my_route(spec) -> path item`` (use
:meth:`Spec.ok` for a success and :meth:`Spec.errors` for the error
responses) and list it in :data:`ROUTES` with its flags (public, Origin-checked,
CORS preflight). :func:`document` adds the request-id parameter, the security
requirement and the ``OPTIONS`` preflight operation to every path.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

from nanobot.config import Config
from nanobot.errors import ERROR_TYPES

Json = dict[str, Any]

VERSION = "0.1.0"
REF = "#/components/schemas/"

# --- patterns shared by the request schemas ----------------------------------------------------
# Each mirrors the check in ``stages/validate.py`` (or ``stages/extract_files.py``) exactly, in
# regular-expression syntax that Python and ECMA-262 (JSON Schema) read alike.

# Some character that str.strip() would keep: the text is not empty or only whitespace.
NOT_BLANK = r"\S"
# 1-256 characters without C0 controls or DEL (``validate._CONTROL``).
SESSION_ID_PATTERN = r"^[^\x00-\x1f\x7f]*$"
# ``data:<anything but a comma>;base64,<base64>``; scheme and ``;base64`` are case-insensitive. The
# payload is standard base64 with its padding and at least one byte; whitespace may be folded in
# anywhere (``extract_files._decode_base64`` drops it before decoding).
_B64 = r"[A-Za-z0-9+/]\s*"
DATA_URL_PATTERN = (
    r"^[Dd][Aa][Tt][Aa]:[^,]*;[Bb][Aa][Ss][Ee]64,\s*"
    rf"(?:(?:{_B64}){{4}})*(?:(?:{_B64}){{4}}|(?:{_B64}){{3}}=\s*|(?:{_B64}){{2}}=\s*=\s*)$"
)
# The multipart ``stream`` field, as ``validate._TRUE | validate._FALSE`` after strip().lower().
STREAM_FIELD_PATTERN = (
    r"^\s*(?:[Tt][Rr][Uu][Ee]|1|[Yy][Ee][Ss]|[Oo][Nn]|[Ff][Aa][Ll][Ss][Ee]|0|[Nn][Oo]|[Oo][Ff][Ff])?\s*$"
)
REQUEST_ID_PATTERN = r"^[!-~]{1,128}$"  # 1-128 visible ASCII characters
# A multipart part name: not empty, no control character but tab (Tornado's header rules).
FORM_FIELD_NAME_PATTERN = r"^[^\x00-\x08\x0a-\x1f\x7f]+$"
# Tornado's own cap on parts in one multipart body (``ParseMultipartConfig.max_parts``).
MAX_FORM_PARTS = 100

# Client fields that are accepted and never reach the LLM (the server owns these settings).
IGNORED_OPENAI_FIELDS = (
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "stop", "presence_penalty",
    "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "seed", "user", "tools",
    "tool_choice", "parallel_tool_calls", "response_format", "metadata", "store",
)

# Which statuses each error response component stands for.
ERROR_RESPONSES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "The request is malformed: see `error.param` for the offending field."),
    401: ("Unauthorized", "Missing or wrong API key (`Authorization: Bearer <api.apiKey>`)."),
    403: ("Forbidden", "The request's `Origin` is neither the server's own nor listed in `api.corsOrigins`."),
    404: ("NotFound", "Unknown route (answered whether or not a key was sent)."),
    405: ("MethodNotAllowed", "The route exists but not with this method."),
    413: ("TooLarge", "A file over `api.maxFileBytes` or a body over `api.maxBodyBytes`."),
    415: ("UnsupportedMediaType", "Unsupported file type (decided from its bytes) or request Content-Type."),
    422: ("UnprocessableFile", "A document that cannot be read (corrupt, hostile or too slow); names the file."),
    500: ("ServerError", "An unexpected error; the body never holds a traceback."),
    502: ("UpstreamError", "The LLM provider is unreachable, answered 5xx (or 429 after retries) or garbage."),
    503: ("Overloaded", "Over `api.maxConcurrentRequests`: retry after `Retry-After` seconds."),
    504: ("Timeout", "The request ran past `api.timeout` (waiting for its session included)."),
}


def _ref(name: str) -> Json:
    return {"$ref": REF + name}


class Spec:
    """What the path builders need: the config, and helpers for common pieces."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.model = config.agents.defaults.model
        self.keyed = bool(config.api.api_key)

    def ok(self, description: str, content: Json | None = None, headers: Json | None = None) -> Json:
        response: Json = {"description": description, "headers": {**_request_id_header(), **(headers or {})}}
        if content is not None:
            response["content"] = content
        return response

    def not_modified(self) -> Json:
        """304: every GET answer carries an ``Etag``; a matching ``If-None-Match`` gets no body."""
        return {"description": "Not modified (the client's `If-None-Match` matches the `Etag`).",
                "headers": _request_id_header()}

    def errors(self, *statuses: int, origin: bool = True, auth: bool = True) -> Json:
        """Error responses: the given statuses, plus 401 (keyed route, key set), 403 (Origin checked), 500."""
        wanted = set(statuses) | {500}
        if auth and self.keyed:
            wanted.add(401)
        if origin:
            wanted.add(403)
        return {str(s): {"$ref": f"#/components/responses/{ERROR_RESPONSES[s][0]}"} for s in sorted(wanted)}


# --- paths ----------------------------------------------------------------------------------------------


def _health(spec: Spec) -> Json:
    return {
        "get": {
            "operationId": "health",
            "tags": ["server"],
            "summary": "Liveness check",
            "description": "Never needs the API key and ignores `Origin`.",
            "responses": {
                "200": spec.ok("The server is up.", _json(_ref("Health"))),
                "304": spec.not_modified(),
                **spec.errors(origin=False, auth=False),
            },
        },
        "head": {
            "operationId": "healthHead",
            "tags": ["server"],
            "summary": "Liveness check without a body",
            "responses": {
                "200": {"description": "The server is up.", "headers": _request_id_header()},
                **spec.errors(origin=False, auth=False),
            },
        },
    }


def _models(spec: Spec) -> Json:
    return {
        "get": {
            "operationId": "listModels",
            "tags": ["openai"],
            "summary": "The one configured model",
            "responses": {
                "200": spec.ok("The configured model (`agents.defaults.model`).", _json(_ref("ModelList"))),
                "304": spec.not_modified(),
                **spec.errors(),
            },
        }
    }


def _chat(spec: Spec) -> Json:
    api = spec.config.api
    parameters = []
    if api.client_history == "ignore":
        parameters.append({
            "name": "X-Session-Id",
            "in": "header",
            "required": False,
            "description": "The session, when the body has no `session_id`.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 256, "pattern": SESSION_ID_PATTERN},
        })
    operation: Json = {
        "operationId": "createChatCompletion",
        "tags": ["openai"],
        "summary": "One turn of the agent, on a persistent session",
        "description": (
            "The body carries exactly one user message (text, images, documents); the server keeps the "
            "conversation (`session_id`). The answer is one `chat.completion`, or with `stream: true` an "
            "SSE stream of `chat.completion.chunk` deltas ending with `data: [DONE]`. Failures before the "
            "turn starts are plain HTTP errors; a failure once the stream has started is one "
            "`data: {\"error\": ...}` frame and the stream ends without `[DONE]`. A failed request leaves "
            "the session's history as it was."
        ),
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _ref("ChatCompletionRequest")},
                "multipart/form-data": {
                    "schema": _ref("ChatCompletionForm"),
                    "encoding": {"files": {"contentType": "application/octet-stream"}},
                },
            },
        },
        "responses": {
            "200": spec.ok(
                "The assistant's reply (`application/json`), or its stream (`text/event-stream`, when "
                "`stream` is true). Stream frames are `data: <ChatCompletionChunk>`, then `data: [DONE]`; "
                "`: ping` comments keep a silent stream alive.",
                {
                    "application/json": {"schema": _ref("ChatCompletion")},
                    "text/event-stream": {"schema": _ref("ServerSentEvent")},
                },
                headers={
                    "Cache-Control": {
                        "description": "`no-cache` on streams.", "required": False, "schema": {"type": "string"}
                    },
                    "X-Accel-Buffering": {
                        "description": "`no` on streams: proxies must not buffer them.",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                },
            ),
            **spec.errors(400, 413, 415, 422, 502, 503, 504),
        },
    }
    if parameters:
        operation["parameters"] = parameters
    return {"post": operation}


def _openapi(spec: Spec) -> Json:
    return {
        "get": {
            "operationId": "getOpenApi",
            "tags": ["server"],
            "summary": "This document",
            "responses": {
                "200": spec.ok("The OpenAPI 3.1 document.", _json({"$ref": REF + "OpenApiDocument"})),
                "304": spec.not_modified(),
                **spec.errors(),
            },
        }
    }


def _metrics(spec: Spec) -> Json:
    return {
        "get": {
            "operationId": "getMetrics",
            "tags": ["server"],
            "summary": "Prometheus metrics",
            "responses": {
                "200": spec.ok(
                    "Prometheus text exposition format 0.0.4.",
                    {"text/plain": {"schema": {"type": "string"}}},
                ),
                "304": spec.not_modified(),
                **spec.errors(),
            },
        }
    }


def _page(spec: Spec) -> Json:
    return {
        "get": {
            "operationId": "chatPage",
            "tags": ["page"],
            "summary": "The built-in chat page",
            "description": "Public: it holds no data, and asks for the key when the server needs one.",
            "responses": {
                "200": spec.ok("The page.", {"text/html": {"schema": {"type": "string"}}},
                               headers=_page_headers()),
                "304": spec.not_modified(),
                **spec.errors(origin=False, auth=False),
            },
        }
    }


def _page_asset(spec: Spec) -> Json:
    from nanobot.server.page import STATIC_DIR

    names = sorted(p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file())
    file = {"text/*": {"schema": {"type": "string"}}}
    get: Json = {
        "operationId": "chatPageAsset",
        "tags": ["page"],
        "summary": "A file of the chat page (script, style)",
        "parameters": [{"name": "path", "in": "path", "required": True,
                        "schema": {"enum": names} if names else {"type": "string"},
                        "example": "app.js" if "app.js" in names or not names else names[0]}],
        "responses": {
            "200": spec.ok("The file.", file, headers=_page_headers()),
            "206": spec.ok("The requested byte range of the file (`Range`).", file, headers=_page_headers()),
            "304": spec.not_modified(),
            "404": {"$ref": "#/components/responses/NotFound"},
            "416": {"description": "The requested range is outside the file.", "headers": _request_id_header()},
        },
    }
    head = copy.deepcopy(get)
    head.update(operationId="chatPageAssetHead", summary="The headers of a page file, without it")
    for response in head["responses"].values():
        response.pop("content", None)
    return {"get": get, "head": head}


def _page_headers() -> Json:
    return {
        name: {"required": True, "schema": {"type": "string", "minLength": 1}}
        for name in ("Content-Security-Policy", "X-Content-Type-Options")
    }


@dataclass(frozen=True)
class Route:
    """One route of the app, as documented."""

    path: str  # the OpenAPI path template
    build: Callable[[Spec], Json]  # its operations
    public: bool = False  # no API key needed, even when one is set
    origin_checked: bool = True  # a foreign Origin is refused (403), preflights included
    preflight: bool = True  # OPTIONS answers CORS preflights


# Every route of ``nanobot.server.app.make_app`` (tests/test_openapi.py compares the two).
ROUTES: list[Route] = [
    Route("/health", _health, public=True, origin_checked=False),
    Route("/v1/models", _models),
    Route("/v1/chat/completions", _chat),
    Route("/openapi.json", _openapi),
    Route("/metrics", _metrics),
    Route("/", _page, public=True, origin_checked=False),
    Route("/static/{path}", _page_asset, public=True, origin_checked=False, preflight=False),
]


def _preflight(route: Route) -> Json:
    path, checked = route.path, route.origin_checked
    responses: Json = {
        "204": {
            "description": "Preflight accepted. For an origin listed in `api.corsOrigins` the "
            "`Access-Control-Allow-*` headers grant it.",
            "headers": {
                **_request_id_header(),
                **{
                    name: {"required": False, "schema": {"type": "string"}}
                    for name in (
                        "Access-Control-Allow-Origin",
                        "Access-Control-Allow-Methods",
                        "Access-Control-Allow-Headers",
                        "Access-Control-Max-Age",
                    )
                },
            },
        },
    }
    if checked:
        responses["403"] = {"$ref": "#/components/responses/Forbidden"}
    return {
        "operationId": "preflight" + "".join(p.title() for p in path.replace(".", "/").split("/") if p),
        "tags": ["cors"],
        "summary": "CORS preflight",
        "description": "Never needs the key (browsers send preflights without credentials)."
        + (" Refused (403) for an `Origin` that is neither the server's own nor listed." if checked else ""),
        "security": [],
        "parameters": [
            {"name": "Origin", "in": "header", "required": False, "schema": {"type": "string"}},
            {"name": "Access-Control-Request-Method", "in": "header", "required": False,
             "schema": {"type": "string"}},
            {"name": "Access-Control-Request-Headers", "in": "header", "required": False,
             "schema": {"type": "string"}},
        ],
        "responses": responses,
    }


def document(config: Config) -> dict[str, Any]:
    """The OpenAPI document for a server running with ``config``."""
    spec = Spec(config)
    paths: Json = {}
    for route in ROUTES:
        item = route.build(spec)
        for operation in item.values():
            operation.setdefault("parameters", []).insert(0, {"$ref": "#/components/parameters/RequestId"})
            if route.public and spec.keyed:
                operation["security"] = []
        if route.preflight:
            item["options"] = _preflight(route)
        paths[route.path] = item
    doc: Json = {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "nanobot API",
            "version": VERSION,
            "summary": "A local tool-using agent behind an OpenAI-compatible HTTP API.",
            "description": _DESCRIPTION,
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [
            {"name": "openai", "description": "OpenAI-compatible routes."},
            {"name": "server", "description": "Health, metrics and this document."},
            {"name": "page", "description": "The built-in chat page (public)."},
            {"name": "cors", "description": "Browser preflights."},
        ],
        "paths": paths,
        "components": _components(spec),
    }
    if spec.keyed:
        doc["security"] = [{"bearerAuth": []}]
    return doc


_DESCRIPTION = """\
Every response carries `X-Request-ID` (the client's own, if it sent 1-128 visible ASCII characters).
Every error is `{"error": {"message", "type", "param", "code"}}`; `type` follows the status
(400/405 `invalid_request_error`, 401 `authentication_error`, 403 `permission_error`,
404 `not_found_error`, 413 `request_too_large`, 415 `unsupported_media_type`,
422 `unprocessable_file`, 500 `server_error`, 502 `upstream_error`, 503 `overloaded_error`,
504 `timeout_error`). An unknown route is a 404 (`#/components/responses/NotFound`) with or
without a key; another method on a known route is a 405
(`#/components/responses/MethodNotAllowed`), once the key is checked on routes that need one.
A request whose `Origin` is neither the server's own nor in `api.corsOrigins` is refused (403)
before its body is read, with or without a key. Multipart bodies hold at most 100 parts.
"""


# --- components ---------------------------------------------------------------------------------


def _json(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def _request_id_header() -> Json:
    return {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}


def _error_schema_for(status: int) -> Json:
    return {
        "allOf": [
            _ref("Error"),
            {"properties": {"error": {"properties": {"type": {"const": ERROR_TYPES[status]}}}}},
        ]
    }


def _components(spec: Spec) -> Json:
    api = spec.config.api
    responses: Json = {}
    for status, (name, description) in ERROR_RESPONSES.items():
        headers = _request_id_header()
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
            "content": _json(_error_schema_for(status)),
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
                        "items": _ref("ContentPart"),
                        "contains": substantive_part,
                        "description": "At least one text part with some non-blank text, or a file.",
                    },
                ],
                "description": "Some non-blank text, or a list of parts with some text or a file. Without "
                "text, files get the text \"Please analyze the uploaded file(s).\"",
            },
        },
    }
    if api.client_history == "ignore":
        is_user = {"type": "object", "required": ["role"], "properties": {"role": {"const": "user"}}}
        messages = {
            "type": "array",
            "minItems": 1,
            "contains": is_user,
            "items": {"anyOf": [_ref("UserMessage"), {"not": is_user}]},
            "description": "The conversation as the client has it: only the last `user` message is used "
            "(the server reads no other; send them well-formed all the same), and the server keeps its "
            "own history.",
        }
    else:
        messages = {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": _ref("UserMessage"),
            "description": "Exactly one user message: the server keeps the conversation (see `session_id`).",
        }
    session_id = {
        "type": ["string", "null"],
        "minLength": 1,
        "maxLength": 256,
        "pattern": SESSION_ID_PATTERN,
        "description": "Continues the session `api:<session_id>`; omitted or null: the shared `api:default`.",
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
    form_session_id = {
        "type": "string",
        "maxLength": 256,
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
            "nanobot_tool": {
                "type": "object",
                "required": ["name", "status"],
                "additionalProperties": False,
                "properties": {"name": {"type": "string"}, "status": {"enum": ["started", "finished"]}},
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
                "data": {"type": "array", "minItems": 1, "maxItems": 1, "items": _ref("Model")},
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
        "ContentPart": {"oneOf": [_ref("TextPart"), _ref("ImagePart"), _ref("FilePart")]},
        "UserMessage": user_message,
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
            f"\"Please analyze the uploaded file(s).\". Other text fields are ignored. At most {MAX_FORM_PARTS} "
            "parts in all (400 past it).",
        },
        "Usage": usage,
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
                                "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}},
                            },
                            "finish_reason": {"const": "stop"},
                        },
                    },
                },
                "usage": _ref("Usage"),
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
                            "finish_reason": {"enum": [None, "stop"]},
                        },
                    },
                    "description": "Empty only in the last chunk, the one with `usage`.",
                },
                "usage": {
                    "anyOf": [_ref("Usage"), {"type": "null"}],
                    "description": "Present only with `stream_options.include_usage`: null until the last chunk.",
                },
            },
        },
        "StreamEvent": {
            "anyOf": [_ref("ChatCompletionChunk"), _ref("Error"), {"const": "[DONE]"}],
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
                            "contentSchema": {"anyOf": [_ref("ChatCompletionChunk"), _ref("Error")]},
                        },
                    ]
                },
            },
            "description": "One event of the stream (see StreamEvent for its decoded `data`).",
        },
        "OpenApiDocument": {
            "type": "object",
            "required": ["openapi", "info", "paths"],
            "properties": {"openapi": {"const": "3.1.0"}},
        },
    }
