"""Tool-calling agents built on real client libraries, against the server (DESIGN section 10).

The OpenAI Agents SDK (``OpenAIChatCompletionsModel``) and LangChain's
``bind_tools`` run their own tool loops: the server hands the model's calls
of their tools back, the library runs its Python function, and sends the
whole conversation again (``api.clientHistory: "use"``), or, with server
history (``"ignore"``), resumes the session's paused turn.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import openai
import pytest
from pydantic import SecretStr
from servers import merge, upstream_config

ASK = '#call:get_weather {"city": "Paris"} what is the weather?'


@pytest.fixture(scope="module")
def servers(upstream):
    from servers import ServerProcess

    started = {
        mode: ServerProcess(merge(upstream_config(upstream.url), {"api": {"clientHistory": mode}}))
        for mode in ("use", "ignore")
    }
    yield started
    for server in started.values():
        server.stop()


def _agents_run(server: Any, streamed: bool, sid: str) -> tuple[str, list[str]]:
    agents = pytest.importorskip("agents")
    from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel

    agents.set_tracing_disabled(True)
    called: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        called.append(city)
        return f"sunny in {city}"

    async def run() -> str:
        client = openai.AsyncOpenAI(
            base_url=server.base_url, api_key="unused", max_retries=0, default_headers={"X-Session-Id": sid}
        )
        model = OpenAIChatCompletionsModel(model="scripted", openai_client=client)
        agent = agents.Agent(name="weather", instructions="Use the tool.", model=model, tools=[get_weather])
        try:
            if not streamed:
                result = await agents.Runner.run(agent, ASK)
                return str(result.final_output)
            run = agents.Runner.run_streamed(agent, ASK)
            async for _ in run.stream_events():
                pass
            return str(run.final_output)
        finally:
            await client.close()

    return asyncio.run(run()), called


@pytest.mark.parametrize("mode", ["use", "ignore"])
@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_openai_agents_sdk_function_tool(servers, upstream, mode, streamed):
    upstream.clear()
    output, called = _agents_run(servers[mode], streamed, uuid.uuid4().hex)
    assert called == ["Paris"]  # the SDK ran its function with the model's arguments
    assert output == "tool result: sunny in Paris"
    first, second = upstream.requests()
    offered = [t["function"]["name"] for t in first["body"]["tools"]]
    assert "get_weather" in offered and "message" in offered
    roles = [m["role"] for m in second["body"]["messages"]]
    assert roles[-3:] == ["user", "assistant", "tool"]


@pytest.mark.parametrize("mode", ["use", "ignore"])
def test_langchain_bind_tools_loop(servers, upstream, mode):
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    called: list[str] = []

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        called.append(city)
        return f"rainy in {city}"

    llm = ChatOpenAI(
        base_url=servers[mode].base_url,
        api_key=SecretStr("unused"),
        model="scripted",
        max_retries=0,
        extra_body={"session_id": uuid.uuid4().hex},
    ).bind_tools([get_weather])
    upstream.clear()
    messages: list[Any] = [HumanMessage(ASK)]
    for _ in range(4):  # the usual tool loop
        reply = llm.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            break
        for call in reply.tool_calls:
            messages.append(ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]))
    assert called == ["Paris"]
    assert messages[-1].content == "tool result: rainy in Paris"
    assert len(upstream.requests()) == 2
