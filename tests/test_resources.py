"""What a hostile or broken client may cost the server: memory, tasks, slots, loop time.

Each test drives a real server process over real sockets and reads its cost
from the outside (``/proc`` for memory, ``/metrics`` for the task gauge).
"""

from __future__ import annotations

import random
import socket
import sys
import threading
import time
from typing import Any

import orjson
import pytest
import requests
from common import CHAT, MIB
from fault_helpers import proc_status_kb, recv_all, status_of, wait_for
from test_metrics import sample

from stages import decode


def tasks(server) -> float:
    return sample(requests.get(server.url + "/metrics", timeout=10).text, "nanobot_asyncio_tasks")


def in_flight(server) -> float:
    return sample(requests.get(server.url + "/metrics", timeout=10).text, "nanobot_requests_in_flight")


def head(length: int, content_type: str = "application/json") -> bytes:
    return (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _partial(port: int, declared: int, sent: int, content_type: str = "application/json") -> socket.socket:
    """A connection that sent its headers and ``sent`` bytes of a ``declared``-byte body."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(head(declared, content_type))
    filler = (
        b'{"messages":[{"role":"user","content":"'
        if content_type == "application/json"
        else b'--b\r\nContent-Disposition: form-data; name="files"; filename="a.txt"\r\n\r\n'
    )
    s.sendall(filler + b"a" * (sent - len(filler)))
    return s


# --------------------------------------------------------------------------------- dropped uploads


def _dropped_round(server, count: int, cut_by_server: bool) -> None:
    """``count`` uploads of 8 MiB out of a declared 20 MiB, then dropped (by us or by api.bodyTimeout)."""
    socks = []
    for i in range(count):
        ctype = "application/json" if i % 2 == 0 else "multipart/form-data; boundary=b"
        socks.append(_partial(server.port, 20 * MIB, 8 * MIB, ctype))
    if cut_by_server:
        for s in socks:  # the server hangs up once api.bodyTimeout passes
            assert recv_all(s, timeout=10) is not None
    # Give the server time to see every close before measuring.
    time.sleep(0.3)
    for s in socks:
        s.close()
    wait_for(lambda: requests.get(server.url + "/health", timeout=5).ok)


@pytest.mark.parametrize("cut_by_server", [False, True], ids=["client-closes", "body-timeout"])
def test_dropped_uploads_leave_no_memory_or_tasks(make_server, cut_by_server):
    server = make_server({"api": {"bodyTimeout": 1}})
    rss, gauge = [], []
    for _ in range(5):
        _dropped_round(server, 6, cut_by_server)
        time.sleep(0.5)
        rss.append(proc_status_kb(server.pid, "VmRSS"))
        gauge.append(tasks(server))
    assert gauge[-1] <= gauge[0], f"tasks after each round: {gauge}"
    # A round sends 48 MiB; kept, that is 48 MiB more each round. What is
    # freed leaves some heap fragmentation behind (a few MiB a round, until
    # the collector runs), far from one round's worth.
    payload_kb = 6 * 8 * 1024
    assert rss[-1] - rss[1] < 2 * payload_kb, f"RSS after each round (KiB): {rss}"
    assert in_flight(server) == 0
    r = requests.post(server.url + CHAT, json={"messages": [{"role": "user", "content": "still here"}]}, timeout=10)
    assert r.status_code == 200


# --------------------------------------------------------------------------------- stalled uploads


def test_stalled_uploads_do_not_take_request_slots(make_server):
    """50 clients that send headers and one byte hold no api.maxConcurrentRequests slot."""
    server = make_server({"api": {"maxConcurrentRequests": 2}})
    stalled = [_partial(server.port, 1000, 1 + 39) for _ in range(50)]
    try:
        time.sleep(0.5)
        for i in range(4):
            r = requests.post(
                server.url + CHAT, json={"messages": [{"role": "user", "content": f"hi {i}"}]}, timeout=10
            )
            assert r.status_code == 200, r.text
        assert in_flight(server) == 0
    finally:
        for s in stalled:
            s.close()


def test_bodies_in_flight_are_bounded_by_bytes(make_server):
    """Past api.maxBodyBytesInFlight the body that would cross it is 503; the bytes come back when it ends."""
    server = make_server({"api": {"maxBodyBytes": 2 * MIB, "maxBodyBytesInFlight": 3 * MIB}})
    first = _partial(server.port, 2 * MIB, 2 * MIB - 10)
    try:
        time.sleep(0.3)
        second = _partial(server.port, 2 * MIB, 100 * 1024)
        with second:
            second.sendall(b"a" * (MIB + 100 * 1024))
            raw = recv_all(second, timeout=5)
        assert status_of(raw) == 503, raw[:300]
        assert b'"overloaded_error"' in raw and b"maxBodyBytesInFlight" in raw and b"Retry-After: 1" in raw
        # Small requests still fit beside the stalled one.
        r = requests.post(server.url + CHAT, json={"messages": [{"role": "user", "content": "small"}]}, timeout=10)
        assert r.status_code == 200
    finally:
        first.close()
    # The stalled body's bytes are given back once its client leaves.
    time.sleep(0.3)
    third = _partial(server.port, 2 * MIB, 2 * MIB - 10)
    with third:
        third.sendall(b'a"}]}' + b" " * 5)
        raw = recv_all(third, timeout=10)
    assert status_of(raw) == 200, raw[:300]


# ------------------------------------------------------------------------------ big bodies, busy loop


def _health_latencies(server, busy: threading.Event) -> list[float]:
    out = []
    while not busy.is_set():
        t0 = time.monotonic()
        requests.get(server.url + "/health", timeout=30)
        out.append(time.monotonic() - t0)
        time.sleep(0.05)
    return out


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_a_huge_echo_request_does_not_block_health(make_server, stream):
    """30 MB through the echo provider: the loop keeps answering /health meanwhile."""
    server = make_server({"api": {"timeout": 120}})
    words = ("lorem ipsum dolor sit amet consectetur adipiscing elit " * 600_000)[: 30 * 1000 * 1000]
    # Encoded before the probe starts: a 30 MB dumps in this process would hold up the probe itself.
    body = orjson.dumps({"messages": [{"role": "user", "content": words}], "stream": stream})
    done = threading.Event()
    latencies: list[float] = []
    probe = threading.Thread(target=lambda: latencies.extend(_health_latencies(server, done)))
    probe.start()
    t0 = time.monotonic()
    try:
        r = requests.post(server.url + CHAT, data=body, headers={"Content-Type": "application/json"}, timeout=120)
    finally:
        done.set()
        probe.join()
    elapsed = time.monotonic() - t0
    assert r.status_code == 200
    if stream:
        assert r.text.endswith("data: [DONE]\n\n")
    else:
        reply = r.json()["choices"][0]["message"]["content"]
        assert reply == words.strip() and r.json()["usage"]["completion_tokens"] == len(words.split())
    assert len(latencies) >= 3, (elapsed, latencies)
    assert max(latencies) < 0.5, f"/health took up to {max(latencies):.2f} s during a {elapsed:.1f} s request"


# ----------------------------------------------------------------------------- JSON container count


def test_brackets_inside_strings_do_not_count(make_server):
    server = make_server({})
    text = "{" * 20_000 + " [" * 20_000 + ' "{[\\" '
    r = requests.post(server.url + CHAT, json={"messages": [{"role": "user", "content": text}]}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == text.strip()
    # Real containers past the limit are still refused.
    junk = [{} for _ in range(decode.MAX_JSON_CONTAINERS + 1)]
    r = requests.post(
        server.url + CHAT, json={"messages": [{"role": "user", "content": "x"}], "junk": junk}, timeout=30
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def _containers_of(value) -> int:
    if isinstance(value, dict):
        return 1 + sum(_containers_of(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_containers_of(v) for v in value)
    return 0


def _random_text(rng: random.Random) -> str:
    return "".join(rng.choice('{[]}"\\/ab\n\t\u00e9') for _ in range(rng.randrange(8)))


def _random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(6 if depth < 5 else 3)
    if kind == 0:
        return _random_text(rng)
    if kind == 1:
        return rng.choice([1, 2.5, None, True, False])
    if kind == 2:
        return rng.choice(['\\"', "\\", '"', '{"', "[\\", ""])
    if kind in (3, 4):
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {_random_text(rng): _random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def test_container_count_matches_a_parser():
    rng = random.Random(7)
    for _ in range(3000):
        value = _random_json(rng)
        body = orjson.dumps(value)
        assert decode.count_containers(body, limit=10**9) == _containers_of(orjson.loads(body)), body


def _python_lines(fn: Any, *args: Any) -> int:
    """How many lines of ``fn``'s own code ran for ``fn(*args)`` (its Python steps, not its C passes)."""
    code, lines = fn.__code__, 0

    def trace(frame: Any, event: str, arg: Any) -> Any:
        nonlocal lines
        if frame.f_code is not code:
            return None
        if event == "line":
            lines += 1
        return trace

    sys.settrace(trace)
    try:
        fn(*args)
    finally:
        sys.settrace(None)
    return lines


def test_container_count_costs_whole_buffer_passes_only():
    """No Python step per byte or per string: on 30 MB of the worst shapes the counter's own
    lines run a bounded number of times (about 4 per container up to the limit), counted, not timed."""
    shapes = {
        "brackets in one string": b'{"a":"' + b"{[" * 15_000_000 + b'"}',
        "millions of strings": b'["' + b'{","' * 4_000_000 + b'"]',
        "escapes": b'["' + b'\\\\\\"{' * 6_000_000 + b'"]',
        "real containers": b"[" + b"{}," * 10_000_000 + b"{}]",
    }
    bound = 8 * decode.MAX_JSON_CONTAINERS
    for name, body in shapes.items():
        assert _python_lines(decode.count_containers, body) < bound, name
        count = decode.count_containers(body)
        assert (count > decode.MAX_JSON_CONTAINERS) == (name == "real containers"), (name, count)
