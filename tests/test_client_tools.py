"""Client function tools (DESIGN section 10): offered to the model, their calls handed back, resumed.

Real server processes against the scripted upstream; the stock openai SDK
reads the answers. ``#call:NAME`` makes the upstream call a tool only if it
was offered, so a passing call proves the client's tool reached the model.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, TypeGuard

import pytest
import requests
from common import CHAT, sdk
from openai.types.chat import ChatCompletionMessageFunctionToolCall

from nanobot.protocol import parse_frames

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def tool(name: str, **fn: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}, **fn}}


def post(server: Any, messages: list[dict[str, Any]], sid: str, **extra: Any) -> requests.Response:
    return requests.post(server.url + CHAT, json={"messages": messages, "session_id": sid, **extra}, timeout=60)


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def results(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"role": "tool", "tool_call_id": i, "content": c} for i, c in pairs]


def error(r: requests.Response) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    err: dict[str, Any] = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    return err


# ------------------------------------------------------------------------------------ bad input

BAD_TOOLS = [
    ("not-a-list", {"tools": {"a": 1}}, "tools", "must be a list"),
    ("no-name", {"tools": [{"type": "function", "function": {"description": "x"}}]}, "tools", "needs a name"),
    ("no-function", {"tools": [{"type": "function"}]}, "tools", "'function' object"),
    ("not-function-type", {"tools": [{"type": "code_interpreter"}]}, "tools", "only function tools"),
    ("bad-name", {"tools": [tool("get weather!")]}, "tools", "letters, digits"),
    ("long-name", {"tools": [tool("a" * 65)]}, "tools", "1 to 64"),
    ("server-name", {"tools": [tool("message")]}, "tools", "this server's own tools"),
    ("duplicate", {"tools": [tool("f"), tool("f")]}, "tools", "used by two tools"),
    (
        "parameters-list",
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
        "tools",
        "JSON Schema object",
    ),
    ("too-many", {"tools": [tool(f"t{i}") for i in range(129)]}, "tools", "at most 128"),
    (
        "huge-schema",
        {"tools": [tool("f", description="x" * (1024 * 1024))]},
        "tools",
        "bytes; at most",
    ),
    ("description-number", {"tools": [tool("f", description=3)]}, "tools", "description must be a string"),
    ("strict-string", {"tools": [tool("f", strict="yes")]}, "tools", "strict must be a boolean"),
    (
        "choice-unsent",
        {"tools": [tool("f")], "tool_choice": {"type": "function", "function": {"name": "g"}}},
        "tool_choice",
        "'g'",
    ),
    (
        "choice-server-tool",
        {"tool_choice": {"type": "function", "function": {"name": "message"}}},
        "tool_choice",
        "not in",
    ),
    ("choice-word", {"tools": [tool("f")], "tool_choice": "always"}, "tool_choice", "tool_choice must be"),
    ("choice-shape", {"tools": [tool("f")], "tool_choice": {"type": "function"}}, "tool_choice", "tool_choice must be"),
    ("parallel-string", {"tools": [tool("f")], "parallel_tool_calls": "yes"}, "parallel_tool_calls", "boolean"),
]


@pytest.mark.parametrize("name, extra, param, words", BAD_TOOLS, ids=[c[0] for c in BAD_TOOLS])
def test_bad_tools_are_400_naming_the_field(agent_server, upstream, name, extra, param, words):
    upstream.clear()
    err = error(post(agent_server, user("hi"), uuid.uuid4().hex, **extra))
    assert err["param"] == param and words in err["message"], err
    assert upstream.requests() == []  # refused before any LLM call


def test_accepted_shapes_reach_the_model(agent_server, upstream):
    """Empty tools, auto/none choices, no parameters: accepted; the upstream is sent what it needs."""
    upstream.clear()
    r = post(agent_server, user("hi"), uuid.uuid4().hex, tools=[], tool_choice="auto", parallel_tool_calls=False)
    assert r.status_code == 200, r.text
    sent = upstream.requests()[-1]["body"]
    assert sent["tool_choice"] == "auto" and sent["parallel_tool_calls"] is False
    bare = {"type": "function", "function": {"name": "ping"}}
    r = post(agent_server, user("hi"), uuid.uuid4().hex, tools=[bare, WEATHER], tool_choice="none")
    assert r.status_code == 200, r.text
    sent = upstream.requests()[-1]["body"]
    names = [t["function"]["name"] for t in sent["tools"]]
    assert names[-2:] == ["ping", "get_weather"] and "message" in names  # the server's tools first, unchanged
    assert sent["tools"][-1] == WEATHER and sent["tool_choice"] == "none"


# ------------------------------------------------------------------------------------ pause and resume


def test_json_pause_resume_reads_as_one_turn(agent_server, upstream):
    sid = uuid.uuid4().hex
    upstream.clear()
    ask = '#tool:message {"content":"checking"} #call:get_weather {"city":"Paris"} weather?'
    r = post(agent_server, user(ask), sid, tools=[WEATHER])
    assert r.status_code == 200, r.text
    body = r.json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    calls = choice["message"]["tool_calls"]
    assert [(c["type"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("function", "get_weather", {"city": "Paris"})
    ]
    assert choice["message"]["content"] == "checking"  # the message tool's inline text, said so far
    assert body["usage"]["total_tokens"] > 0
    # The server tool of the same reply ran before the pause (one LLM call so far).
    assert len(upstream.requests()) == 1
    call_id = calls[0]["id"]
    echoed = {"role": "assistant", "content": None, "tool_calls": calls}
    r = post(agent_server, [echoed, *results((call_id, "sunny, 21 C"))], sid, tools=[WEATHER])
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "tool result: sunny, 21 C"},
        "finish_reason": "stop",
    }
    resumed = upstream.requests()[-1]["body"]["messages"]
    assert [m["role"] for m in resumed[1:]] == ["user", "assistant", "tool", "tool"]
    assert [m["tool_call_id"] for m in resumed[-2:]] == [resumed[2]["tool_calls"][0]["id"], call_id]
    # The stored history reads as one ordinary tool-using turn.
    upstream.clear()
    assert post(agent_server, user("next"), sid).status_code == 200
    history = upstream.requests()[-1]["body"]["messages"][1:]
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "tool", "assistant", "user"]
    assert history[3]["content"] == "sunny, 21 C" and history[4]["content"] == "tool result: sunny, 21 C"


def _fn(call: Any) -> TypeGuard[ChatCompletionMessageFunctionToolCall]:
    return isinstance(call, ChatCompletionMessageFunctionToolCall)


def test_streamed_calls_rebuild_like_the_json_answer(agent_server):
    """The SDK's stream accumulator rebuilds the same calls the JSON answer carries."""
    client = sdk(agent_server)
    ask = '#call:get_weather {"city":"Oslo"} #call:get_weather {"city":"Rome"} two cities'
    extra = {"session_id": uuid.uuid4().hex}
    plain = client.chat.completions.create(model="scripted", messages=user(ask), tools=[WEATHER], extra_body=extra)
    with client.chat.completions.stream(
        model="scripted",
        messages=user(ask),
        tools=[WEATHER],
        stream_options={"include_usage": True},
        extra_body={"session_id": uuid.uuid4().hex},
    ) as stream:
        final = stream.get_final_completion()
    for done in (plain, final):
        assert done.choices[0].finish_reason == "tool_calls"
    got = [(c.function.name, c.function.arguments) for c in final.choices[0].message.tool_calls or [] if _fn(c)]
    want = [(c.function.name, c.function.arguments) for c in plain.choices[0].message.tool_calls or [] if _fn(c)]
    assert got == want and len(got) == 2
    assert final.usage is not None and plain.usage is not None
    assert final.usage.total_tokens == plain.usage.total_tokens


