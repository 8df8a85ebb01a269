"""A ``POST /v1/responses`` body, checked and read into one turn.

The wire format's rules only: which item is the turn, its text and files,
the conversation items before it, the instructions and the echoed fields.
Looking up ``previous_response_id`` and the session belong to the stage
(``stages/responses_validate.py``). Every refusal names its ``param``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nanobot.client_messages import MAX_HISTORY_CHARS, MAX_HISTORY_MESSAGES, MAX_INSTRUCTION_CHARS
from nanobot.context import IncomingFile
from nanobot.data_url import parse_data_url
from nanobot.errors import InvalidRequest
from nanobot.responses.protocol import ResponseShape, new_message_id
from nanobot.responses.tool_items import KINDS, function_call, function_call_output
from nanobot.turn import DEFAULT_FILE_PROMPT

INSTRUCTION_ROLES = ("system", "developer")
ROLES = ("user", "system", "developer", "assistant")
MAX_METADATA_KEYS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
MAX_ID_CHARS = 256
TOOL_CHOICES = ("auto", "none", "required")
TRUNCATIONS = ("auto", "disabled")


@dataclass(slots=True)
class FunctionTool:
    """A client function tool of the request (``tools``), as the model would be offered it."""

    name: str
    description: str | None
    parameters: dict[str, Any]
    strict: bool | None


@dataclass(slots=True)
class ResponsesRequest:
    """What the stages need of the request beyond the shared turn fields of the context."""

    shape: ResponseShape
    previous_response_id: str | None = None
    store: bool = True
    items: list[dict[str, Any]] = field(default_factory=list)  # the input items, as listed by input_items
    prefix: list[dict[str, Any]] = field(default_factory=list)  # the items before the turn, as chat messages
    function_tools: list[FunctionTool] = field(default_factory=list)
    tool_items: list[str] = field(default_factory=list)  # where function_call(_output) items are (param)
    resumes: bool = False  # input ends with function_call_output items: no user message, the turn goes on


@dataclass(slots=True)
class Turn:
    """The turn's own user message, read from the last input item."""

    text: str = ""
    files: list[IncomingFile] = field(default_factory=list)
    instructions: str | None = None  # ``instructions`` and the system/developer items, for this turn


def _string(value: Any, param: str, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"{what} must be a string.", param=param)
    return value


