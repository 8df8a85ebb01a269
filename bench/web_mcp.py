"""What the web and MCP tools cost the server: ``/health`` during big fetches, CPU per MCP call.

Run: ``python -m bench.web_mcp [--fetches 8] [--rounds 3] [--calls 200] [--clients 8] [--json FILE]``.

1. ``/health`` probed at 50 Hz on its own connection, idle and then while
   ``--fetches`` turns at a time each call ``web_fetch`` on a 2 MB page of a
   local site (``--rounds`` waves): the page is read, decoded and turned into
   text in the extraction workers, so the event loop should barely notice.
2. CPU per MCP call over stdio: ``--calls`` turns whose model calls an
   unknown tool, then as many whose model calls ``mcp_t_echo`` of the SDK
   test server (the same two model calls, plus the MCP round trip). The
   difference of the server's own CPU per turn is what one call costs it;
   the MCP server process's CPU is reported apart.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.procstat import descendants, own_cpu, proc_cpu
from bench.tools import HealthProbe, post
from nanobot.testing.process import UpstreamProcess
from nanobot.testing.server_process import ROOT, ServerProcess, merge, upstream_config
from nanobot.testing.website import Site

TEST_SERVER = str(Path(ROOT) / "tests" / "mcp_test_server.py")


def fetch_waves(server: ServerProcess, url: str, fetches: int, rounds: int) -> dict[str, Any]:
    """``rounds`` waves of ``fetches`` concurrent web_fetch turns, /health probed throughout."""
    call = "#tool:web_fetch " + json.dumps({"url": url})

    def one(_: int) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        try:
            reply = post(conn, call, uuid.uuid4().hex)["choices"][0]["message"]["content"]
            # The page comes framed as untrusted data (nanobot.agent.untrusted).
            return reply.startswith("tool result: <<untrusted-data id=") and "from=web_fetch>>\nURL: " in reply
        finally:
            conn.close()

    probe = HealthProbe(server.port)
    probe._thread.start()
    started = time.perf_counter()
    ok = 0
    with concurrent.futures.ThreadPoolExecutor(fetches) as pool:
        for _ in range(rounds):
            ok += sum(pool.map(one, range(fetches)))
    wall = time.perf_counter() - started
    return {"health": probe.finish(), "fetches_ok": ok, "fetches": fetches * rounds, "wall_s": wall}


def mcp_server_pids(server_pid: int) -> list[int]:
    return [p for p in descendants(server_pid) if TEST_SERVER.encode() in Path(f"/proc/{p}/cmdline").read_bytes()]


def turns_cpu(server: ServerProcess, text: str, turns: int, clients: int) -> tuple[float, float]:
    """(server's own CPU s per turn, MCP servers' CPU s per turn) over ``turns`` turns of ``text``."""
    per_client = max(1, turns // clients)
    mcp = mcp_server_pids(server.pid)

    def client(_: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        session = uuid.uuid4().hex
        for i in range(per_client):
            post(conn, text, f"{session}-{i % 4}")
        conn.close()

    own, other = own_cpu(server.pid), sum(proc_cpu(p) for p in mcp)
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    n = per_client * clients
    return (own_cpu(server.pid) - own) / n, (sum(proc_cpu(p) for p in mcp) - other) / n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.web_mcp", description=__doc__.split("\n\n")[0])
    p.add_argument("--fetches", type=int, default=8, help="concurrent web_fetch turns (default 8)")
    p.add_argument("--rounds", type=int, default=3, help="waves of fetches (default 3)")
    p.add_argument("--page-bytes", type=int, default=2 * 1024 * 1024)
    p.add_argument("--calls", type=int, default=200, help="turns per kind for the MCP figure (default 200)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--json", metavar="FILE", help="write the figures here")
    args = p.parse_args(argv)
    out: dict[str, Any] = {}
    with UpstreamProcess.start(record=False) as upstream, Site(big_bytes=args.page_bytes) as site:
        config = merge(
            upstream_config(upstream.url),
            {
                "api": {"timeout": 600},
                "tools": {
                    "ssrfWhitelist": ["127.0.0.0/8"],
                    "web": {"fetch": {"maxBytes": args.page_bytes + 65536}},
                    "mcpServers": {"t": {"command": sys.executable, "args": [TEST_SERVER]}},
                },
            },
        )
        with ServerProcess(config) as server:
            out["health_idle"] = HealthProbe(server.port).measure(3.0)
            fetch_waves(server, site.url + "/big", 2, 1)  # start the extraction workers
            out["during_fetches"] = fetch_waves(server, site.url + "/big", args.fetches, args.rounds)
            deadline = time.monotonic() + 30
            while not mcp_server_pids(server.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            echo = '#tool:mcp_t_echo {"text": "x"}'
            turns_cpu(server, echo, 16, args.clients)  # warm
            unknown = turns_cpu(server, "#tool:no_such_tool", args.calls, args.clients)[0]
            mcp_own, mcp_child = turns_cpu(server, echo, args.calls, args.clients)
            out["mcp_cpu_us"] = {
                "unknown_tool_turn": unknown * 1e6,
                "mcp_turn": mcp_own * 1e6,
                "per_call_server": (mcp_own - unknown) * 1e6,
                "per_call_mcp_server": mcp_child * 1e6,
            }
    idle, during = out["health_idle"], out["during_fetches"]
    h = during["health"]
    print(f"/health idle: p50 {idle['p50_ms']:.2f} ms, p99 {idle['p99_ms']:.2f} ms ({idle['n']} probes)")
    print(
        f"/health during {args.fetches} concurrent web_fetch of {args.page_bytes / 1048576:.1f} MB pages "
        f"({args.rounds} waves, {during['fetches_ok']}/{during['fetches']} ok, {during['wall_s']:.1f} s): "
        f"p50 {h['p50_ms']:.2f} ms, p99 {h['p99_ms']:.2f} ms, max {h['max_ms']:.2f} ms ({h['n']} probes)"
    )
    m = out["mcp_cpu_us"]
    print(
        f"server CPU per turn (us): unknown tool {m['unknown_tool_turn']:.0f}, MCP stdio call {m['mcp_turn']:.0f}; "
        f"per MCP call: server {m['per_call_server']:.0f} us, the MCP server process {m['per_call_mcp_server']:.0f} us"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
