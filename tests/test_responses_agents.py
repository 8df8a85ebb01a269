"""Real clients of the Responses API: the OpenAI Agents SDK's default model, the Node openai SDK."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import openai
import pytest

NODE_DIR = Path(__file__).parent / "node"

pytestmark = pytest.mark.timeout(120)


def roles_and_texts(upstream) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in upstream.requests()[-1]["body"]["messages"][1:]]


def test_runner_with_the_default_responses_model(agent_server, upstream):
    agents = pytest.importorskip("agents")
    # loaded by the test that uses it: the Agents SDK is slow to import
    from agents.models.openai_responses import OpenAIResponsesModel

    agents.set_tracing_disabled(True)  # no export to a tracing service

    async def run() -> None:
        client = openai.AsyncOpenAI(base_url=agent_server.base_url, api_key="unused", max_retries=0)
        agents.set_default_openai_client(client, use_for_tracing=False)
        agents.set_default_openai_api("responses")  # the SDK's default, stated
        agent = agents.Agent(name="helper", instructions="Answer in one line.", model="scripted")
        provider = agents.RunConfig().model_provider
        assert isinstance(provider.get_model("scripted"), OpenAIResponsesModel)

        plain = await agents.Runner.run(agent, "hello from agents")
        assert plain.final_output == "You said: hello from agents"
        system = upstream.requests()[-1]["body"]["messages"][0]["content"]
        assert system.endswith("\n\nAnswer in one line.")

        streamed = agents.Runner.run_streamed(agent, "stream from agents")
        deltas = [e async for e in streamed.stream_events() if e.type == "raw_response_event"]
        assert streamed.final_output == "You said: stream from agents" and len(deltas) > 4

        # Multi-turn on the server's chain, then with the SDK's own input list.
        chained = await agents.Runner.run(agent, "second turn", previous_response_id=plain.last_response_id)
        assert chained.final_output == "You said: second turn"
        assert roles_and_texts(upstream) == [
            ("user", "hello from agents"),
            ("assistant", "You said: hello from agents"),
            ("user", "second turn"),
        ]
        replayed = await agents.Runner.run(agent, plain.to_input_list() + [{"role": "user", "content": "third"}])
        assert replayed.final_output == "You said: third"
        assert roles_and_texts(upstream)[-2:] == [("assistant", "You said: hello from agents"), ("user", "third")]

        # A function tool of the client: the server hands the model's call back, the SDK runs it
        # and sends the conversation with its output; the model then sees the result.
        called: list[str] = []

        @agents.function_tool
        def lookup(city: str) -> str:
            """Look a city up."""
            called.append(city)
            return f"sunny in {city}"

        upstream.clear()
        tooled = agents.Agent(name="t", instructions="Use the tool.", model="scripted", tools=[lookup])
        answered = await agents.Runner.run(tooled, '#call:lookup {"city": "Oslo"} weather?')
        assert called == ["Oslo"]  # with the model's arguments
        assert answered.final_output == "tool result: sunny in Oslo"
        first, second = upstream.requests()
        assert "lookup" in [t["function"]["name"] for t in first["body"]["tools"]]
        roles = [m["role"] for m in second["body"]["messages"]]
        assert roles[-2:] == ["assistant", "tool"] and second["body"]["messages"][-1]["content"] == "sunny in Oslo"
        streamed = agents.Runner.run_streamed(tooled, '#call:lookup {"city": "Rome"} weather?')
        async for _ in streamed.stream_events():
            pass
        assert called == ["Oslo", "Rome"] and streamed.final_output == "tool result: sunny in Rome"
        await client.close()

    asyncio.run(run())


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_node_openai_sdk_responses(agent_server, upstream):
    if not (NODE_DIR / "node_modules" / "openai").exists():
        pytest.skip("run `npm ci --prefix tests/node` first (.ci/run does)")
    env = {**os.environ, "NANOBOT_MODEL": "scripted"}
    p = subprocess.run(
        ["node", "responses.mjs", agent_server.base_url],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["plain"] == "You said: hello from node"
    assert out["streamed"] == "You said: stream from node" and out["types"][0] == "response.created"
    assert out["types"][-1] == "response.completed" and out["sequence"]
    assert out["helper"] == "You said: helper from node"
    assert out["retrieved"] == "You said: stream from node" and out["items"] == ["stream from node"]
    assert out["deletedStatus"] == 404
    # The streamed turn continued the first one's chain.
    texts = [m["content"] for m in upstream.requests()[-2]["body"]["messages"][1:]]
    assert texts == ["hello from node", "You said: hello from node", "stream from node"]