class InputReader:
    """Reads ``input`` (a string or a list of items); the last item must be the user message of the turn."""

    def __init__(self, client_system: str) -> None:
        self.client_system = client_system
        self.chars = 0
        self.instructions: list[str] = []

    def read(self, value: Any, request: ResponsesRequest, turn: Turn) -> None:
        if isinstance(value, str):
            if not value.strip():
                raise InvalidRequest("input must be a non-empty string or a non-empty list of items.", param="input")
            turn.text = value
            request.items.append(_stored_message("user", [{"type": "input_text", "text": value}]))
            return
        if not isinstance(value, list) or not value:
            raise InvalidRequest("input must be a non-empty string or a non-empty list of items.", param="input")
        if len(value) > MAX_HISTORY_MESSAGES:
            raise InvalidRequest(
                f"input holds {len(value)} items; at most {MAX_HISTORY_MESSAGES} are accepted.",
                param="input",
                code="conversation_too_long",
            )
        roles = [self._role(item, f"input[{i}]") for i, item in enumerate(value)]
        chat = [i for i, r in enumerate(roles) if r not in INSTRUCTION_ROLES]
        if not chat or roles[chat[-1]] not in ("user", "function_call_output"):
            where = f"input[{chat[-1]}]" if chat else "input"
            raise InvalidRequest(
                "input must end with a user message (the turn this response answers) or with "
                "function_call_output items.",
                param=where,
            )
        last = chat[-1] if roles[chat[-1]] == "user" else -1
        request.resumes = last < 0
        for i, item in enumerate(value):
            param = f"input[{i}]"
            role = roles[i]
            content = item.get("content")
            if role in KINDS:
                request.tool_items.append(param)
                self._tool_item(role, item, param, request)
            elif role in INSTRUCTION_ROLES:
                self._instruction(role, content, f"{param}.content", request)
            elif i == last:
                parts = self._turn(content, f"{param}.content", turn)
                request.items.append(_stored_message("user", parts, item.get("id")))
            elif role == "user":
                text, parts = self._earlier_user(content, f"{param}.content")
                request.prefix.append({"role": "user", "content": self._count(text)})
                request.items.append(_stored_message("user", parts, item.get("id")))
            else:
                text = self._assistant(content, f"{param}.content")
                request.prefix.append({"role": "assistant", "content": self._count(text)})
                request.items.append(_stored_message("assistant", [_output_text(text)], item.get("id")))
        joined = "\n\n".join(t for t in self.instructions if t.strip())
        if len(joined) > MAX_INSTRUCTION_CHARS:
            raise InvalidRequest(
                f"The instructions hold {len(joined)} characters; at most {MAX_INSTRUCTION_CHARS} are accepted.",
                param="input",
                code="instructions_too_long",
            )
        if joined and self.client_system == "append":
            turn.instructions = joined

    @staticmethod
    def _role(item: Any, param: str) -> str:
        if not isinstance(item, dict):
            raise InvalidRequest("Each input item must be an object.", param=param)
        kind = item.get("type", "message")
        if kind in KINDS:
            return str(kind)
        if kind != "message":
            raise InvalidRequest(f"Unsupported input item type {kind!r}: send message items.", param=f"{param}.type")
        if "id" in item and not isinstance(item["id"], str):
            raise InvalidRequest("An item's id must be a string.", param=f"{param}.id")
        role = item.get("role")
        if role not in ROLES:
            raise InvalidRequest(
                "A message item's role must be user, system, developer or assistant.", param=f"{param}.role"
            )
        return str(role)

    def _tool_item(self, kind: str, item: dict[str, Any], param: str, request: ResponsesRequest) -> None:
        """A function call joins the assistant message of the calls just before it; an output is a tool message."""
        if kind == "function_call":
            call, stored = function_call(item, param)
            self._count(call["function"]["arguments"])
            last = request.prefix[-1] if request.prefix else None
            if last is not None and last.get("role") == "assistant" and last.get("tool_calls"):
                last["tool_calls"].append(call)
            else:
                request.prefix.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            message, stored = function_call_output(item, param)
            self._count(message["content"])
            request.prefix.append(message)
        request.items.append(stored)

    def _count(self, text: str) -> str:
        self.chars += len(text)
        if self.chars > MAX_HISTORY_CHARS:
            raise InvalidRequest(
                f"The input holds more than {MAX_HISTORY_CHARS} characters of earlier items.",
                param="input",
                code="conversation_too_long",
            )
        return text

    def _instruction(self, role: str, content: Any, param: str, request: ResponsesRequest) -> None:
        if self.client_system == "reject":
            raise InvalidRequest(
                'This server takes no system or developer messages (api.clientSystem is "reject").',
                param=param.rsplit(".", 1)[0],
                code="system_message_not_allowed",
            )
        text = _texts(content, param, ("input_text", "text"))
        self.instructions.append(text)
        request.items.append(_stored_message(role, [{"type": "input_text", "text": text}]))

    def _turn(self, content: Any, param: str, turn: Turn) -> list[dict[str, Any]]:
        if isinstance(content, str):
            turn.text = content
            parts = [{"type": "input_text", "text": content}]
        else:
            parts = self._parts(content, param, turn)
        if not turn.text.strip():
            if not turn.files:
                raise InvalidRequest("The message has no text and no file.", param=param)
            turn.text = DEFAULT_FILE_PROMPT
        return parts

    def _parts(self, content: Any, param: str, turn: Turn) -> list[dict[str, Any]]:
        if not isinstance(content, list) or not content:
            raise InvalidRequest("content must be a string or a non-empty list of parts.", param=param)
        texts = []
        stored: list[dict[str, Any]] = []
        for j, part in enumerate(content):
            where = f"{param}[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("input_text", "text"):
                texts.append(_string(part.get("text"), f"{where}.text", "An input_text part's text"))
                stored.append({"type": "input_text", "text": texts[-1]})
            elif kind == "input_image":
                if part.get("file_id") is not None:
                    raise InvalidRequest(
                        "Uploaded file ids are not supported: send the image as a data URL in image_url.",
                        param=f"{where}.file_id",
                    )
                url = part.get("image_url")
                b64 = parse_data_url(url, f"{where}.image_url")
                turn.files.append(
                    IncomingFile(param=f"{where}.image_url", filename=None, base64=b64, from_image_part=True)
                )
                stored.append(
                    {"type": "input_image", "image_url": url, "detail": _detail(part.get("detail")), "file_id": None}
                )
            elif kind == "input_file":
                for name in ("file_id", "file_url"):
                    if part.get(name) is not None:
                        raise InvalidRequest(
                            "Only inline files are supported: set file_data to a data URL.", param=f"{where}.{name}"
                        )
                if "file_data" not in part:
                    raise InvalidRequest(
                        "Only inline files are supported: set file_data to a data URL.", param=f"{where}.file_data"
                    )
                filename = part.get("filename")
                if filename is not None and not isinstance(filename, str):
                    raise InvalidRequest("filename must be a string.", param=f"{where}.filename")
                b64 = parse_data_url(part["file_data"], f"{where}.file_data")
                turn.files.append(IncomingFile(param=f"{where}.file_data", filename=filename, base64=b64))
                stored.append({"type": "input_file", "file_data": part["file_data"], "filename": filename})
            else:
                raise InvalidRequest(
                    f"Unsupported content part type {kind!r} (use input_text, input_image or input_file).",
                    param=f"{where}.type",
                )
        turn.text = "\n".join(texts)
        return stored

    def _earlier_user(self, content: Any, param: str) -> tuple[str, list[dict[str, Any]]]:
        """An earlier user message, checked like the turn's: its files are named, not read (as in stored history)."""
        scratch = Turn()
        parts = self._turn(content, param, scratch)
        names = ["[image: image]" if f.from_image_part else f"[file: {f.filename or 'file'}]" for f in scratch.files]
        text = scratch.text if scratch.text != DEFAULT_FILE_PROMPT or not scratch.files else ""
        return "\n".join(t for t in (text, *names) if t), parts

    @staticmethod
    def _assistant(content: Any, param: str) -> str:
        return _texts(content, param, ("output_text", "input_text", "text", "refusal"))


