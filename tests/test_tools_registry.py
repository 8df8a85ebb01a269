"""The tool registry: concurrency, order, timeouts, caps, cancellation, late tools."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import aclosing

import requests

from nanobot.agent.tools import ToolLimits, ToolRegistry, TurnScope
from nanobot.config import parse_config
from nanobot.files.limits import FileLimits
from nanobot.files.pool import Extractor
from nanobot.providers.base import ToolCall
from nanobot.tools import BUILTIN_TOOLS, build_tools, enabled_tool_names

SCOPE = TurnScope("api", "t", session_key="api:t")


class SleepTool:
    """Sleeps ``seconds`` and answers them; counts how many run at once."""

    name = "sleep"
    schema = {"type": "function", "function": {"name": "sleep", "parameters": {"type": "object"}}}

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.cancelled = 0

    async def run(self, args, scope) -> str:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(args["seconds"])
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        return str(args.get("say", args["seconds"]))


def sleep_call(seconds: float, i: int = 0, **extra) -> ToolCall:

    return ToolCall(f"c{i}", "sleep", json.dumps({"seconds": seconds, **extra}))


async def collect(registry: ToolRegistry, calls: list[ToolCall]) -> list[tuple[int, str]]:
    async with aclosing(registry.run_batch(calls, SCOPE)) as batch:
        return [item async for item in batch]


def test_calls_run_concurrently_and_answer_by_index() -> None:
    tool = SleepTool()
    registry = ToolRegistry([tool], ToolLimits(concurrency=4))
    calls = [sleep_call(0.3 - i * 0.05, i, say=f"r{i}") for i in range(6)]
    started = time.monotonic()
    got = asyncio.run(collect(registry, calls))
    elapsed = time.monotonic() - started
    assert elapsed < 0.9  # six sleeps of 0.05-0.3 s, four at a time
    assert tool.peak == 4
    assert sorted(got) == [(i, f"r{i}") for i in range(6)]
    # Finished order is not call order: the short sleeps come back first.
    assert [i for i, _ in got] != list(range(6))


def test_timeout_cut_and_errors() -> None:
    tool = SleepTool()
    registry = ToolRegistry([tool], ToolLimits(timeout=0.2, max_result_chars=10))

    async def main():
        return [
            await registry.run(sleep_call(5), SCOPE),
            await registry.run(sleep_call(0, say="x" * 25), SCOPE),
            await registry.run(ToolCall("c", "sleep", "{not json"), SCOPE),
            await registry.run(ToolCall("c", "sleep", "[1]"), SCOPE),
            await registry.run(ToolCall("c", "sleep", "{}"), SCOPE),  # KeyError inside the tool
            await registry.run(ToolCall("c", "nope", "{}"), SCOPE),
        ]

    timed_out, long, bad_json, not_object, raised, unknown = asyncio.run(main())
    assert timed_out == "Error: tool 'sleep' took longer than 0.2 s and was stopped."
    assert tool.cancelled == 1
    assert long == "x" * 10 + "\n[... 15 more characters cut: the result limit is 10]"
    assert bad_json == "Error: the tool arguments are not valid JSON."
    assert not_object == "Error: the tool arguments must be a JSON object."
    assert raised.startswith("Error: tool 'sleep' failed: KeyError")
    assert unknown == "Error: unknown tool 'nope'."


def test_too_many_calls_are_refused_each() -> None:
    tool = SleepTool()
    registry = ToolRegistry([tool], ToolLimits(concurrency=3, max_calls=5))
    got = dict(asyncio.run(collect(registry, [sleep_call(0, i) for i in range(10_000)])))
    assert len(got) == 10_000
    assert all(got[i] == "0" for i in range(5))
    assert got[5].startswith("Error: this reply asked for 10000 tool calls; only the first 5 run")
    assert tool.peak == 3


def test_closing_the_batch_cancels_running_calls() -> None:
    tool = SleepTool()
    registry = ToolRegistry([tool], ToolLimits(concurrency=8))

    async def main():
        batch = registry.run_batch([sleep_call(0.01, 0)] + [sleep_call(30, i) for i in range(1, 5)], SCOPE)
        first = await anext(batch)
        await batch.aclose()
        return first

    started = time.monotonic()
    assert asyncio.run(main()) == (0, "0.01")
    assert time.monotonic() - started < 5
    assert tool.cancelled == 4 and tool.running == 0


def test_tools_added_later_are_offered() -> None:
    registry = ToolRegistry([])
    before = registry.schemas
    assert before == []
    registry.add(SleepTool())
    assert [s["function"]["name"] for s in registry.schemas] == ["sleep"]
    assert before == []  # a list a turn already holds is never changed
    same = registry.schemas
    assert registry.schemas is same  # recomputed only when the set changes
    registry.remove("sleep")
    registry.remove("sleep")
    assert registry.schemas == [] and registry.names == []


def test_ten_thousand_calls_in_one_reply(agent_server, upstream) -> None:
    """A real turn whose model asks for 10,000 calls: capped, answered, well-formed."""
    upstream.clear()
    text = " ".join("#tool:list_dir" for _ in range(10_000))
    r = requests.post(
        agent_server.url + "/v1/chat/completions",
        timeout=120,
        json={"messages": [{"role": "user", "content": text}], "session_id": uuid.uuid4().hex},
    )
    assert r.status_code == 200, r.text
    assert "only the first 64 run" in r.json()["choices"][0]["message"]["content"]
    messages = upstream.requests()[-1]["body"]["messages"]
    results = [m for m in messages if m["role"] == "tool"]
    assert len(results) == 10_000
    assert sum(1 for m in results if m["content"].startswith("Error: this reply")) == 10_000 - 64
    assert requests.get(agent_server.url + "/health", timeout=5).status_code == 200


class EchoTool:
    """Answers its arguments; its schema declares one property of each JSON type."""

    name = "echo"
    schema = {
        "type": "function",
        "function": {
            "name": "echo",
            "parameters": {
                "type": "object",
                "properties": {
                    "s": {"type": "string"},
                    "i": {"type": "integer"},
                    "n": {"type": "number"},
                    "b": {"type": "boolean"},
                    "a": {"type": "array"},
                    "o": {"type": "object"},
                    "either": {"type": ["string", "null"]},
                },
                "required": ["s"],
                "additionalProperties": False,
            },
        },
    }

    def __init__(self) -> None:
        self.calls = 0

    async def run(self, args, scope) -> str:
        self.calls += 1
        return "Error-free echo: " + json.dumps(args, sort_keys=True)


def test_arguments_are_checked_against_the_schema() -> None:
    echo = EchoTool()
    registry = ToolRegistry([echo])

    def call(args: dict):
        return asyncio.run(registry.run(ToolCall("c", "echo", json.dumps(args)), SCOPE))

    bad: list[tuple[dict[str, object], str]] = [
        ({"i": 1}, "Error: argument 's' is required."),
        ({"s": 5}, "Error: argument 's' must be a string."),
        ({"s": "x", "i": 1.5}, "Error: argument 'i' must be an integer."),
        ({"s": "x", "i": True}, "Error: argument 'i' must be an integer."),  # a bool is no integer in JSON
        ({"s": "x", "n": "1"}, "Error: argument 'n' must be a number."),
        ({"s": "x", "b": 1}, "Error: argument 'b' must be a boolean."),
        ({"s": "x", "a": {}}, "Error: argument 'a' must be an array."),
        ({"s": "x", "o": []}, "Error: argument 'o' must be an object."),
        ({"s": "x", "either": 3}, "Error: argument 'either' must be a string or null."),
        ({"s": "x", "zzz": 1}, "Error: unknown argument 'zzz' (allowed: 's', 'i', 'n', 'b', 'a', 'o', 'either')."),
    ]
    for args, expected in bad:
        result = call(args)
        assert (result, result.is_error) == (expected, True), args
    assert echo.calls == 0  # refused before the call
    ok = call({"s": "x", "i": 2, "n": 2.5, "b": False, "a": [], "o": {}, "either": None})
    assert ok.startswith("Error-free echo: ") and ok.is_error is False  # honest text that starts with "Error"
    assert call({"s": "x", "i": None}).is_error is False  # an optional argument sent as null is left out
    assert echo.calls == 2


def test_loose_schemas_are_left_to_their_server() -> None:
    class Remote(EchoTool):
        name = "mcp_x_echo"
        loose_schema = True

    registry = ToolRegistry([Remote()])

    def call(args: object):
        return asyncio.run(registry.run(ToolCall("c", "mcp_x_echo", json.dumps(args)), SCOPE))

    for args in ({"s": "x", "zzz": 1}, {"i": 1}, {"s": 1}):  # each refused by the strict check above
        assert call(args).is_error is False, args
    assert call([1]) == "Error: the tool arguments must be a JSON object."


def test_registry_refusals_carry_is_error() -> None:
    registry = ToolRegistry([SleepTool()], ToolLimits(timeout=0.2))
    for call in (
        ToolCall("c", "nope", "{}"),
        ToolCall("c", "sleep", "{bad"),
        sleep_call(5),
        ToolCall("c", "sleep", "{}"),
    ):
        result = asyncio.run(registry.run(call, SCOPE))
        assert result.startswith("Error: ") and result.is_error is True
    assert asyncio.run(registry.run(sleep_call(0, say="Error: fine"), SCOPE)).is_error is False


def test_one_list_of_builtin_tools(tmp_path) -> None:
    """Names, offering and building all come from BUILTIN_TOOLS, in its order."""
    every = parse_config(
        {
            "agents": {"defaults": {"workspace": str(tmp_path)}},
            "tools": {"exec": {"enabled": True}, "web": {"search": {"provider": "brave", "apiKey": "k"}}},
        }
    )
    names = [spec.name for spec in BUILTIN_TOOLS]
    assert enabled_tool_names(every) == names
    # cron and spawn are built on the server's job store and subagents (tests/test_cron.py, test_spawn.py).
    every.tools.cron.enabled = every.tools.spawn.enabled = False
    specs = [spec for spec in BUILTIN_TOOLS if spec.name not in ("cron", "spawn")]
    built = build_tools(every, outbox=None, extractor=Extractor(FileLimits()))  # type: ignore[arg-type]
    assert [t.name for t in built] == [spec.name for spec in specs]
    assert all(t.schema["function"]["name"] == t.name for t in built)  # each name written once
    assert [type(t) for t in built] == specs
    few = parse_config({"tools": {"file": {"enabled": False}, "web": {"fetch": {"enabled": False}}}})
    assert enabled_tool_names(few) == ["message", "cron", "spawn"]
    assert enabled_tool_names(parse_config({})) == [
        "read_file",
        "write_file",
        "edit_file",
        "list_dir",
        "web_fetch",
        "message",
        "cron",
        "spawn",
    ]
