"""validate: the decoded request into one checked turn.

Accepts exactly what section 4 of the design allows and names the offending
field (``param``) of anything else. ``response_format`` reaches the model;
``n`` > 1, ``logprobs`` and the like are refused (``request_options.py``).
Client function tools (``tools``, ``tool_choice``, ``parallel_tool_calls``)
reach the model too (``chat_tools.py``). Other OpenAI fields (temperature,
max_tokens ...) are accepted and ignored: a client library's defaults must
never cause an error, and the server owns those settings.
"""

from __future__ import annotations

from typing import Any

from nanobot.client_messages import read_messages
from nanobot.context import IncomingFile, RequestContext
from nanobot.data_url import parse_data_url
from nanobot.errors import InvalidRequest
from nanobot.request_options import check_refused, check_response_format, structured_output
from nanobot.request_rules import SESSION_ID_FORBIDDEN, SESSION_ID_MAX_CHARS, STREAM_FALSE, STREAM_TRUE
from nanobot.turn import DEFAULT_FILE_PROMPT
from stages.chat_tools import read_tools


def _check_session_id(value: Any, param: str = "session_id") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= SESSION_ID_MAX_CHARS or SESSION_ID_FORBIDDEN.search(value):
        raise InvalidRequest(
            f"session_id must be a string of 1 to {SESSION_ID_MAX_CHARS} printable characters.",
            param=param,
            code="invalid_session_id",
        )
    return value


def _check_model(ctx: RequestContext, value: Any) -> None:
    configured = ctx.services.config.agents.defaults.model
    if value is None or value == "":
        ctx.model = configured
        return
    if not isinstance(value, str):
        raise InvalidRequest("model must be a string.", param="model")
    if value != configured:
        raise InvalidRequest(
            f"The model '{value}' does not exist; this server serves '{configured}'.",
            param="model",
            code="model_not_found",
        )
    ctx.model = value


def _content_parts(content: Any, base: str, ctx: RequestContext) -> None:
    if isinstance(content, str):
        ctx.text = content
        return
    if not isinstance(content, list):
        raise InvalidRequest("content must be a string or a list of parts.", param=base)
    texts = []
    for i, part in enumerate(content):
        param = f"{base}[{i}]"
        if not isinstance(part, dict):
            raise InvalidRequest("Each content part must be an object.", param=param)
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest("A text part needs a string 'text'.", param=f"{param}.text")
            texts.append(text)
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            b64 = parse_data_url(url, f"{param}.image_url.url")
            ctx.files.append(
                IncomingFile(param=f"{param}.image_url.url", filename=None, base64=b64, from_image_part=True)
            )
        elif kind == "file":
            spec = part.get("file")
            if not isinstance(spec, dict):
                raise InvalidRequest("A file part needs a 'file' object.", param=f"{param}.file")
            if "file_data" not in spec:
                raise InvalidRequest(
                    "Only inline files are supported: set file.file_data to a data URL.",
                    param=f"{param}.file.file_data",
                )
            name = spec.get("filename")
            if name is not None and not isinstance(name, str):
                raise InvalidRequest("file.filename must be a string.", param=f"{param}.file.filename")
            b64 = parse_data_url(spec["file_data"], f"{param}.file.file_data")
            ctx.files.append(IncomingFile(param=f"{param}.file.file_data", filename=name, base64=b64))
        else:
            raise InvalidRequest(
                f"Unsupported content part type {kind!r} (use text, image_url or file).", param=f"{param}.type"
            )
    ctx.text = "\n".join(texts)


def _validate_json(ctx: RequestContext, body: dict[str, Any]) -> None:
    api = ctx.services.config.api
    messages: Any = body.get("messages")  # read_messages checks its shape
    found = read_messages(messages, api.client_history, api.client_system)
    ctx.instructions = found.instructions
    ctx.client_history = found.history
    ctx.tool_results = found.results
    if found.turn is not None:
        base = f"messages[{found.turn}]"
        _content_parts(messages[found.turn].get("content"), f"{base}.content", ctx)
        if not ctx.text.strip():
            if not ctx.files:
                raise InvalidRequest("The message has no text and no file.", param=f"{base}.content")
            ctx.text = DEFAULT_FILE_PROMPT
    else:
        ctx.resumes = True
    _check_model(ctx, body.get("model"))
    ctx.session_id = _check_session_id(body.get("session_id"))
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("stream must be a boolean.", param="stream")
    ctx.stream = bool(stream)
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise InvalidRequest("stream_options must be an object.", param="stream_options")
        ctx.include_usage = options.get("include_usage") is True
        ctx.include_tool_events = options.get("include_tool_events") is True
    check_refused(body)
    ctx.client_tools = read_tools(body, lambda: ctx.services.agent.tools.names)
    fmt = body.get("response_format")
    if fmt is not None:
        ctx.response_format = check_response_format(fmt, structured_output(ctx.services.config))


def _field(form: dict[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[-1] if values else None


def _validate_form(ctx: RequestContext, form: dict[str, list[str]]) -> None:
    if "response_format" in form:  # a form's fields are text: a JSON body carries a format
        raise InvalidRequest(
            "response_format is supported in a JSON body only, not in a form.", param="response_format"
        )
    message = _field(form, "message")
    if not ctx.files and not (message and message.strip()):
        raise InvalidRequest("Send a 'message' field, one or more 'files', or both.", param="message")
    ctx.text = message if message and message.strip() else DEFAULT_FILE_PROMPT
    if ctx.services.config.api.client_history == "use":
        ctx.client_history = []  # the request is the whole conversation: one message
    _check_model(ctx, _field(form, "model"))
    ctx.session_id = _check_session_id(_field(form, "session_id") or None)
    stream = (_field(form, "stream") or "").strip().lower()
    if stream not in STREAM_TRUE and stream not in STREAM_FALSE:
        raise InvalidRequest("stream must be true or false.", param="stream")
    ctx.stream = stream in STREAM_TRUE


# What a validate stage of either wire format reads and writes (the turn's fields).
VALIDATE_REQUIRES = ("payload", "form", "files", "headers", "services")
TURN_FIELDS = (
    "model",
    "stream",
    "include_usage",
    "include_tool_events",
    "session_id",
    "instructions",
    "client_history",
    "text",
    "files",
    "response_format",
    "client_tools",
    "resumes",
)


class Validate:
    name = "validate"
    requires = VALIDATE_REQUIRES
    provides = (*TURN_FIELDS, "tool_results")

    async def __call__(self, ctx: RequestContext) -> None:
        if ctx.payload is not None:
            _validate_json(ctx, ctx.payload)
        elif ctx.form is not None:
            _validate_form(ctx, ctx.form)
        else:
            raise InvalidRequest("Empty request.")
        header = ctx.headers.get("X-Session-Id")
        if header is not None:  # checked even when the body's session_id wins
            from_header = _check_session_id(header, "X-Session-Id")
            if ctx.session_id is None:
                ctx.session_id = from_header


stage = Validate()
