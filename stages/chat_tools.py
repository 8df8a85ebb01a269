"""The Chat Completions shapes of client tools: ``tools``, ``tool_choice``, ``parallel_tool_calls``.

Read into the wire-independent objects of ``nanobot/client_tools.py`` (the
checks themselves live there, shared with other APIs). A request without
``tools`` costs three dictionary lookups; an agent sends the same tools with
every request, so a checked set is remembered by its JSON and the next
request with the same tools is one encode and a lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection
from typing import Any

import orjson

from nanobot.client_tools import ClientTools, ToolSet, client_tool, tool_set, with_choice
from nanobot.errors import InvalidRequest

# Checked sets by their JSON: at most this many, each at most this big (a few MB in all).
CACHE_SETS = 256
CACHE_SET_BYTES = 16 * 1024
_checked: OrderedDict[bytes, ToolSet] = OrderedDict()


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


def _check(tools: list[Any], server_names: Collection[str]) -> ToolSet:
    seen: set[str] = set()
    checked = []
    for i, entry in enumerate(tools):
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
    return tool_set(checked)


def _tool_set(tools: list[Any], server_names: Collection[str]) -> ToolSet:
    try:
        key = orjson.dumps(tools)
    except (TypeError, orjson.JSONEncodeError):
        return _check(tools, server_names)  # refused there, with the tool named
    found = _checked.get(key)
    # The server's tools may have changed since (MCP servers come and go): a collision is checked again.
    if found is not None and found.names.isdisjoint(server_names):
        _checked.move_to_end(key)
        return found
    checked = _check(tools, server_names)
    if len(key) <= CACHE_SET_BYTES:
        _checked[key] = checked
        if len(_checked) > CACHE_SETS:
            _checked.popitem(last=False)
    return checked


def read_tools(body: dict[str, Any], server_names: Callable[[], Collection[str]]) -> ClientTools | None:
    """The request's client tools (None: it sent none and chose nothing); ``server_names`` gives the
    server's tool names, asked for only when there are tools to check."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    parallel = body.get("parallel_tool_calls")
    if tools is None and choice is None and parallel is None:
        return None
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("tools must be a list of function tools.", param="tools")
    mode, forced = _forced(choice)
    checked = _tool_set(tools, server_names()) if tools else tool_set([])
    return with_choice(checked, mode, parallel, forced)
