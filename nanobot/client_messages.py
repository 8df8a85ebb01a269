"""The client's ``messages`` list: which message is the turn, its instructions, its history.

Real clients send more than one user message: a ``system`` (or ``developer``)
message with their instructions (agent frameworks, ``llm -s``, LiteLLM), and
chat front ends send the whole conversation. ``api.clientSystem`` says what
becomes of the instructions, ``api.clientHistory`` of a conversation. Every
refusal says what the list held and, when it held a conversation, which
setting accepts it. The content of the turn's own user message (parts, files)
is checked by ``stages/validate.py``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from nanobot.client_tools import ClientResult
from nanobot.errors import InvalidRequest

INSTRUCTION_ROLES = ("system", "developer")
ROLES = ("system", "developer", "user", "assistant", "tool")
# The client's instructions ride along on every LLM call of the turn.
MAX_INSTRUCTION_CHARS = 32_768
# A client's conversation ("use"): bounded like any other input.
MAX_HISTORY_MESSAGES = 1000
MAX_HISTORY_CHARS = 2_000_000
MAX_TOOL_CALL_ID = 256

_HINT = (
    ' To send a whole conversation, set api.clientHistory to "ignore" (the server keeps the history) or "use" '
    "(the request's messages are the conversation); to continue one, send the same session_id "
    "(or an X-Session-Id header) with each new user message."
)


@dataclass(slots=True)
class MessageList:
    """What the server takes from ``messages``."""

    turn: int | None  # the index of the user message that is this turn (None: the messages end with tool results)
    instructions: str | None = None  # the client's system/developer text, for this turn only
    history: list[dict[str, Any]] | None = None  # "use": the conversation before the turn
    results: list[ClientResult] | None = None  # server history: the results that resume a paused turn


def _summary(roles: list[str]) -> str:
    counts = Counter(roles)
    parts = ", ".join(f"{n} {role}" for role, n in counts.items())
    return f"{len(roles)} message{'s' if len(roles) != 1 else ''} ({parts})"


def _text_parts(content: Any, param: str, kinds: tuple[str, ...] = ("text",)) -> str:
    """A string, or the text of a list of ``text`` parts (the shapes OpenAI accepts for these roles)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest("content must be a string or a list of text parts.", param=param)
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        value = part.get(kind) if kind in kinds else None
        if not isinstance(value, str):
            raise InvalidRequest(
                f"Each part here must be {' or '.join(repr(k) for k in kinds)} with a string of that name.",
                param=f"{param}[{i}]",
            )
        texts.append(value)
    return "\n".join(texts)


def _roles(messages: list[Any]) -> list[str]:
    """Each message's role; anything else is counted as ``invalid`` (refused where it is read)."""
    roles = []
    for m in messages:
        role = m.get("role") if isinstance(m, dict) else None
        roles.append(role if isinstance(role, str) and role in ROLES else "invalid")
    return roles


def _instructions(messages: list[Any], roles: list[str], mode: str) -> str | None:
    indexes = [i for i, r in enumerate(roles) if r in INSTRUCTION_ROLES]
    if not indexes:
        return None
    if mode == "reject":
        raise InvalidRequest(
            f"messages holds {_summary(roles)}, and this server takes no system or developer messages "
            '(api.clientSystem is "reject"): send only the user message.',
            param=f"messages[{indexes[0]}]",
            code="system_message_not_allowed",
        )
    texts = [_text_parts(messages[i].get("content"), f"messages[{i}].content") for i in indexes]
    text = "\n\n".join(t for t in texts if t.strip())
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise InvalidRequest(
            f"The system and developer messages hold {len(text)} characters; at most {MAX_INSTRUCTION_CHARS} "
            "are accepted.",
            param="messages",
            code="instructions_too_long",
        )
    return text if mode == "append" and text else None


def _check_instructions_first(roles: list[str], turn: int) -> None:
    """Where the server keeps the history, a turn's instructions come before its user message.

    With "use" the list is an OpenAI conversation, where a system message may
    stand anywhere, so this holds for the other two modes only.
    """
    late = next((i for i in range(turn + 1, len(roles)) if roles[i] in INSTRUCTION_ROLES), None)
    if late is not None:
        raise InvalidRequest(
            f"messages holds {_summary(roles)}, and messages[{late}] is a {roles[late]} message after the user "
            f"message (messages[{turn}]): system and developer messages come before the user message.",
            param=f"messages[{late}]",
            code="system_message_after_user",
        )


