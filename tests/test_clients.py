"""Clients people already use: the Node SDK, LangChain, the Python SDK's raw responses."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import openai
import pytest
from common import sdk

NODE_DIR = Path(__file__).parent / "node"


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_node_openai_sdk(agent_server, upstream):
    if not (NODE_DIR / "node_modules" / "openai").exists():
        pytest.skip("run `npm ci --prefix tests/node` first (.ci/run does)")
    sid = uuid.uuid4().hex
    marker = "NODE" + uuid.uuid4().hex[:6]
    env = {**os.environ, "NANOBOT_MODEL": "scripted", "NANOBOT_FILE_TEXT": f"attached {marker}"}
    p = subprocess.run(
        ["node", "client.mjs", agent_server.base_url, sid],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["plain"] == "You said: hello from node"
    assert out["streamed"] == "You said: stream from node" and out["chunks"] == 5
    assert out["usage"]["completion_tokens"] == 5
    assert out["uploadStatus"] == 200 and marker in out["upload"]
    # session_id passed as an extra body field reached the server: one session, three turns.
    users = [m["content"] for m in upstream.requests()[-1]["body"]["messages"] if m["role"] == "user"]
    assert users[:2] == ["hello from node", "stream from node"]


def test_langchain_chat_openai(agent_server, upstream):
    # loaded by the test that uses it: importing LangChain takes seconds
    from langchain_openai import ChatOpenAI

    sid = uuid.uuid4().hex
    llm = ChatOpenAI(
        base_url=agent_server.base_url,
        api_key="unused",
        model="scripted",
        max_retries=0,
        extra_body={"session_id": sid},
    )
    msg = llm.invoke("hello from langchain")
    assert msg.content == "You said: hello from langchain"
    pieces = [c.content for c in llm.stream("stream from langchain")]
    assert "".join(pieces) == "You said: stream from langchain" and len([p for p in pieces if p]) >= 4
    users = [m["content"] for m in upstream.requests()[-1]["body"]["messages"] if m["role"] == "user"]
    assert users == ["hello from langchain", "stream from langchain"]


def test_python_sdk_request_id(agent_server):
    c = sdk(agent_server)
    raw = c.chat.completions.with_raw_response.create(model="scripted", messages=[{"role": "user", "content": "rid"}])
    assert raw.request_id and len(raw.request_id) == 32
    assert raw.parse().choices[0].message.content == "You said: rid"
    raw = c.chat.completions.with_raw_response.create(
        model="scripted", messages=[{"role": "user", "content": "rid"}], extra_headers={"X-Request-ID": "my-trace-1"}
    )
    assert raw.request_id == "my-trace-1"


def test_openai_agents_sdk_with_instructions(agent_server, upstream):
    """The OpenAI Agents SDK: `Agent(instructions=...)` sends a system message beside the user's."""
    agents = pytest.importorskip("agents")
    # loaded by the test that uses it: the Agents SDK is slow to import
    from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel

    agents.set_tracing_disabled(True)  # no export to a tracing service

    async def run() -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=agent_server.base_url, api_key="unused", max_retries=0)
        model = OpenAIChatCompletionsModel(model="scripted", openai_client=client)
        agent = agents.Agent(name="helper", instructions="Answer in one line.", model=model)
        plain = await agents.Runner.run(agent, "hello from agents")
        streamed = agents.Runner.run_streamed(agent, "stream from agents")
        async for _ in streamed.stream_events():
            pass
        await client.close()
        return plain.final_output, streamed.final_output

    upstream.clear()
    assert asyncio.run(run()) == ("You said: hello from agents", "You said: stream from agents")
    for request in upstream.requests():
        system = request["body"]["messages"][0]
        assert system["role"] == "system" and system["content"].endswith("\n\nAnswer in one line.")
