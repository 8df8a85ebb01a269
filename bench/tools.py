"""What tools cost the server: CPU per ``read_file`` call, ``/health`` under ``exec``.

Run: ``python -m bench.tools [--turns 300] [--clients 8] [--execs 8]
[--exec-seconds 4] [--quick] [--json FILE]``.

1. Three kinds of turns against one server, ``--turns`` each from
   ``--clients`` threads, the server's CPU (process tree) measured around
   each: plain turns (one model call), turns whose model calls an unknown
   tool (two model calls, a tool step that does nothing), and turns whose
   model calls ``read_file`` on a file of the same length as that error
   (the same two calls and text, plus the file read). The last two differ by
   the read itself: the CPU per call.
2. ``/health`` probed at 50 Hz on its own connection, first idle, then while
   ``--execs`` turns each run an ``exec`` that floods its output pipe
   (``timeout N yes``) in the bubblewrap sandbox: the latency the event loop
   keeps while it reads every command's output.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import shutil
import sys
import threading
import time
import uuid
from typing import Any

from bench.procstat import tree_cpu
from bench.report import pct
from nanobot.testing.process import UpstreamProcess
from nanobot.testing.server_process import ServerProcess, merge, upstream_config

CHAT = "/v1/chat/completions"


def post(conn: http.client.HTTPConnection, text: str, session: str) -> dict[str, Any]:
    body = json.dumps({"messages": [{"role": "user", "content": text}], "session_id": session})
    conn.request("POST", CHAT, body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
    return json.loads(data)


def run_turns(server: ServerProcess, text: str, turns: int, clients: int) -> float:
    """Server CPU seconds per turn for ``turns`` turns of ``text``."""
    per_client = max(1, turns // clients)

    def client(_: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        session = uuid.uuid4().hex  # a short history: the turn, not the window, is measured
        for i in range(per_client):
            post(conn, text, f"{session}-{i % 4}")
        conn.close()

    before = tree_cpu(server.pid)
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return (tree_cpu(server.pid) - before) / (per_client * clients)


class HealthProbe:
    """``GET /health`` at ``hz`` on one keep-alive connection, in a thread."""

    def __init__(self, port: int, hz: float = 50.0) -> None:
        self.port, self.interval = port, 1.0 / hz
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self._stop.is_set():
            started = time.perf_counter()
            conn.request("GET", "/health")
            conn.getresponse().read()
            self.samples.append((time.perf_counter() - started) * 1000)
            self._stop.wait(max(0.0, self.interval - (time.perf_counter() - started)))
        conn.close()

    def measure(self, seconds: float) -> dict[str, float | None]:
        self.samples = []
        self._thread.start()
        time.sleep(seconds)
        return self.finish()

    def finish(self) -> dict[str, float | None]:
        self._stop.set()
        self._thread.join(timeout=30)
        s = sorted(self.samples)
        return {"n": len(s), "p50_ms": pct(s, 0.50), "p99_ms": pct(s, 0.99), "max_ms": s[-1] if s else 0.0}


def health_during_execs(server: ServerProcess, execs: int, seconds: float) -> dict[str, Any]:
    idle = HealthProbe(server.port).measure(min(3.0, seconds))
    probe = HealthProbe(server.port)
    command = json.dumps({"command": f"timeout {seconds:g} yes nanobot-bench-output"})
    before = tree_cpu(server.pid)
    probe._thread.start()
    with concurrent.futures.ThreadPoolExecutor(execs) as pool:

        def one(_: int) -> str:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
            try:
                return post(conn, f"#tool:exec {command}", uuid.uuid4().hex)["choices"][0]["message"]["content"]
            finally:
                conn.close()

        replies = list(pool.map(one, range(execs)))
    busy = probe.finish()
    ok = sum("Exit code: 124" in r for r in replies)  # `timeout` ended each flood
    return {"idle": idle, "during": busy, "execs_ok": ok, "server_cpu_s": tree_cpu(server.pid) - before}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tools", description=__doc__.split("\n\n")[0])
    p.add_argument("--turns", type=int, default=300, help="turns per kind (default 300)")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--execs", type=int, default=8, help="concurrent exec calls (default 8)")
    p.add_argument("--exec-seconds", type=float, default=4.0, help="how long each exec floods its output")
    p.add_argument("--quick", action="store_true", help="40 turns, 2 s of exec")
    p.add_argument("--json", metavar="FILE", help="write the figures here")
    args = p.parse_args(argv)
    if args.quick:
        args.turns, args.exec_seconds = 40, 2.0
    out: dict[str, Any] = {}
    with UpstreamProcess.start(record=False) as upstream:
        config = merge(upstream_config(upstream.url), {"api": {"timeout": 600}})
        with ServerProcess(config) as server:
            # As long as the unknown tool's error, so both turns carry the same text.
            (server.workspace / "bench.txt").write_text("Error: unknown tool 'no_such_tool' (a file)")
            run_turns(server, "warm up", 16, args.clients)
            run_turns(server, '#tool:read_file {"path":"bench.txt"}', 16, args.clients)
            plain = run_turns(server, "hello", args.turns, args.clients)
            unknown = run_turns(server, "#tool:no_such_tool", args.turns, args.clients)
            read = run_turns(server, '#tool:read_file {"path":"bench.txt"}', args.turns, args.clients)
            out["cpu_us"] = {
                "plain_turn": plain * 1e6,
                "unknown_tool_turn": unknown * 1e6,
                "read_file_turn": read * 1e6,
                "per_read_file_call": (read - unknown) * 1e6,
            }
        if shutil.which("bwrap"):
            config = merge(config, {"tools": {"exec": {"enabled": True, "timeout": args.exec_seconds + 30}}})
            with ServerProcess(config) as server:
                out["health_during_exec"] = health_during_execs(server, args.execs, args.exec_seconds)
    cpu = out["cpu_us"]
    print(
        f"server CPU per turn (us): plain {cpu['plain_turn']:.0f}, unknown tool {cpu['unknown_tool_turn']:.0f}, "
        f"read_file {cpu['read_file_turn']:.0f}; per read_file call: {cpu['per_read_file_call']:.0f}"
    )
    if "health_during_exec" in out:
        h = out["health_during_exec"]
        idle = h["idle"]
        print(f"/health idle: p50 {idle['p50_ms']:.2f} ms, p99 {idle['p99_ms']:.2f} ms ({idle['n']} probes)")
        print(
            f"/health during {args.execs} exec floods: p50 {h['during']['p50_ms']:.2f} ms, "
            f"p99 {h['during']['p99_ms']:.2f} ms, max {h['during']['max_ms']:.2f} ms ({h['during']['n']} probes); "
            f"{h['execs_ok']}/{args.execs} commands ended by their own timeout; server CPU {h['server_cpu_s']:.2f} s"
        )
    else:
        print("exec: bubblewrap is not installed; the /health figure was skipped")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
