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
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nanobot.config import Config
from nanobot.request_rules import SESSION_ID_MAX_CHARS, SESSION_ID_PATTERN
from nanobot.server.openapi.common import (
    REF,
    VERSION,
    Json,
    Spec,
    json_content,
    ref,
    request_id_header,
)
from nanobot.server.openapi.components import _components
from nanobot.server.openapi.responses import create_path, input_items_path, stored_path
from nanobot.server.static_files import STATIC_DIR

# --- paths ----------------------------------------------------------------------------------------------


def _health(spec: Spec) -> Json:
    return {
        "get": {
            "operationId": "health",
            "tags": ["server"],
            "summary": "Liveness check",
            "description": "Never needs the API key and ignores `Origin`.",
            "responses": {
                "200": spec.ok("The server is up.", json_content(ref("Health"))),
                "304": spec.not_modified(),
                **spec.errors(origin=False, auth=False),
            },
        },
        "head": {
            "operationId": "healthHead",
            "tags": ["server"],
            "summary": "Liveness check without a body",
            "responses": {
                "200": {"description": "The server is up.", "headers": request_id_header()},
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
                "200": spec.ok("The configured model (`agents.defaults.model`).", json_content(ref("ModelList"))),
                "304": spec.not_modified(),
                **spec.errors(),
            },
        }
    }


def _chat(spec: Spec) -> Json:
    parameters = [
        {
            "name": "X-Session-Id",
            "in": "header",
            "required": False,
            "description": "The session, when the body has no `session_id`.",
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": SESSION_ID_MAX_CHARS,
                "pattern": SESSION_ID_PATTERN,
            },
        }
    ]
    operation: Json = {
        "operationId": "createChatCompletion",
        "tags": ["openai"],
        "summary": "One turn of the agent, on a persistent session",
        "description": (
            "The body carries one user message (text, images, documents), with the client's system or "
            "developer messages if it has some; the server keeps the conversation (`session_id`), unless "
            "`api.clientHistory` is `use` (then the request's messages are the conversation). "
            "The answer is one `chat.completion`, or with `stream: true` an "
            "SSE stream of `chat.completion.chunk` deltas ending with `data: [DONE]`. Failures before the "
            "turn starts are plain HTTP errors; a failure once the stream has started is one "
            '`data: {"error": ...}` frame and the stream ends without `[DONE]`. A failed request leaves '
            "the session's history as it was."
        ),
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": ref("ChatCompletionRequest")},
                "multipart/form-data": {
                    "schema": ref("ChatCompletionForm"),
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
                    "application/json": {"schema": ref("ChatCompletion")},
                    "text/event-stream": {"schema": ref("ServerSentEvent")},
                },
                headers={
                    "Cache-Control": {
                        "description": "`no-cache` on streams.",
                        "required": False,
                        "schema": {"type": "string"},
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
    operation["parameters"] = parameters
    return {"post": operation}


def _openapi(spec: Spec) -> Json:
    return {
        "get": {
            "operationId": "getOpenApi",
            "tags": ["server"],
            "summary": "This document",
            "responses": {
                "200": spec.ok("The OpenAPI 3.1 document.", json_content({"$ref": REF + "OpenApiDocument"})),
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
                "200": spec.ok("The page.", {"text/html": {"schema": {"type": "string"}}}, headers=_page_headers()),
                "304": spec.not_modified(),
                **spec.errors(origin=False, auth=False),
            },
        }
    }


def _page_asset(spec: Spec) -> Json:
    names = sorted(p.relative_to(STATIC_DIR).as_posix() for p in STATIC_DIR.rglob("*") if p.is_file())
    file = {"text/*": {"schema": {"type": "string"}}}
    get: Json = {
        "operationId": "chatPageAsset",
        "tags": ["page"],
        "summary": "A file of the chat page (script, style)",
        "parameters": [
            {
                "name": "path",
                "in": "path",
                "required": True,
                "schema": {"enum": names} if names else {"type": "string"},
                "example": "app.js" if "app.js" in names or not names else names[0],
            }
        ],
        "responses": {
            "200": spec.ok("The file.", file, headers=_page_headers()),
            "206": spec.ok("The requested byte range of the file (`Range`).", file, headers=_page_headers()),
            "304": spec.not_modified(),
            "404": {"$ref": "#/components/responses/NotFound"},
            "416": {"description": "The requested range is outside the file.", "headers": request_id_header()},
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
    Route("/v1/responses", create_path),
    Route("/v1/responses/{id}", stored_path),
    Route("/v1/responses/{id}/input_items", input_items_path),
    Route("/openapi.json", _openapi),
    Route("/metrics", _metrics),
    Route("/", _page, public=True, origin_checked=False),
    Route("/static/{path}", _page_asset, public=True, origin_checked=False, preflight=False),
]


def _preflight(route: Route) -> Json:
    path, checked = route.path, route.origin_checked
    names = re.findall(r"\{([^}]+)\}", path)  # a templated path's preflight names its parameters too
    responses: Json = {
        "204": {
            "description": "Preflight accepted. For an origin listed in `api.corsOrigins` the "
            "`Access-Control-Allow-*` headers grant it.",
            "headers": {
                **request_id_header(),
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
        "operationId": "preflight" + "".join(p.strip("{}").title() for p in path.replace(".", "/").split("/") if p),
        "tags": ["cors"],
        "summary": "CORS preflight",
        "description": "Never needs the key (browsers send preflights without credentials)."
        + (" Refused (403) for an `Origin` that is neither the server's own nor listed." if checked else ""),
        "security": [],
        "parameters": [
            *({"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in names),
            {"name": "Origin", "in": "header", "required": False, "schema": {"type": "string"}},
            {"name": "Access-Control-Request-Method", "in": "header", "required": False, "schema": {"type": "string"}},
            {"name": "Access-Control-Request-Headers", "in": "header", "required": False, "schema": {"type": "string"}},
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
(400/405 `invalid_request_error`, 401 `authentication_error`, 403 and 421 `permission_error`,
404 `not_found_error`, 413 `request_too_large`, 415 `unsupported_media_type`,
422 `unprocessable_file`, 500 `server_error`, 502 `upstream_error`, 503 `overloaded_error`,
504 `timeout_error`). An unknown route is a 404 (`#/components/responses/NotFound`) with or
without a key; another method on a known route is a 405
(`#/components/responses/MethodNotAllowed`, with `Allow`), before any key or `Origin` check.
A request whose `Origin` is neither the server's own nor in `api.corsOrigins` is refused (403)
before its body is read, with or without a key. Without a key, a request whose `Host` does not
name the server (loopback names and addresses, `api.host`, `api.allowedHosts`) is refused (421)
first, on every route. Multipart bodies hold at most 100 parts.
A request line and header block over 64 KiB is answered 431 (`invalid_request_error`, code
`headers_too_large`) on any route, and the connection is closed.
"""
