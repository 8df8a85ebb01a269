"""The `client-tools` scenario: what offering client function tools costs a turn.

One server, alternating rounds (ABBA) of plain turns and turns that offer
three client tools the model never calls, so both kinds meet the same
process, caches and machine drift. The figure is the median paired
difference of server CPU per request, as a percentage of the plain turn's.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from bench import report
from bench.scenarios import Scenario
from nanobot.testing.process import UpstreamProcess


def _tool(name: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": list(properties)},
        },
    }


# What an agent SDK typically sends: small schemas with descriptions.
TOOLS = [
    _tool("get_weather", "The current weather in a city.", {"city": {"type": "string", "description": "City name"}}),
    _tool(
        "set_light",
        "Turn a light on or off.",
        {"room": {"type": "string"}, "on": {"type": "boolean"}, "brightness": {"type": "integer"}},
    ),
    _tool("search_docs", "Search the user's documents.", {"query": {"type": "string"}, "limit": {"type": "integer"}}),
]

PLAIN, TOOLS_LABEL = "server", "server+3tools"


def run(runner: Any, sc: Scenario, up: UpstreamProcess) -> tuple[dict[str, Any], dict[str, Any]]:
    from bench.runner import Target

    srv = runner._server(up)
    raws: dict[str, list[dict[str, Any]]] = {PLAIN: [], TOOLS_LABEL: []}
    try:
        target = Target("server", srv.url, srv.pid, upstream_pid=up.pid)
        runner._warm_up(target, sc)
        runner._measure(sc, target, tools=TOOLS, warm=True)  # the tools' path warmed too
        kinds: list[tuple[str, list[dict[str, Any]] | None]] = [(PLAIN, None), (TOOLS_LABEL, TOOLS)]
        for index in range(sc.rounds):
            for label, tools in kinds if index % 2 == 0 else kinds[::-1]:
                raws[label].append(runner._measure(sc, target, tools=tools))
    finally:
        runner._stop_server(srv)
    results = {name: report.summarize(r, sc.clients) for name, r in raws.items()}
    runner.log(f"  {sc.name}: {sc.rounds} paired rounds done")
    return results, overhead(raws[PLAIN], raws[TOOLS_LABEL], sc.clients)


def overhead(plain: list[dict[str, Any]], tools: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    """The median paired (tools - plain) CPU per request, in us and in % of the plain turn's."""
    per = {
        name: [report.summarize([raw], clients).get("cpu_per_req_us") for raw in raws]
        for name, raws in (("plain", plain), ("tools", tools))
    }
    pairs = [(a, b) for a, b in zip(per["plain"], per["tools"], strict=False) if a is not None and b is not None]
    extra: dict[str, Any] = {"round_cpu_per_req_us": per}
    if not pairs:
        return extra
    diffs = [b - a for a, b in pairs]
    middle = statistics.median(diffs)
    base = statistics.median(a for a, _ in pairs)
    extra["client_tools_cost_us"] = round(middle, 1)
    extra["client_tools_overhead_pct"] = round(100 * middle / base, 2)
    if len(diffs) > 1:
        mad = statistics.median(abs(d - middle) for d in diffs)
        extra["noise_pct"] = round(100 * 1.4826 * mad / math.sqrt(len(diffs)) / base, 2)
    return extra
