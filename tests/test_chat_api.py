"""The chat API end to end with the official openai SDK and raw HTTP."""

from __future__ import annotations

import asyncio
import uuid

import openai
import requests
from common import sdk

from nanobot.protocol import parse_frames


def test_health_and_models(echo_server):
    r = requests.get(echo_server.url + "/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    models = sdk(echo_server).models.list()
    assert [m.id for m in models.data] == ["echo"]
    raw = requests.get(echo_server.base_url + "/models").json()
    assert raw == {"object": "list", "data": [{"id": "echo", "object": "model", "created": 0, "owned_by": "nanobot"}]}


def test_sdk_non_streaming(echo_server):
    sid = uuid.uuid4().hex
    resp = sdk(echo_server).chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "hello there world"}], extra_body={"session_id": sid}
    )
    assert resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-")
    assert resp.model == "echo"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == "hello there world"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens == 3
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + 3


def test_sdk_streaming_sync(echo_server):
    stream = sdk(echo_server).chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "one two three four"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"session_id": uuid.uuid4().hex},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_sdk_async_both_modes(echo_server):
    async def main():
        c = openai.AsyncOpenAI(base_url=echo_server.base_url, api_key="x", max_retries=0)
        try:
            r = await c.chat.completions.create(model="echo", messages=[{"role": "user", "content": "async hi"}])
            assert r.choices[0].message.content == "async hi"
            parts = []
            async for chunk in await c.chat.completions.create(
                model="echo", messages=[{"role": "user", "content": "streamed async hi"}], stream=True
            ):
                if chunk.choices and chunk.choices[0].delta.content:
                    parts.append(chunk.choices[0].delta.content)
            assert "".join(parts) == "streamed async hi"
            # Many at once, on distinct sessions.
            rs = await asyncio.gather(
                *[
                    c.chat.completions.create(
                        model="echo",
                        messages=[{"role": "user", "content": f"n{i}"}],
                        extra_body={"session_id": f"par-{i}-{uuid.uuid4().hex}"},
                    )
                    for i in range(20)
                ]
            )
            assert [x.choices[0].message.content for x in rs] == [f"n{i}" for i in range(20)]
        finally:
            await c.close()

    asyncio.run(main())


def test_raw_sse_frame_sequence(echo_server):
    r = requests.post(
        echo_server.base_url + "/chat/completions",
        json={
            "messages": [{"role": "user", "content": "alpha beta"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        stream=True,
    )
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")
    assert r.headers["Cache-Control"] == "no-cache"
    assert r.headers["X-Accel-Buffering"] == "no"
    assert "Content-Encoding" not in r.headers
    raw = r.raw.read()
    assert raw.endswith(b"data: [DONE]\n\n")
    for block in raw.split(b"\n\n")[:-1]:
        assert block.startswith(b"data: "), block
    frames = parse_frames(raw)
    assert frames[-1] == "[DONE]"
    chunks = frames[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["id"] == chunks[0]["id"] and c["created"] == chunks[0]["created"] for c in chunks)
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "echo" for c in chunks)
    contents = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2]]
    assert "".join(contents) == "alpha beta" and len(contents) == 2
    stop = chunks[-2]
    assert stop["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2


def test_sse_without_include_usage_has_no_usage_key(echo_server):
    r = requests.post(
        echo_server.base_url + "/chat/completions",
        json={"messages": [{"role": "user", "content": "x"}], "stream": True},
    )
    chunks = parse_frames(r.content)[:-1]
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_request_id_echoed_or_generated(echo_server):
    r = requests.get(echo_server.url + "/health", headers={"X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123"
    r = requests.post(
        echo_server.base_url + "/chat/completions", data=b"{", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400 and len(r.headers["X-Request-ID"]) == 32
    r = requests.get(echo_server.url + "/nope")
    assert r.status_code == 404 and r.headers["X-Request-ID"]
    raw = sdk(echo_server).chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "hi"}], extra_headers={"X-Request-ID": "rid-7"}
    )
    assert raw.headers["x-request-id"] == "rid-7"


def test_sessions_are_keyed_and_isolated(agent_server, upstream):
    c = sdk(agent_server)
    sid = uuid.uuid4().hex
    c.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "first in A"}], extra_body={"session_id": sid}
    )
    c.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "only in B"}], extra_body={"session_id": sid + "-b"}
    )
    upstream.clear()
    c.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "second in A"}], extra_body={"session_id": sid}
    )
    sent = upstream.requests()[-1]["body"]["messages"]
    texts = [m.get("content") for m in sent]
    assert sent[0]["role"] == "system"
    assert texts[1:] == ["first in A", "You said: first in A", "second in A"]
    assert not any("only in B" in str(t) for t in texts)
