"""The Chat Completions shapes of client tools: ``tools``, ``tool_choice``, ``parallel_tool_calls``.

Read into the wire-independent objects of ``nanobot/client_tools.py`` (the
checks themselves live there, shared with other APIs); a request without
``tools`` costs three dictionary lookups.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from nanobot.client_tools import ClientTools, client_tool, collect
from nanobot.errors import InvalidRequest


def _forced(choice: Any) -> tuple[str | None, str | None]:
    """``tool_choice`` as (mode, named tool)."""
    if choice is None or isinstance(choice, str):
        return choice, None
    if isinstance(choice, dict) and choice.get("type") == "function":
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if isinstance(name, str) and name:
            return None, name
    raise InvalidRequest(
        'tool_choice must be "auto", "none", "required" or {"type": "function", "function": {"name": ...}}.',
        param="tool_choice",
    )


def read_tools(body: dict[str, Any], server_names: Collection[str]) -> ClientTools | None:
    """The request's client tools (None: it sent none and chose nothing)."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    parallel = body.get("parallel_tool_calls")
    if tools is None and choice is None and parallel is None:
        return None
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("tools must be a list of function tools.", param="tools")
    seen: set[str] = set()
    checked = []
    for i, entry in enumerate(tools or ()):
        where = f"tools[{i}]"
        if not isinstance(entry, dict) or entry.get("type") != "function":
            kind = entry.get("type") if isinstance(entry, dict) else None
            raise InvalidRequest(
                f"{where}: only function tools are supported (type {kind!r}).",
                param="tools",
                code="unsupported_tool_type",
            )
        fn = entry.get("function")
        if not isinstance(fn, dict):
            raise InvalidRequest(f"{where}: a function tool needs a 'function' object.", param="tools")
        tool = client_tool(
            fn.get("name"), fn.get("description"), fn.get("parameters"), fn.get("strict"), where, server_names, seen
        )
        seen.add(tool[0].name)
        checked.append(tool)
    mode, forced = _forced(choice)
    return collect(checked, mode, parallel, forced)