def test_stream_frames_are_framed_as_openai(agent_server):
    r = requests.post(
        agent_server.url + CHAT,
        json={
            "messages": user('#call:get_weather {"city":"Oslo"} go'),
            "tools": [WEATHER],
            "stream": True,
            "stream_options": {"include_usage": True, "include_tool_events": True},
            "session_id": uuid.uuid4().hex,
        },
        timeout=60,
    )
    frames = parse_frames(r.content)
    assert frames[-1] == "[DONE]" and frames[-2]["choices"] == [] and frames[-2]["usage"]["total_tokens"] > 0
    deltas = [f["choices"][0]["delta"] for f in frames[:-2]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert not any("nanobot_tool" in d for d in deltas)  # tool events report server tools only
    head, args = deltas[-3]["tool_calls"][0], deltas[-2]["tool_calls"][0]
    assert list(head) == ["index", "id", "type", "function"] and head["function"] == {
        "name": "get_weather",
        "arguments": "",
    }
    assert args == {"index": 0, "function": {"arguments": '{"city":"Oslo"}'}}
    assert deltas[-1] == {} and frames[-3]["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_choice_reaches_the_model_once(agent_server, upstream):
    sid = uuid.uuid4().hex
    upstream.clear()
    forced = {"type": "function", "function": {"name": "get_weather"}}
    r = post(agent_server, user("anything"), sid, tools=[WEATHER], tool_choice=forced)
    call = r.json()["choices"][0]["message"]["tool_calls"][0]
    assert upstream.requests()[-1]["body"]["tool_choice"] == forced
    r = post(agent_server, results((call["id"], "rain")), sid, tools=[WEATHER], tool_choice=forced)
    assert r.json()["choices"][0]["message"]["content"] == "tool result: rain"


# ------------------------------------------------------------------------------------ continuations


def _paused(server: Any, sid: str, calls: str = '#call:get_weather {"city":"A"} #call:ping {}') -> list[str]:
    r = post(server, user(calls), sid, tools=[WEATHER, tool("ping")])
    assert r.json()["choices"][0]["finish_reason"] == "tool_calls", r.text
    return [c["id"] for c in r.json()["choices"][0]["message"]["tool_calls"]]


def test_continuation_errors(agent_server, upstream):
    sid = uuid.uuid4().hex
    err = error(post(agent_server, results(("call_x", "r")), sid))
    assert err["code"] == "no_pending_tool_calls" and err["param"] == "messages[0].tool_call_id"
    first, second = _paused(agent_server, sid)
    err = error(post(agent_server, results((first, "a"), ("nope", "b")), sid))
    assert err["code"] == "unknown_tool_call_id" and "'nope'" in err["message"]
    assert err["param"] == "messages[1].tool_call_id"
    err = error(post(agent_server, results((first, "a")), sid))
    assert err["code"] == "missing_tool_results" and second in err["message"] and "ping" in err["message"]
    err = error(post(agent_server, results((first, "a"), (first, "b")), sid))
    assert err["code"] == "duplicate_tool_result"
    # reject mode: a conversation before the results is refused, with the settings named.
    err = error(post(agent_server, [*user("x"), *results((first, "a"), (second, "b"))], sid))
    assert err["code"] == "client_history_not_allowed"
    # Results as a list of text parts, as OpenAI accepts them; the refusals above changed nothing.
    upstream.clear()
    parts = [{"role": "tool", "tool_call_id": first, "content": [{"type": "text", "text": "cold"}]}]
    r = post(agent_server, [*parts, *results((second, "pong"))], sid)
    assert r.status_code == 200, r.text
    sent = upstream.requests()[-1]["body"]["messages"]
    assert [m.get("content") for m in sent[-2:]] == ["cold", "pong"]
    err = error(post(agent_server, results((first, "again")), sid))  # nothing pending any more
    assert err["code"] == "no_pending_tool_calls"


def test_a_user_message_closes_the_paused_turn(agent_server, upstream):
    sid = uuid.uuid4().hex
    first, second = _paused(agent_server, sid)
    upstream.clear()
    r = post(agent_server, user("never mind"), sid)
    assert r.json()["choices"][0]["message"]["content"] == "You said: never mind"
    sent = upstream.requests()[-1]["body"]["messages"][1:]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool", "user"]
    assert [m["content"] for m in sent[2:4]] == ["Error: no result from the client"] * 2
    assert error(post(agent_server, results((first, "late"), (second, "x")), sid))["code"] == "no_pending_tool_calls"
    upstream.clear()
    post(agent_server, user("and now"), sid)
    roles = [m["role"] for m in upstream.requests()[-1]["body"]["messages"][1:]]
    assert roles == ["user", "assistant", "tool", "tool", "user", "assistant", "user"]


def test_a_remembered_tool_set_is_checked_against_the_server_tools_of_now():
    """The same tools are checked once, but a server tool that appeared since (MCP) still collides."""
    from stages.chat_tools import read_tools

    body = {"tools": [tool("mcp_late_tool"), WEATHER]}
    first = read_tools(body, lambda: ["message"])
    again = read_tools(body, lambda: ["message"])
    assert first is not None and again is not None and again.encoded == first.encoded
    with pytest.raises(Exception, match="one of this server's own tools") as refused:
        read_tools(body, lambda: ["message", "mcp_late_tool"])
    assert getattr(refused.value, "param", None) == "tools"


def test_results_may_come_before_the_echoed_calls(agent_server):
    """What the document allows in reject mode (found by fuzzing): results and echoes in any order."""
    sid = uuid.uuid4().hex
    first, second = _paused(agent_server, sid)
    echo: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": []}
    r = post(agent_server, [*results((first, "a")), echo, *results((second, "b"))], sid)
    assert r.status_code == 200, r.text
    # An assistant message without tool_calls is conversation, not an echo: refused in reject mode.
    first, second = _paused(agent_server, sid)
    r = post(agent_server, [{"role": "assistant", "content": "hi"}, *results((first, "a"), (second, "b"))], sid)
    assert error(r)["code"] == "client_history_not_allowed"
