"""The Responses wire side of client function tools, in process.

The items read into the conversation they stand for, and paused calls
answered as ``function_call`` items in the SDK's own types; end to end
through a server in ``test_responses_tools.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
from openai.types.responses import ResponseFunctionToolCall
from responses_helpers import sse_events, strict_response

from nanobot.agent.loop import TurnDone
from nanobot.errors import InvalidRequest
from nanobot.protocol import Usage
from nanobot.providers.base import ToolCall
from nanobot.responses.protocol import ResponseShape
from nanobot.responses.request import InputReader, ResponsesRequest, Turn
from nanobot.services import Services
from nanobot.testing.context import make_ctx, recorded, running_services
from stages.responses_encode import stage as responses_encode


@pytest.fixture(scope="module")
def services(runner: asyncio.Runner, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    context = running_services(tmp_path_factory.mktemp("seam"))
    started = runner.run(context.__aenter__())
    yield started
    runner.run(context.__aexit__(None, None, None))


def read(items: list[dict[str, Any]]) -> ResponsesRequest:
    request = ResponsesRequest(shape=ResponseShape(model="echo"))
    InputReader("append").read(items, request, Turn())
    return request


CALL = {"type": "function_call", "call_id": "call_1", "name": "lookup", "arguments": '{"city":"Oslo"}'}
OUTPUT = {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}


def test_function_call_items_become_the_conversation_they_stand_for():
    replayed = read([{"role": "user", "content": "weather?"}, CALL, OUTPUT, {"role": "user", "content": "thanks"}])
    assert not replayed.resumes and replayed.tool_items == ["input[1]", "input[2]"]
    assert replayed.prefix == [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"city":"Oslo"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    assert [i["type"] for i in replayed.items] == ["message", "function_call", "function_call_output", "message"]
    ResponseFunctionToolCall.model_validate(replayed.items[1])
    # Results and nothing after them: a resume, with no user message of its own.
    resumed = read([OUTPUT, {**OUTPUT, "call_id": "call_2", "output": [{"type": "input_text", "text": "x"}]}])
    assert resumed.resumes and [m["content"] for m in resumed.prefix] == ["sunny", "x"]


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({**CALL, "call_id": ""}, "input[0].call_id"),
        ({**CALL, "name": None}, "input[0].name"),
        ({**CALL, "arguments": {"city": "Oslo"}}, "input[0].arguments"),
        ({**OUTPUT, "output": 5}, "input[0].output"),
    ],
)
def test_malformed_function_items_are_400s(item, param):
    with pytest.raises(InvalidRequest) as info:
        read([item, {"role": "user", "content": "x"}])
    assert info.value.param == param


def test_a_request_ending_with_a_call_is_refused():
    with pytest.raises(InvalidRequest) as info:
        read([{"role": "user", "content": "x"}, CALL])
    assert info.value.param == "input[1]"


async def _events(done: TurnDone, deltas: list[str]) -> AsyncIterator[Any]:
    for delta in deltas:
        yield delta
    yield done


CALLS = [ToolCall("call_a", "lookup", '{"city":"Oslo"}'), ToolCall("call_b", "lookup", '{"city":"Rome"}')]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("text", ["", "Let me look."])
def test_paused_calls_are_function_call_items(runner, services, stream, text):
    request = ResponsesRequest(shape=ResponseShape(model="echo"), store=False)
    done = TurnDone(Usage(3, 4), text, tool_calls=CALLS)
    ctx = make_ctx(services, stream=stream, responses=request, events=_events(done, [text] if text else []))
    runner.run(responses_encode(ctx))
    body = recorded(ctx).body()
    if stream:
        events = sse_events(body)
        kinds = [e["type"] for e in events]
        assert kinds[-1] == "response.completed"
        assert kinds.count("response.function_call_arguments.done") == 2
        response = events[-1]["response"]
    else:
        response = orjson.loads(body)
    parsed = strict_response(response)
    calls = [o for o in parsed.output if o.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [(c.id, c.name, c.arguments) for c in CALLS]
    assert all((c.id or "").startswith("fc_") and c.status == "completed" for c in calls)
    messages = [o.model_dump() for o in parsed.output if o.type == "message"]
    assert [m["content"][0]["text"] for m in messages] == ([text] if text else [])
