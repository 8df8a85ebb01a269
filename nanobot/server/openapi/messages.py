"""The ``messages`` field: what each ``api.clientHistory`` / ``api.clientSystem`` setting accepts.

Mirrors ``nanobot/client_messages.py``. What a schema cannot say (the last
message is the turn, no system message after it outside "use", every tool
call answered, the size bounds summed over messages) is in the descriptions.
"""

from __future__ import annotations

from nanobot.client_messages import MAX_HISTORY_CHARS, MAX_HISTORY_MESSAGES, MAX_INSTRUCTION_CHARS
from nanobot.server.openapi.common import Json, Spec, ref
from nanobot.server.openapi.tools import result_messages, resume_messages

_TEXT_PART = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
}


def _role_is(*roles: str) -> Json:
    return {"type": "object", "required": ["role"], "properties": {"role": {"enum": list(roles)}}}


def _text_content(*kinds: str) -> Json:
    parts = [
        {
            "type": "object",
            "required": ["type", kind],
            "properties": {"type": {"const": kind}, kind: {"type": "string"}},
        }
        for kind in kinds
    ]
    return {"oneOf": [{"type": "string"}, {"type": "array", "items": {"anyOf": parts}}]}


def message_schemas(spec: Spec) -> Json:
    """The message schemas this config accepts (``UserMessage`` is defined with the content parts)."""
    api = spec.config.api
    schemas: Json = {}
    if api.client_system != "reject":
        use = "added to this turn's instructions, after the agent's own system prompt (never stored)"
        schemas["InstructionMessage"] = {
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                "role": {"enum": ["system", "developer"]},
                "content": {
                    "oneOf": [
                        {"type": "string", "maxLength": MAX_INSTRUCTION_CHARS},
                        {"type": "array", "items": _TEXT_PART},
                    ]
                },
            },
            "description": f"The client's instructions: {use if api.client_system == 'append' else 'ignored'}. "
            f"At most {MAX_INSTRUCTION_CHARS} characters in all system and developer messages of a request.",
        }
    if api.client_history == "use":
        schemas["HistoryUserMessage"] = {
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                "role": {"const": "user"},
                "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": ref("ContentPart")}]},
            },
            "description": "An earlier user message. Its files and images are not read: the model sees "
            "`[file: NAME]` / `[image: image]` in their place.",
        }
        schemas["AssistantMessage"] = {
            "type": "object",
            "required": ["role"],
            "properties": {
                "role": {"const": "assistant"},
                "content": {"anyOf": [_text_content("text", "refusal"), {"type": "null"}]},
                "tool_calls": {
                    "type": ["array", "null"],
                    "items": {
                        "type": "object",
                        "required": ["id", "function"],
                        "properties": {
                            "id": {"type": "string", "minLength": 1, "maxLength": 256},
                            "type": {"const": "function"},
                            "function": {
                                "type": "object",
                                "required": ["name", "arguments"],
                                "properties": {
                                    "name": {"type": "string", "minLength": 1},
                                    "arguments": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
            "description": "Needs `content` or `tool_calls`; each call must be answered by a `tool` message "
            "right after it.",
        }
        schemas["ToolMessage"] = {
            "type": "object",
            "required": ["role", "tool_call_id", "content"],
            "properties": {
                "role": {"const": "tool"},
                "tool_call_id": {"type": "string", "description": "A call of the assistant message before it."},
                "content": _text_content("text"),
            },
        }
    if api.client_history != "use":
        schemas.update(result_messages())
    return schemas


def messages_field(spec: Spec) -> Json:
    """The schema of ``ChatCompletionRequest.messages``."""
    api = spec.config.api
    instructions = [ref("InstructionMessage")] if api.client_system != "reject" else []
    if api.client_system == "reject":
        system_note = " System and developer messages are refused (`api.clientSystem` is `reject`)."
    elif api.client_history == "use":
        system_note = " System and developer messages may stand anywhere, as in any OpenAI conversation."
    else:
        system_note = (
            " Any number of system or developer messages may come before the user message of the turn; "
            "one after it is a 400 (`system_message_after_user`)."
        )
    if api.client_history == "use":
        return {
            "type": "array",
            "minItems": 1,
            "anyOf": [{"contains": _role_is("user")}, {"contains": ref("ToolMessage")}],
            "items": {"anyOf": [ref("HistoryUserMessage"), *instructions, ref("AssistantMessage"), ref("ToolMessage")]},
            "description": "The conversation (`api.clientHistory` is `use`): the last message other than "
            "system/developer is the user message this turn answers (a `UserMessage`: its files are read), "
            "or the `tool` results of the client's tool calls, which the model then goes on from. "
            "The server neither reads nor writes the session's history for this request. At most "
            f"{MAX_HISTORY_MESSAGES} earlier messages and {MAX_HISTORY_CHARS} characters." + system_note,
        }
    if api.client_history == "ignore":
        return {
            "type": "array",
            "minItems": 1,
            "anyOf": [{"contains": _role_is("user")}, {"contains": ref("ToolResultMessage")}],
            "items": {"anyOf": [ref("UserMessage"), *instructions, {"not": _role_is("user", "system", "developer")}]},
            "description": "The conversation as the client has it: only the last `user` message is used "
            "(the server reads no other; send them well-formed all the same), and the server keeps its "
            "own history. Messages that end with `tool` messages resume the session's paused turn with "
            "those results." + system_note,
        }
    if not instructions:
        turn: Json = {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": ref("UserMessage"),
            "description": "Exactly one user message: the server keeps the conversation (see `session_id`)."
            + system_note,
        }
    else:
        turn = {
            "type": "array",
            "minItems": 1,
            "items": {"anyOf": [ref("UserMessage"), *instructions]},
            "contains": _role_is("user"),
            "minContains": 1,
            "maxContains": 1,
            "description": "Exactly one user message: the server keeps the conversation (see `session_id`)."
            + system_note,
        }
    return {"anyOf": [turn, resume_messages(instructions)]}
