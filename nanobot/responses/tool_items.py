"""Input items of client function tools: ``function_call`` (replayed calls) and ``function_call_output``.

Each becomes what a Chat Completions conversation holds: an assistant
message's ``tool_calls`` entry, or a ``tool`` message answering one, plus
the item as ``input_items`` lists it. Whether a request may bring them is
the stage's seam (``stages/responses_validate.py``: not yet).
"""

from __future__ import annotations

from typing import Any

from nanobot.client_messages import MAX_TOOL_CALL_ID
from nanobot.errors import InvalidRequest
from nanobot.ids import new_id

KINDS = ("function_call", "function_call_output")


def _call_id(item: dict[str, Any], param: str) -> str:
    call_id = item.get("call_id")
    if not isinstance(call_id, str) or not 1 <= len(call_id) <= MAX_TOOL_CALL_ID:
        raise InvalidRequest(
            f"call_id must be a string of 1 to {MAX_TOOL_CALL_ID} characters.", param=f"{param}.call_id"
        )
    return call_id


def _item_id(item: dict[str, Any], prefix: str) -> str:
    given = item.get("id")
    return given if isinstance(given, str) and given else prefix + new_id()


def function_call(item: dict[str, Any], param: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A replayed call: the ``tool_calls`` entry, and the stored item."""
    call_id = _call_id(item, param)
    name, arguments = item.get("name"), item.get("arguments")
    if not isinstance(name, str) or not name:
        raise InvalidRequest("A function_call item needs a name.", param=f"{param}.name")
    if not isinstance(arguments, str):
        raise InvalidRequest("A function_call item's arguments must be a JSON string.", param=f"{param}.arguments")
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    stored = {
        "id": _item_id(item, "fc_"),
        "type": "function_call",
        "status": "completed",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }
    return call, stored


def function_call_output(item: dict[str, Any], param: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The client's result of a call: the ``tool`` message, and the stored item."""
    call_id = _call_id(item, param)
    output = item.get("output")
    if isinstance(output, list):  # input_text parts
        texts = [p.get("text") for p in output if isinstance(p, dict)]
        if len(texts) != len(output) or not all(isinstance(t, str) for t in texts):
            raise InvalidRequest("output must be a string or a list of input_text parts.", param=f"{param}.output")
        output = "\n".join(t for t in texts if isinstance(t, str))
    if not isinstance(output, str):
        raise InvalidRequest("output must be a string or a list of input_text parts.", param=f"{param}.output")
    message = {"role": "tool", "tool_call_id": call_id, "content": output}
    stored = {
        "id": _item_id(item, "fco_"),
        "type": "function_call_output",
        "status": "completed",
        "call_id": call_id,
        "output": output,
    }
    return message, stored
