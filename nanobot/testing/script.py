"""The answer rules of the scripted upstream, as pure functions.

Directives are `#word` tokens in the text of the last user message; the first
rule that applies, in this order, picks the reply:

  #status:NNN    HTTP NNN (400-599) with an OpenAI error body
  #leak          HTTP 401 whose error message quotes the request's headers
  #garbage       200 with a body that is not JSON (or a broken SSE frame)
  #slow:MS       wait MS ms, then go on with the rules below
  #die           role chunk + two content chunks, then the connection drops
  #empty         an empty reply
  #toolloop      always one call: message({"content":"again"})
  last msg tool  "tool result: <content of the last message>"
  #tool:NAME {}  one tool call per directive (arguments: the JSON after NAME)
  #call:NAME {}  the same, but NAME must be among the request's offered `tools`
                 (a client tool reached the model), else HTTP 400
  tool_choice    a named function: one call of it ({} arguments)
  response_format json_schema: the smallest instance of its schema, as JSON
  response_format json_object: {"you_said": "<text>"}
  otherwise      --tokens N words, or "You said: <text>"

Keeping this free of I/O lets the rules be unit-tested and keeps the server
handler a thin encoder of the chosen `Reply`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

# `#tool:NAME` is matched first so that JSON arguments following it (which
# may contain "#die" and the like as plain data) can be masked out before the
# other directives are looked for.
_TOOL_RE = re.compile(r"(?<!\S)#(tool|call):([A-Za-z0-9_.\-]+)")
_FLAG_RE = re.compile(r"(?<!\S)#([a-z]+)(?::(\S*))?(?!\S)")
_WORD_RE = re.compile(r"\S+\s*")
_DECODER = json.JSONDecoder()

TOOLLOOP_CALL_ARGS = '{"content":"again"}'


class ScriptError(ValueError):
    """A request the rules cannot answer (malformed directive or body).

    The server answers it with HTTP 400 so a test author sees the mistake
    instead of a silently different reply.
    """


@dataclass(frozen=True, slots=True)
class ScriptConfig:
    """Server-wide settings that shape the default reply."""

    tokens: int = 0
    interval_ms: float = 0.0
    token_text: str = "tok"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call; `arguments` is JSON text, as OpenAI sends it."""

    name: str
    arguments: str
    offered_only: bool = False  # #call: the request must offer the tool


@dataclass(slots=True)
class Reply:
    """What to answer: an error status, a malformed body, or a completion.

    `chunks` are the content pieces, one per streamed frame; joined they are
    the reply text. `interval` is the pause before each piece (seconds).
    """

    status: int = 200
    leak: bool = False  # the error message quotes the request's headers
    garbage: bool = False
    delay: float = 0.0
    die: bool = False
    chunks: list[str] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    interval: float = 0.0

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def completion_tokens(self) -> int:
        # Chunks are one word each (see `words`); a tool call counts as one.
        return len(self.chunks) + len(self.tool_calls)


def content_text(content: Any) -> str:
    """Text of a message `content`: a string, or the `text` parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def count_prompt_tokens(messages: list[Any]) -> int:
    """Whitespace-separated words over the text contents of all messages."""
    return sum(len(content_text(m.get("content")).split()) for m in messages if isinstance(m, dict))


def words(text: str) -> list[str]:
    """Split text into chunks of one word plus its following whitespace."""
    return _WORD_RE.findall(text)


def plan(body: dict[str, Any], config: ScriptConfig) -> Reply:
    """Choose the reply for a Chat Completions request body (rules in order)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ScriptError("'messages' must be a non-empty list")
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    text = _last_user_text(messages)
    tool_calls, rest = _parse_tool_directives(text)
    flags = _parse_flags(rest)

    if "status" in flags:
        return Reply(status=_int_flag(flags, "status", 400, 599))
    if "leak" in flags:
        return Reply(status=401, leak=True)
    if "garbage" in flags:
        return Reply(garbage=True)
    reply = Reply()
    if "slow" in flags:
        reply.delay = _int_flag(flags, "slow", 0, 3_600_000) / 1000
    if "die" in flags:
        reply.die = True
        _default_reply(reply, text, config)
    elif "empty" in flags:
        pass
    elif "toolloop" in flags:
        reply.tool_calls = [ToolCall("message", TOOLLOOP_CALL_ARGS)]
    elif last.get("role") == "tool":
        reply.chunks = words("tool result: " + content_text(last.get("content")))
    elif tool_calls:
        offered = offered_tools(body)
        for call in tool_calls:
            if call.offered_only and call.name not in offered:
                raise ScriptError(
                    f"#call:{call.name}: the request offered no such tool (offered: {', '.join(offered)})"
                )
        reply.tool_calls = tool_calls
    elif (forced := _forced_tool(body)) is not None:
        reply.tool_calls = [ToolCall(forced, "{}")]
    elif (structured := json_reply(body.get("response_format"), text)) is not None:
        reply.chunks = [structured]
    else:
        _default_reply(reply, text, config)
    return reply


