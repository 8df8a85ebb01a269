"""Client function tools on /v1/responses (DESIGN sections 10 and 11), with the real openai SDK.

The same core as Chat Completions: the model is offered the client's tools
beside the server's, a call of one ends the response with a
``function_call`` item, and the next request brings the
``function_call_output`` with ``previous_response_id``.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from common import sdk
from servers import ServerProcess, upstream_config

pytestmark = pytest.mark.timeout(120)

LOOKUP: Any = {
    "type": "function",
    "name": "lookup",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASK = '#call:lookup {"city": "Oslo"} weather?'


@pytest.fixture(scope="module")
def server(upstream):
    with ServerProcess(upstream_config(upstream.url)) as s:
        yield s


def test_a_call_ends_the_response_and_its_output_resumes_the_chain(server, upstream):
    client = sdk(server)
    upstream.clear()
    first = client.responses.create(model="scripted", input=ASK, tools=[LOOKUP])
    calls = [o for o in first.output if o.type == "function_call"]
    assert [(c.name, c.arguments) for c in calls] == [("lookup", '{"city":"Oslo"}')]
    assert first.status == "completed" and calls[0].call_id
    offered = [t["function"]["name"] for t in upstream.requests()[0]["body"]["tools"]]
    assert "lookup" in offered and "read_file" in offered  # beside the server's own

    output: Any = {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny"}
    second = client.responses.create(model="scripted", previous_response_id=first.id, input=[output], tools=[LOOKUP])
    assert second.output_text == "tool result: sunny"
    sent = upstream.requests()[-1]["body"]["messages"]
    assert [m["role"] for m in sent[1:]] == ["user", "assistant", "tool"]
    assert sent[2]["tool_calls"][0]["id"] == calls[0].call_id and sent[3]["content"] == "sunny"

    # The chain reads on as one tool-using conversation.
    third = client.responses.create(model="scripted", previous_response_id=second.id, input="thanks")
    assert third.output_text == "You said: thanks"
    roles = [m["role"] for m in upstream.requests()[-1]["body"]["messages"][1:]]
    assert roles == ["user", "assistant", "tool", "assistant", "user"]


def test_a_streamed_call_is_rebuilt_by_the_sdk(server):
    client = sdk(server)
    with client.responses.stream(model="scripted", input=ASK, tools=[LOOKUP]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.done" in kinds and kinds[-1] == "response.completed"
    calls = [o for o in final.output if o.type == "function_call"]
    assert [(c.name, c.arguments) for c in calls] == [("lookup", '{"city":"Oslo"}')]


@pytest.mark.parametrize(
    "tools, choice, param, code",
    [
        ([{**LOOKUP, "name": "read_file"}], None, "tools", "tool_name_collision"),
        ([LOOKUP, LOOKUP], None, "tools", "duplicate_tool_name"),
        ([{**LOOKUP, "name": "no spaces"}], None, "tools", "invalid_tool_name"),
        ([LOOKUP], {"type": "function", "name": "other"}, "tool_choice", "unknown_tool"),
        ([LOOKUP], {"type": "function"}, "tool_choice", None),
        ([{**LOOKUP, "description": 5}], None, "tools[0].description", None),
        ([{**LOOKUP, "strict": "yes"}], None, "tools[0].strict", None),
    ],
    ids=["collision", "duplicate", "bad-name", "choice-unknown", "choice-nameless", "description", "strict"],
)
def test_bad_tools_are_400_naming_the_field(server, tools, choice, param, code):
    extra: dict[str, Any] = {"tool_choice": choice} if choice is not None else {}
    with pytest.raises(openai.BadRequestError) as info:
        sdk(server).responses.create(model="scripted", input="x", tools=tools, **extra)
    assert info.value.param == param
    if code is not None:
        assert info.value.code == code


def test_an_output_for_no_call_is_a_400(server):
    client = sdk(server)
    first = client.responses.create(model="scripted", input="hello")
    stray: Any = {"type": "function_call_output", "call_id": "call_nowhere", "output": "x"}
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="scripted", previous_response_id=first.id, input=[stray])
    assert info.value.param == "input" and info.value.code == "unknown_tool_call_id"
    assert "call_nowhere" in str(info.value)
