"""The scripted upstream, driven through the real `openai` SDK.

One server process serves the module (the `--tokens` test starts its own,
since that mode is fixed per process). The rule parser is also unit-tested
directly, without a server.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from common import sdk
from openai.types.chat import ChatCompletionMessageParam

from nanobot.testing.process import ProcessStartError, UpstreamProcess
from nanobot.testing.script import ScriptConfig, ScriptError, plan

pytestmark = pytest.mark.timeout(30)

TOOL_ARGS = {"content": "hi #die", "channel": "telegram", "chat_id": "42"}
TOOL_TEXT = "#tool:message " + json.dumps(TOOL_ARGS)


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamProcess]:
    with UpstreamProcess.start() as process:
        yield process


@pytest.fixture
def client(upstream: UpstreamProcess) -> Iterator[openai.OpenAI]:
    with sdk(upstream, "x") as official:
        yield official


def user(text: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": text}]


def post_json(url: str, payload: Any) -> tuple[int, Any]:
    """POST JSON with the standard library; return (status, parsed body)."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# --- rules, without a server ------------------------------------------------


def test_plan_masks_tool_arguments_and_reads_list_content() -> None:
    content = [{"type": "text", "text": TOOL_TEXT}, {"type": "image_url", "image_url": {"url": "x"}}]
    reply = plan({"messages": [{"role": "user", "content": content}]}, ScriptConfig())
    assert not reply.die  # "#die" inside the JSON arguments is data, not a directive
    assert [(c.name, json.loads(c.arguments)) for c in reply.tool_calls] == [("message", TOOL_ARGS)]


def test_plan_rejects_malformed_directives() -> None:
    for text in ("#status:abc", "#status:200", "#slow:", '#tool:x {"a": '):
        with pytest.raises(ScriptError):
            plan({"messages": user(text)}, ScriptConfig())


def test_plan_calls_an_offered_client_tool_only() -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    reply = plan({"messages": user('#call:lookup {"q": 1} please'), "tools": tools}, ScriptConfig())
    assert [(c.name, json.loads(c.arguments)) for c in reply.tool_calls] == [("lookup", {"q": 1})]
    with pytest.raises(ScriptError, match="offered no such tool"):
        plan({"messages": user("#call:lookup go")}, ScriptConfig())
    # A tool_choice naming a function is obeyed; a tool result is still answered with text.
    forced = {"type": "function", "function": {"name": "lookup"}}
    reply = plan({"messages": user("anything"), "tools": tools, "tool_choice": forced}, ScriptConfig())
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("lookup", "{}")]
    result = [*user("#call:lookup"), {"role": "tool", "tool_call_id": "c", "content": "42"}]
    assert plan({"messages": result, "tools": tools}, ScriptConfig()).text == "tool result: 42"


def test_plan_tokens_mode_uses_configured_word() -> None:
    reply = plan({"messages": user("hi")}, ScriptConfig(tokens=3, interval_ms=5, token_text="w"))
    assert reply.chunks == ["w "] * 3 and reply.interval == 0.005


# --- chat completions through the SDK ---------------------------------------


def test_plan_answers_a_response_format_with_json() -> None:
    schema = {
        "type": "object",
        "required": ["who", "tags", "kind", "inner"],
        "properties": {
            "who": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"enum": ["a", "b"]},
            "inner": {"$ref": "#/$defs/Inner"},
        },
        "$defs": {"Inner": {"type": "object", "properties": {"n": {"type": ["integer", "null"]}}}},
    }
    body = {"messages": [{"role": "user", "content": "hi"}]}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    assert json.loads(plan({**body, "response_format": fmt}, ScriptConfig()).text) == {
        "who": "hi",
        "tags": [],
        "kind": "a",
        "inner": {"n": 0},
    }
    assert json.loads(plan({**body, "response_format": {"type": "json_object"}}, ScriptConfig()).text) == {
        "you_said": "hi"
    }
    assert plan({**body, "response_format": {"type": "text"}}, ScriptConfig()).text == "You said: hi"