def read_messages(messages: Any, client_history: str, client_system: str) -> MessageList:
    """Check ``messages`` against the two settings; raise InvalidRequest naming what is wrong."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty list.", param="messages")
    roles = _roles(messages)
    chat = [i for i, r in enumerate(roles) if r not in INSTRUCTION_ROLES]
    # Tool results after the last user message resume a paused turn (server history); with "use",
    # a conversation that ends with them goes on from there.
    last = max((i for i in chat if roles[i] in ("user", "tool")), default=None)
    if last is not None and roles[last] == "tool" and (client_history != "use" or chat[-1] == last):
        return _continuation(messages, roles, chat, client_history, client_system)
    users = [i for i in chat if roles[i] == "user"]
    if not users:
        param = "messages"
        if len(messages) == 1:  # the one message has the wrong role (or is no message at all)
            param = "messages[0].role" if isinstance(messages[0], dict) else "messages[0]"
        raise InvalidRequest(f"messages holds {_summary(roles)} but no user message.", param=param)
    if client_history == "reject" and len(chat) > 1:
        raise InvalidRequest(
            f"messages holds {_summary(roles)}: this server keeps the conversation itself, so a request carries "
            "exactly one user message (after any system or developer messages)." + _HINT,
            param="messages",
            code="client_history_not_allowed",
        )
    instructions = _instructions(messages, roles, client_system)
    if client_history != "use":
        _check_instructions_first(roles, users[-1])
        return MessageList(turn=users[-1], instructions=instructions)
    if chat[-1] != users[-1]:
        raise InvalidRequest(
            f"messages holds {_summary(roles)} and ends with a message of role {roles[chat[-1]]}: with "
            'api.clientHistory "use" the conversation must end with the user message this turn answers.',
            param=f"messages[{chat[-1]}]",
        )
    for i in chat:
        if roles[i] == "invalid":
            raise InvalidRequest(
                "Each message must be an object whose role is system, developer, user, assistant or tool.",
                param=f"messages[{i}]",
            )
    history = ConversationReader().read(messages, chat[:-1])
    return MessageList(turn=users[-1], instructions=instructions, history=history)


def _continuation(
    messages: list[Any], roles: list[str], chat: list[int], client_history: str, client_system: str
) -> MessageList:
    """Messages that end with ``tool`` results: a paused turn's answers, or ("use") the client's tool loop."""
    instructions = _instructions(messages, roles, client_system)
    if client_history == "use":
        for i in chat:
            if roles[i] == "invalid":
                raise InvalidRequest(
                    "Each message must be an object whose role is system, developer, user, assistant or tool.",
                    param=f"messages[{i}]",
                )
        return MessageList(turn=None, instructions=instructions, history=ConversationReader().read(messages, chat))
    users = [i for i in chat if roles[i] == "user"]
    answers = [i for i in chat if roles[i] == "tool" and (not users or i > users[-1])]
    # Echoed assistant messages with the calls may come with them (not read); "ignore" reads nothing else.
    others = [i for i in chat if roles[i] != "tool"]
    if client_history == "reject" and any(roles[i] != "assistant" or not _has_calls(messages[i]) for i in others):
        raise InvalidRequest(
            f"messages holds {_summary(roles)}: to resume a turn waiting for tool results, send only the tool "
            "messages (optionally with the assistant message that has the tool_calls)." + _HINT,
            param="messages",
            code="client_history_not_allowed",
        )
    results = []
    for i in answers:
        m, param = messages[i], f"messages[{i}]"
        call_id = m.get("tool_call_id")
        if not isinstance(call_id, str) or not 1 <= len(call_id) <= MAX_TOOL_CALL_ID:
            raise InvalidRequest("A tool message needs the tool_call_id it answers.", param=f"{param}.tool_call_id")
        text = _text_parts(m.get("content"), f"{param}.content")
        if len(text) > MAX_HISTORY_CHARS:
            raise InvalidRequest(
                f"A tool result holds more than {MAX_HISTORY_CHARS} characters.",
                param=f"{param}.content",
                code="tool_result_too_long",
            )
        results.append(ClientResult(call_id, text, f"{param}.tool_call_id"))
    return MessageList(turn=None, instructions=instructions, results=results)


def _has_calls(message: dict[str, Any]) -> bool:
    return isinstance(message.get("tool_calls"), list)


class ConversationReader:
    """The client's earlier messages, checked and reduced to what an LLM is sent.

    Shapes follow the OpenAI rules an upstream would enforce (every tool call
    answered by a ``tool`` message right after it, no stray results), so a
    malformed conversation is a 400 here rather than an upstream error later.
    Files and images of earlier messages are not read: they become
    ``[file: NAME]`` / ``[image: image]`` placeholders, as in stored history.
    """

    def __init__(self) -> None:
        self.chars = 0
        self.pending: dict[str, str] = {}  # tool call id -> where it was made

    def read(self, messages: list[Any], indexes: list[int]) -> list[dict[str, Any]]:
        if len(indexes) > MAX_HISTORY_MESSAGES:
            raise InvalidRequest(
                f"The conversation holds {len(indexes)} earlier messages; at most {MAX_HISTORY_MESSAGES} are accepted.",
                param="messages",
                code="conversation_too_long",
            )
        out = []
        for i in indexes:
            m, param = messages[i], f"messages[{i}]"
            role = m["role"]
            if role != "tool":
                self._check_answered(param)
            if role == "user":
                out.append({"role": "user", "content": self._count(self._user_text(m.get("content"), param))})
            elif role == "assistant":
                out.append(self._assistant(m, param))
            else:
                out.append(self._tool(m, param))
        self._check_answered(f"messages[{indexes[-1] + 1}]" if indexes else "messages")
        return out

    def _count(self, text: str) -> str:
        self.chars += len(text)
        if self.chars > MAX_HISTORY_CHARS:
            raise InvalidRequest(
                f"The conversation holds more than {MAX_HISTORY_CHARS} characters.",
                param="messages",
                code="conversation_too_long",
            )
        return text

    def _check_answered(self, param: str) -> None:
        if self.pending:
            ids = ", ".join(sorted(self.pending))
            raise InvalidRequest(
                f"The tool calls {ids} ({', '.join(sorted(set(self.pending.values())))}) have no tool message "
                "answering them before this message.",
                param=param,
            )

    @staticmethod
    def _user_text(content: Any, param: str) -> str:
        if isinstance(content, str):
            return content
        if not isinstance(content, list):
            raise InvalidRequest("content must be a string or a list of parts.", param=f"{param}.content")
        texts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "image_url":
                texts.append("[image: image]")
            elif kind == "file" and isinstance(part.get("file"), dict):
                name = part["file"].get("filename")
                texts.append(f"[file: {name if isinstance(name, str) and name else 'file'}]")
            else:
                raise InvalidRequest("Each part must be text, image_url or file.", param=f"{param}.content[{j}]")
        return "\n".join(texts)

    def _assistant(self, m: dict[str, Any], param: str) -> dict[str, Any]:
        content = m.get("content")
        text = None if content is None else _text_parts(content, f"{param}.content", ("text", "refusal"))
        calls = m.get("tool_calls")
        if calls is None or calls == []:
            if text is None:
                raise InvalidRequest("An assistant message needs content or tool_calls.", param=param)
            return {"role": "assistant", "content": self._count(text)}
        if not isinstance(calls, list):
            raise InvalidRequest("tool_calls must be a list.", param=f"{param}.tool_calls")
        out = []
        for j, call in enumerate(calls):
            where = f"{param}.tool_calls[{j}]"
            fn = call.get("function") if isinstance(call, dict) else None
            call_id = call.get("id") if isinstance(call, dict) else None
            if (
                not isinstance(fn, dict)
                or call.get("type", "function") != "function"
                or not isinstance(call_id, str)
                or not 1 <= len(call_id) <= MAX_TOOL_CALL_ID
                or not isinstance(fn.get("name"), str)
                or not fn["name"]
                or not isinstance(fn.get("arguments"), str)
            ):
                raise InvalidRequest(
                    'A tool call is {"id": string, "type": "function", "function": {"name": string, '
                    '"arguments": string}}.',
                    param=where,
                )
            if call_id in self.pending:
                raise InvalidRequest(f"The tool call id {call_id!r} is used twice.", param=f"{where}.id")
            self.pending[call_id] = param
            self._count(fn["name"] + fn["arguments"])
            out.append(
                {"id": call_id, "type": "function", "function": {"name": fn["name"], "arguments": fn["arguments"]}}
            )
        return {"role": "assistant", "content": self._count(text) if text else None, "tool_calls": out}

    def _tool(self, m: dict[str, Any], param: str) -> dict[str, Any]:
        call_id = m.get("tool_call_id")
        if not isinstance(call_id, str) or call_id not in self.pending:
            raise InvalidRequest(
                "A tool message must answer a tool call of the assistant message just before it "
                "(tool_call_id names the call).",
                param=f"{param}.tool_call_id",
            )
        del self.pending[call_id]
        text = _text_parts(m.get("content"), f"{param}.content")
        return {"role": "tool", "tool_call_id": call_id, "content": self._count(text)}