def json_reply(response_format: Any, text: str) -> str | None:
    """The JSON text asked for by a ``response_format``; None for plain text."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return orjson.dumps({"you_said": text}).decode()
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        root = schema if isinstance(schema, dict) else {}
        return orjson.dumps(instance(root, root, text)).decode()
    return None


def instance(schema: dict[str, Any], root: dict[str, Any], text: str, depth: int = 0) -> Any:
    """The smallest value valid against ``schema`` that shows the user's text in its strings.

    Enough of JSON Schema for what client libraries generate from their
    models: objects with required properties, ``$ref`` into ``$defs``,
    ``anyOf``/``oneOf``, ``enum``/``const`` and the scalar types.
    """
    if depth > 20:
        raise ScriptError("response_format schema nests too deep for the scripted upstream")
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for key in ref[2:].split("/"):
            target = target.get(key, {}) if isinstance(target, dict) else {}
        return instance(target, root, text, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options and isinstance(options[0], dict):
            return instance(options[0], root, text, depth + 1)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        found = schema.get("properties")
        properties: dict[str, Any] = found if isinstance(found, dict) else {}
        wanted = schema.get("required")
        required: list[Any] = wanted if isinstance(wanted, list) else list(properties)
        return {
            name: instance(properties.get(name) or {}, root, text, depth + 1)
            for name in required
            if isinstance(name, str)
        }
    return {"string": text, "integer": 0, "number": 0, "boolean": False, "array": [], "null": None}.get(kind, text)


def _default_reply(reply: Reply, text: str, config: ScriptConfig) -> None:
    """Fill in the `--tokens` stream, or the echo of the user's text."""
    if config.tokens > 0:
        # The same string object N times: the server encodes its frame once.
        reply.chunks = [config.token_text + " "] * config.tokens
        reply.interval = config.interval_ms / 1000
    else:
        reply.chunks = words("You said: " + text)


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def offered_tools(body: dict[str, Any]) -> list[str]:
    """The names of the function tools a request offered the model."""
    tools = body.get("tools")
    names = []
    for tool in tools if isinstance(tools, list) else ():
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            names.append(fn["name"])
    return names


def _forced_tool(body: dict[str, Any]) -> str | None:
    choice = body.get("tool_choice")
    fn = choice.get("function") if isinstance(choice, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    return name if isinstance(name, str) else None


def _parse_tool_directives(text: str) -> tuple[list[ToolCall], str]:
    """Extract `#tool:NAME {json}` and `#call:NAME {json}` calls; return them and the text without them."""
    calls: list[ToolCall] = []
    kept: list[str] = []
    pos = 0
    while match := _TOOL_RE.search(text, pos):
        kept.append(text[pos : match.start()])
        name = match.group(2)
        args, pos = _parse_tool_args(text, match.end(), name)
        calls.append(ToolCall(name, orjson.dumps(args).decode(), match.group(1) == "call"))
        kept.append(" ")
    kept.append(text[pos:])
    return calls, "".join(kept)


def _parse_tool_args(text: str, start: int, name: str) -> tuple[dict[str, Any], int]:
    """Parse the JSON object after a tool name; no object means `{}`."""
    pos = start
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if not text.startswith("{", pos):
        return {}, start
    try:
        args, end = _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        raise ScriptError(f"#tool:{name}: arguments are not valid JSON ({exc.msg})") from None
    return args, end


def _parse_flags(text: str) -> dict[str, str | None]:
    """Map each `#word` or `#word:arg` token to its argument (first one wins)."""
    flags: dict[str, str | None] = {}
    for match in _FLAG_RE.finditer(text):
        flags.setdefault(match.group(1), match.group(2))
    return flags


def _int_flag(flags: dict[str, str | None], name: str, low: int, high: int) -> int:
    raw = flags[name]
    if raw is None or not raw.isdigit() or not low <= int(raw) <= high:
        raise ScriptError(f"#{name} needs a number from {low} to {high}, got {raw!r}")
    return int(raw)