def _texts(content: Any, param: str, kinds: tuple[str, ...]) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest("content must be a string or a list of text parts.", param=param)
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        value = part.get("refusal" if kind == "refusal" else "text") if kind in kinds else None
        if not isinstance(value, str):
            raise InvalidRequest(
                f"Each part here must be one of {', '.join(kinds)} with its text.", param=f"{param}[{j}]"
            )
        texts.append(value)
    return "\n".join(texts)


def _detail(value: Any) -> str:
    return value if value in ("low", "high", "auto", "original") else "auto"


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": []}


def _stored_message(role: str, content: list[dict[str, Any]], item_id: Any = None) -> dict[str, Any]:
    """An input item as ``input_items`` lists it (every item gets an id)."""
    own = item_id if isinstance(item_id, str) and 0 < len(item_id) <= MAX_ID_CHARS else new_message_id()
    return {"id": own, "type": "message", "role": role, "status": "completed", "content": content}


def read_metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_METADATA_KEYS:
        raise InvalidRequest(f"metadata must be an object of at most {MAX_METADATA_KEYS} keys.", param="metadata")
    for key, item in value.items():
        if len(key) > MAX_METADATA_KEY or not isinstance(item, str) or len(item) > MAX_METADATA_VALUE:
            raise InvalidRequest(
                f"metadata keys are at most {MAX_METADATA_KEY} characters and values strings of at most "
                f"{MAX_METADATA_VALUE}.",
                param=f"metadata.{key[:MAX_METADATA_KEY]}",
            )
    return dict(value)


def read_tools(value: Any) -> list[FunctionTool]:
    """``tools``: function tools only (other types, web_search and the like, are OpenAI's hosted ones)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest("tools must be a list.", param="tools")
    tools = []
    for i, tool in enumerate(value):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise InvalidRequest(
                f"Unsupported tool type {kind!r}: only function tools are accepted "
                "(this server's agent brings its own tools).",
                param=f"tools[{i}].type",
            )
        name, params = tool.get("name"), tool.get("parameters")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("A function tool needs a name.", param=f"tools[{i}].name")
        if params is not None and not isinstance(params, dict):
            raise InvalidRequest("A function tool's parameters must be a JSON Schema object.", param=f"tools[{i}]")
        description = tool.get("description")
        strict = tool.get("strict")
        if description is not None and not isinstance(description, str):
            raise InvalidRequest("A function tool's description must be a string.", param=f"tools[{i}].description")
        if strict is not None and not isinstance(strict, bool):
            raise InvalidRequest("A function tool's strict must be a boolean.", param=f"tools[{i}].strict")
        tools.append(
            FunctionTool(
                name,
                description if isinstance(description, str) else None,
                params or {"type": "object", "properties": {}},
                strict if isinstance(strict, bool) else None,
            )
        )
    return tools


def read_tool_choice(value: Any) -> Any:
    if value is None:
        return "auto"
    if value in TOOL_CHOICES or isinstance(value, dict):
        return value
    raise InvalidRequest("tool_choice must be auto, none, required or a tool object.", param="tool_choice")


def read_text_format(value: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``text.format`` as echoed, and as the ``response_format`` the model is sent (None: plain text)."""
    if value is None:
        return {"type": "text"}, None
    if not isinstance(value, dict):
        raise InvalidRequest("text must be an object.", param="text")
    fmt = value.get("format")
    if fmt is None:
        return {"type": "text"}, None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise InvalidRequest(
            "text.format must be an object whose type is text, json_object or json_schema.", param="text.format"
        )
    if fmt["type"] == "text":
        return {"type": "text"}, None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}, {"type": "json_object"}
    spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
    return {"type": "json_schema", **spec}, {"type": "json_schema", "json_schema": spec}