def test_plain_reply_with_usage(client: openai.OpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "system", "content": "be brief"}, *user("hello there world")]
    completion = client.chat.completions.create(model="scripted", messages=messages)
    choice = completion.choices[0]
    assert choice.message.content == "You said: hello there world"
    assert choice.finish_reason == "stop"
    assert completion.object == "chat.completion" and completion.model == "scripted"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 5)
    assert completion.usage.total_tokens == 10


def test_stream_role_words_and_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="scripted",
        messages=user("one two  three"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    words = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert words == ["You ", "said: ", "one ", "two  ", "three"]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (3, 5)
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="m", messages=user("hi"), stream=True))
    assert all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[0].model == "m"


def test_tool_call_streamed_async(upstream: UpstreamProcess) -> None:
    async def collect() -> tuple[dict[int, dict[str, Any]], list[str | None]]:
        async with openai.AsyncOpenAI(base_url=upstream.base_url, api_key="x", max_retries=0) as sdk:
            stream = await sdk.chat.completions.create(
                model="scripted", messages=user(TOOL_TEXT + " #tool:noop"), stream=True
            )
            calls: dict[int, dict[str, Any]] = {}
            finishes: list[str | None] = []
            async for chunk in stream:
                finishes.append(chunk.choices[0].finish_reason)
                for delta in chunk.choices[0].delta.tool_calls or []:
                    call = calls.setdefault(delta.index, {"id": None, "name": None, "args": []})
                    call["id"] = call["id"] or delta.id
                    if delta.function and delta.function.name:
                        call["name"] = delta.function.name
                    if delta.function and delta.function.arguments:
                        call["args"].append(delta.function.arguments)
            return calls, finishes

    calls, finishes = asyncio.run(collect())
    assert finishes[-1] == "tool_calls"
    assert calls[0]["name"] == "message" and calls[0]["id"].startswith("call_")
    assert len(calls[0]["args"]) >= 2
    assert json.loads("".join(calls[0]["args"])) == TOOL_ARGS
    assert calls[1]["name"] == "noop" and json.loads("".join(calls[1]["args"])) == {}
    assert calls[0]["id"] != calls[1]["id"]


def test_tool_result_follow_up_and_toolloop(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="scripted", messages=user(TOOL_TEXT))
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls" and message.tool_calls
    assert first.usage is not None and first.usage.completion_tokens == 1
    call = message.tool_calls[0]
    history: list[Any] = [  # an SDK model's dump is a plain dict, not one of the SDK's TypedDicts
        *user(TOOL_TEXT),
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sent ok"},
    ]
    follow_up = client.chat.completions.create(model="scripted", messages=history)
    assert follow_up.choices[0].message.content == "tool result: sent ok"
    assert follow_up.choices[0].finish_reason == "stop"

    history[0] = user("#toolloop")[0]
    looping = client.chat.completions.create(model="scripted", messages=history)
    calls = looping.choices[0].message.tool_calls or []
    assert [c.type for c in calls] == ["function"]
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls if c.type == "function"] == [
        ("message", {"content": "again"})
    ]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, openai.InternalServerError),
        (429, openai.RateLimitError),
        (401, openai.AuthenticationError),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_status_directive(client: openai.OpenAI, status: int, error: type[openai.APIStatusError], stream: bool) -> None:
    with pytest.raises(error) as caught:
        client.chat.completions.create(model="s", messages=user(f"#status:{status}"), stream=stream)
    assert caught.value.status_code == status


@pytest.mark.parametrize("stream", [False, True])
def test_garbage_raises(client: openai.OpenAI, stream: bool) -> None:
    with pytest.raises(ValueError):  # json.JSONDecodeError from the SDK's parser
        response = client.chat.completions.create(model="s", messages=user("#garbage"), stream=stream)
        if stream:
            list(response)


def test_die_mid_stream_raises_while_iterating(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="s", messages=user("#die now"), stream=True)
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert received == ["", "You ", "said: "]


def test_die_without_stream_raises(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="s", messages=user("#die"))


