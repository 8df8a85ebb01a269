"""The history window bounded by size: what is sent, never what is kept.

``maxHistoryMessages`` bounds the window by count; ``maxHistoryChars`` bounds
it by characters too, so one huge message does not ride along on every later
turn. The newest messages are kept first; the first one that does not fit is
cut to what is left of the budget, with a marker saying how much was left out
(only a plain user or assistant message: a tool call's arguments or a tool
result cut in half would mean something else). The window then never starts
with a tool result, so a call is never sent without its results.

The session stores know each message's JSON size, which bounds its
characters from above: :func:`bound_sized` lets them skip counting on the
common turn, a window that fits.
"""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]

# Below this many characters left, an older message is dropped rather than
# cut to a stub that would say nothing.
MIN_CUT = 1000


def trim_window(messages: list[Message]) -> list[Message]:
    """Move the window forward so it never starts inside a tool exchange.

    A window that starts with ``tool`` results (their assistant call cut off)
    is invalid for every OpenAI-compatible API.
    """
    start = 0
    while start < len(messages) and messages[start].get("role") == "tool":
        start += 1
    return messages[start:] if start else messages


def message_chars(message: Message) -> int:
    """The characters of a message's text: its content and any tool call's name and arguments."""
    content = message.get("content")
    if isinstance(content, str):
        size = len(content)
    elif isinstance(content, list):
        size = sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    else:
        size = 0
    calls = message.get("tool_calls")
    if calls:
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                size += len(function.get("name") or "") + len(function.get("arguments") or "")
    return size


def cut_text(text: str, keep: int) -> str:
    """``text`` as its first and last characters, ``keep`` in all, and a marker for the middle."""
    head = keep // 2
    tail = keep - head
    left_out = len(text) - head - tail
    end = text[len(text) - tail :] if tail else ""
    return f"{text[:head]}\n[... {left_out} characters cut ...]\n{end}"


def _cuttable(message: Message) -> bool:
    return (
        message.get("role") in ("user", "assistant")
        and isinstance(message.get("content"), str)
        and not message.get("tool_calls")
    )


def _total(messages: list[Message]) -> int:
    """``message_chars`` summed, in one loop: this runs on every turn."""
    total = 0
    for m in messages:
        content = m.get("content")
        if type(content) is str and "tool_calls" not in m:
            total += len(content)
        else:
            total += message_chars(m)
    return total


def bound_chars(messages: list[Message], budget: int) -> list[Message]:
    """The newest messages of ``messages`` within ``budget`` characters (the list itself when all fit)."""
    if _total(messages) <= budget:
        return messages  # the common case: no copy
    total = 0
    index = len(messages) - 1
    while index >= 0:
        size = message_chars(messages[index])
        if total + size > budget:
            break
        total += size
        index -= 1
    kept = messages[index + 1 :]
    older = messages[index]
    left = budget - total
    if _cuttable(older) and (left >= MIN_CUT or not kept):
        # A copy: the stored (and cached) message stays whole.
        kept = [{**older, "content": cut_text(older["content"], max(left, 0))}, *kept]
    return trim_window(kept)


def bound_sized(window: list[Message], sizes: list[int], budget: int | None) -> list[Message]:
    """``bound_chars(window, budget)`` (``budget`` None: ``window``), not counted when ``sizes`` say it fits.

    ``sizes`` are the JSON sizes in bytes of the messages ``window`` ends with
    (a store's window: a suffix of its rows, ``sizes`` one per row), so the
    last ``len(window)`` of them are exactly the returned messages' (more of
    them, from further back, would still be an upper bound: none is negative).

    A message's JSON has at least as many bytes as ``message_chars`` counts
    characters: what it counts are ``len`` of values inside that JSON, apart
    from one another (the content; each text part's text; each call's name
    and arguments), and a JSON value is at least as long as ``len`` of it: a
    string is its quotes and at least one UTF-8 byte per character (an
    escape is longer), a list or object of n items is its brackets and at
    least a byte per item. Messages are JSON values: parsed from their
    stored JSON, or (appended in this process) what that JSON was made of.
    So when the sizes add up to at most ``budget``, every message fits and
    ``bound_chars`` would return ``window`` itself. (A number where
    ``message_chars`` expects text, which ``len`` refuses, raises there and
    is not seen here.)
    """
    if budget is None:
        return window
    if sum(sizes[len(sizes) - len(window) :]) <= budget:
        return window  # the common case: no character counted
    return bound_chars(window, budget)
