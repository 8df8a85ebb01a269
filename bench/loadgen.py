"""The load generator process: `python -m bench.loadgen SPEC` (or `-` for stdin).

SPEC is a JSON object (see `Spec`); the result is one JSON line on stdout
with the counts, the raw samples (latencies, time to first token, gaps
between content chunks, in seconds) and the generator's own CPU seconds, so
a reader can check it was not the bottleneck. With `"sync": true` it first
opens all its connections, prints `CONNECTED <n>` and waits for a `GO` line
on stdin (several generator processes then start together); a `STOP` line
ends a closed-loop run early (used to stop the /health probe).

Kinds: `chat` (JSON chat completions, streamed or not), `upload` (multipart
chat completions with one file), `probe` (GET `path` at `hz` per second on
one connection). Each client runs its requests back to back on its own
keep-alive connection until `duration` is over (0: exactly one request
each) or `requests` were issued in total.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

import orjson

from bench.httpconn import Conn, RequestFailed, Response
from bench.payloads import build_request

_CONNECT_PARALLEL = 200  # connections opened at once (a SYN storm is not the test)
_ERROR_SAMPLES = 5


@dataclass
class Spec:
    url: str
    kind: str = "chat"  # chat | upload | probe
    path: str = "/v1/chat/completions"
    stream: bool = False
    model: str | None = "scripted"
    clients: int = 1
    duration: float = 0.0
    requests: int | None = None
    timeout: float = 60.0
    text: str = "hello bench"
    session_prefix: str = ""
    send_session: bool = True
    client_offset: int = 0
    api_key: str | None = None
    file: str | None = None
    hz: float = 50.0
    sync: bool = False
    tools: list[dict[str, Any]] | None = None  # chat: client function tools offered with each request
    api: str = "chat"  # chat: /v1/chat/completions bodies; responses: /v1/responses bodies and events

    @classmethod
    def from_json(cls, raw: str | bytes) -> Spec:
        data = orjson.loads(raw)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown spec keys: {sorted(unknown)}")
        return cls(**data)


@dataclass
class Tally:
    """Everything the clients observed, merged across clients."""

    started: int = 0
    completed: int = 0
    done: int = 0
    tokens: int = 0
    completion_tokens: int = 0
    reconnects: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: dict[str, str] = field(default_factory=dict)
    latency: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    first_start: float = 0.0
    last_end: float = 0.0

    def error(self, reason: str, detail: str = "") -> None:
        self.errors[reason] += 1
        if reason not in self.error_samples and len(self.error_samples) < _ERROR_SAMPLES:
            self.error_samples[reason] = detail[:300]


class Runner:
    """Opens the connections, runs the clients, collects a `Tally`."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        parts = urlsplit(spec.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.tally = Tally()
        self.stopping = False
        self.deadline = float("inf")
        self.issued = 0
        responses = spec.api == "responses"
        self.body_marker = b'"output"' if responses else b'"choices"'
        self.end_marker = "response.completed" if responses else "[DONE]"

    async def connect_all(self) -> list[Conn | None]:
        gate = asyncio.Semaphore(_CONNECT_PARALLEL)

        async def one() -> Conn | None:
            async with gate:
                try:
                    return await Conn.open(self.host, self.port)
                except OSError as exc:
                    self.tally.error("connect", str(exc))
                    return None

        count = 1 if self.spec.kind == "probe" else self.spec.clients
        return list(await asyncio.gather(*(one() for _ in range(count))))

    def _may_start(self, first: bool) -> bool:
        spec = self.spec
        if spec.requests is not None and self.issued >= spec.requests:
            return False
        if first:
            return True
        if self.stopping or spec.duration <= 0:
            return False
        return time.perf_counter() < self.deadline

    async def client(self, index: int, conn: Conn | None) -> None:
        spec, tally = self.spec, self.tally
        head, body = build_request(spec, f"{self.host}:{self.port}", spec.client_offset + index)
        period = 1.0 / spec.hz if spec.kind == "probe" else 0.0
        next_at = time.perf_counter()
        first = True
        while self._may_start(first):
            first = False
            self.issued += 1
            if conn is None or conn.closed:
                try:
                    conn = await Conn.open(self.host, self.port)
                    tally.reconnects += 1
                except OSError as exc:
                    tally.started += 1
                    tally.error("connect", str(exc))
                    await asyncio.sleep(0.05)
                    continue
            tally.started += 1
            try:
                resp = await conn.request(head, body, spec.stream, spec.timeout, spec.api)
            except RequestFailed as exc:
                tally.error(str(exc).split(":")[0], str(exc))
                continue
            self._record(resp)
            if period:
                next_at += period
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        if conn is not None:
            conn.close()

    def _record(self, resp: Response) -> None:
        tally = self.tally
        tally.statuses[resp.status] += 1
        tally.last_end = max(tally.last_end, resp.t_end)
        if resp.status != 200:
            tally.error(f"HTTP {resp.status}", bytes(resp.body).decode("utf-8", "replace"))
            return
        if self.spec.stream:
            tally.tokens += resp.tokens
            tally.completion_tokens += resp.completion_tokens
            if resp.ttft is not None:
                tally.ttft.append(resp.ttft)
            tally.gaps.extend(resp.gaps)
            if resp.sse_error:
                tally.error(resp.sse_error, bytes(resp.body).decode("utf-8", "replace"))
                return
            if not resp.done:
                tally.error(
                    f"stream ended without {self.end_marker}", bytes(resp.body[-300:]).decode("utf-8", "replace")
                )
                return
            tally.done += 1
        elif self.spec.kind != "probe" and self.body_marker not in resp.body:
            tally.error(f"200 without {self.body_marker.decode()}", bytes(resp.body).decode("utf-8", "replace"))
            return
        tally.completed += 1
        tally.latency.append(resp.t_end - resp.t0)

    async def run(self, go: asyncio.Event) -> dict[str, Any]:
        conns = await self.connect_all()
        if self.spec.sync:
            print(f"CONNECTED {sum(c is not None for c in conns)}", flush=True)
        await go.wait()
        cpu0, t0 = _cpu(), time.perf_counter()
        self.tally.first_start = t0
        self.deadline = t0 + self.spec.duration
        await asyncio.gather(*(self.client(i, c) for i, c in enumerate(conns)))
        wall = time.perf_counter() - t0
        return self._result(wall, _cpu() - cpu0)

    def stop(self) -> None:
        self.stopping = True

    def _result(self, wall: float, cpu: float) -> dict[str, Any]:
        t = self.tally
        return {
            "kind": self.spec.kind,
            "stream": self.spec.stream,
            "clients": self.spec.clients,
            "started": t.started,
            "completed": t.completed,
            "done": t.done,
            "tokens": t.tokens,
            "completion_tokens": t.completion_tokens,
            "errors": sum(t.errors.values()),
            "error_counts": dict(t.errors),
            "error_samples": t.error_samples,
            "statuses": {str(k): v for k, v in t.statuses.items()},
            "reconnects": t.reconnects,
            "wall": wall,
            "active": (t.last_end - t.first_start) if t.last_end else wall,
            "cpu": cpu,
            "latency": t.latency,
            "ttft": t.ttft,
            "gaps": t.gaps,
        }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _watch_stdin(loop: asyncio.AbstractEventLoop, go: asyncio.Event, runner: Runner) -> None:
    """Thread body: `GO` starts the run, `STOP` (or EOF after GO) ends it."""
    for line in sys.stdin:
        word = line.strip().upper()
        if word == "GO":
            loop.call_soon_threadsafe(go.set)
        elif word == "STOP":
            loop.call_soon_threadsafe(runner.stop)
    loop.call_soon_threadsafe(go.set)
    loop.call_soon_threadsafe(runner.stop)


async def amain(spec: Spec) -> dict[str, Any]:
    runner = Runner(spec)
    go = asyncio.Event()
    if spec.sync:
        loop = asyncio.get_running_loop()
        threading.Thread(target=_watch_stdin, args=(loop, go, runner), daemon=True).start()
    else:
        go.set()
    return await runner.run(go)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    raw = sys.stdin.readline() if args[0] == "-" else args[0]
    spec = Spec.from_json(raw)
    _raise_fd_limit()
    result = asyncio.run(amain(spec))
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
