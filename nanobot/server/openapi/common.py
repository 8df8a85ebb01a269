"""Shared pieces of the OpenAPI document: patterns, error responses, helpers."""

from __future__ import annotations

from typing import Any

from nanobot.config import Config

Json = dict[str, Any]

VERSION = "0.1.0"
REF = "#/components/schemas/"

# --- patterns shared by the request schemas ----------------------------------------------------
# The session_id and stream rules come from ``nanobot.request_rules``, which validate enforces; the
# others mirror a check in ``nanobot/files/incoming.py`` or Tornado, in regular-expression syntax that
# Python and ECMA-262 (JSON Schema) read alike.

# Some character that str.strip() would keep: the text is not empty or only whitespace.
NOT_BLANK = r"\S"
# ``data:<anything but a comma>;base64,<base64>``; scheme and ``;base64`` are case-insensitive. The
# payload is standard base64 with its padding and at least one byte; whitespace may be folded in
# anywhere (``incoming.decode_base64`` drops it before decoding).
_B64 = r"[A-Za-z0-9+/]\s*"
DATA_URL_PATTERN = (
    r"^[Dd][Aa][Tt][Aa]:[^,]*;[Bb][Aa][Ss][Ee]64,\s*"
    rf"(?:(?:{_B64}){{4}})*(?:(?:{_B64}){{4}}|(?:{_B64}){{3}}=\s*|(?:{_B64}){{2}}=\s*=\s*)$"
)
REQUEST_ID_PATTERN = r"^[!-~]{1,128}$"  # 1-128 visible ASCII characters
# A multipart part name: not empty, no control character but tab (Tornado's header rules).
FORM_FIELD_NAME_PATTERN = r"^[^\x00-\x08\x0a-\x1f\x7f]+$"
# Tornado's own cap on parts in one multipart body (``ParseMultipartConfig.max_parts``).
MAX_FORM_PARTS = 100

# Which statuses each error response component stands for.
ERROR_RESPONSES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "The request is malformed: see `error.param` for the offending field."),
    401: ("Unauthorized", "Missing or wrong API key (`Authorization: Bearer <api.apiKey>`)."),
    403: ("Forbidden", "The request's `Origin` is neither the server's own nor listed in `api.corsOrigins`."),
    404: ("NotFound", "Unknown route (answered whether or not a key was sent)."),
    405: ("MethodNotAllowed", "The route exists but not with this method."),
    421: (
        "MisdirectedRequest",
        "No `api.apiKey` is set and the `Host` does not name this server "
        "(loopback, `api.host`, `api.allowedHosts`): a DNS-rebinding guard.",
    ),
    413: ("TooLarge", "A file over `api.maxFileBytes` or a body over `api.maxBodyBytes`."),
    415: ("UnsupportedMediaType", "Unsupported file type (decided from its bytes) or request Content-Type."),
    422: ("UnprocessableFile", "A document that cannot be read (corrupt, hostile or too slow); names the file."),
    500: ("ServerError", "An unexpected error; the body never holds a traceback."),
    502: ("UpstreamError", "The LLM provider is unreachable, answered 5xx (or 429 after retries) or garbage."),
    503: (
        "Overloaded",
        "Over `api.maxConcurrentRequests` (requests whose body is in) or "
        "`api.maxBodyBytesInFlight` (bodies still arriving): retry after `Retry-After` seconds.",
    ),
    504: ("Timeout", "The request ran past `api.timeout` (waiting for its session included)."),
}


def ref(name: str) -> Json:
    return {"$ref": REF + name}


class Spec:
    """What the path builders need: the config, and helpers for common pieces."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.model = config.agents.defaults.model
        self.keyed = bool(config.api.api_key)

    def ok(self, description: str, content: Json | None = None, headers: Json | None = None) -> Json:
        response: Json = {"description": description, "headers": {**request_id_header(), **(headers or {})}}
        if content is not None:
            response["content"] = content
        return response

    def not_modified(self) -> Json:
        """304: every GET answer carries an ``Etag``; a matching ``If-None-Match`` gets no body."""
        return {
            "description": "Not modified (the client's `If-None-Match` matches the `Etag`).",
            "headers": request_id_header(),
        }

    def errors(self, *statuses: int, origin: bool = True, auth: bool = True) -> Json:
        """Error responses: the given statuses, plus 401 (keyed route, key set), 403 (Origin checked),
        421 (no key: the Host rule applies to every route), 500."""
        wanted = set(statuses) | {500}
        if not self.keyed:
            wanted.add(421)
        if auth and self.keyed:
            wanted.add(401)
        if origin:
            wanted.add(403)
        return {str(s): {"$ref": f"#/components/responses/{ERROR_RESPONSES[s][0]}"} for s in sorted(wanted)}


def json_content(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def request_id_header() -> Json:
    return {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}}