def test_slow_delays_then_answers(client: openai.OpenAI) -> None:
    started = time.monotonic()
    completion = client.chat.completions.create(model="s", messages=user("#slow:300 #empty"))
    assert time.monotonic() - started >= 0.3
    assert completion.choices[0].message.content == ""
    assert completion.usage is not None and completion.usage.completion_tokens == 0


def test_requests_are_recorded(upstream: UpstreamProcess, client: openai.OpenAI) -> None:
    upstream.clear()
    client.chat.completions.create(
        model="scripted", messages=user("record me"), temperature=0.5, extra_headers={"X-Test": "1"}
    )
    [record] = upstream.requests()
    assert record["body"]["messages"] == user("record me")
    assert "tools" not in record["body"]  # what a request offered is recorded as it came (none here)
    assert record["body"]["temperature"] == 0.5
    assert record["headers"]["Authorization"] == "Bearer x"
    assert record["headers"]["X-Test"] == "1"
    upstream.clear()
    assert upstream.requests() == []


def test_models_route(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["scripted"]


def test_sinks_and_failure_injection(upstream: UpstreamProcess) -> None:
    upstream.clear_received()
    upstream.fail("/bot", 2, status=503)
    send = upstream.url + "/botT0K3N/sendMessage"
    assert post_json(send, {"chat_id": 42, "text": "a"})[0] == 503
    assert post_json(send, {"chat_id": 42, "text": "a"})[0] == 503
    status, answer = post_json(send, {"chat_id": 42, "text": "a"})
    assert status == 200 and answer["ok"] is True and isinstance(answer["result"]["message_id"], int)
    assert post_json(send, {"chat_id": 42, "text": "x" * 4097})[0] == 400
    assert post_json(upstream.url + "/hook/alerts", {"any": ["json"]}) == (200, {"ok": True})

    received = upstream.received()
    assert [r.get("failed", False) for r in received] == [True, True, False, True, False]
    assert received[2]["path"] == "/botT0K3N/sendMessage"
    assert received[2]["body"] == {"chat_id": 42, "text": "a"}
    assert received[-1]["path"] == "/hook/alerts"
    assert received[-1]["headers"]["Content-Type"] == "application/json"
    upstream.clear_received()
    assert upstream.received() == []


def test_failure_injection_on_chat_route(upstream: UpstreamProcess, client: openai.OpenAI) -> None:
    upstream.clear()
    upstream.fail("/v1/chat", 1, status=502)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="s", messages=user("hi"))
    assert caught.value.status_code == 502
    assert client.chat.completions.create(model="s", messages=user("hi")).choices[0].message.content
    assert [r.get("failed", False) for r in upstream.requests()] == [True, False]
    upstream.fail("/hook/", 5)
    upstream.clear_failures()
    assert post_json(upstream.url + "/hook/x", {})[0] == 200


# --- process handling -------------------------------------------------------


def test_tokens_mode_paces_chunks_and_exits_cleanly() -> None:
    with UpstreamProcess.start(tokens=5, interval_ms=50, record=False) as process:
        with sdk(process, "x") as official:
            stream = official.chat.completions.create(model="s", messages=user("go"), stream=True)
            arrivals: list[float] = []
            pieces: list[str] = []
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    arrivals.append(time.monotonic())
                    pieces.append(chunk.choices[0].delta.content)
        assert pieces == ["tok "] * 5
        gaps = sorted(later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False))
        # One sleep per chunk: ~50 ms apart (the median tolerates a bunched pair).
        assert 0.03 <= gaps[len(gaps) // 2] < 0.5, gaps
        assert arrivals[-1] - arrivals[0] >= 0.15, gaps
        assert process.requests() == []  # --no-record
        assert process.stop() == 0


def test_start_failure_reports_stderr() -> None:
    with pytest.raises(ProcessStartError, match="unrecognized arguments: --bogus"):
        UpstreamProcess.start(extra_args=["--bogus"])


def test_server_logged_no_errors(upstream: UpstreamProcess) -> None:
    # Runs last: dropped connections and client errors above must stay quiet.
    assert upstream.stderr_text() == ""
