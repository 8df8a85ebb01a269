"""``api.workers: 2``: one port, two processes, sessions still one turn at a time.

A worker is told apart by the random prefix of the ids it hands out (the
first 16 hex digits of a completion id). A keep-alive connection stays with
the worker that accepted it, so the tests open connections until each
worker holds some, then drive one session through both.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
import requests
from common import CHAT, run_nanobot
from servers import ServerProcess, upstream_config

from nanobot.config import Config
from nanobot.server import app
from nanobot.testing.process import UpstreamProcess, children


def alive(pid: int) -> bool:
    """Running (a zombie waiting for whoever adopted it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"


def ask(conn: requests.Session, server: ServerProcess, text: str, sid: str) -> tuple[str, requests.Response]:
    """One turn; the worker that answered (its id prefix) and the response."""
    r = conn.post(
        server.url + CHAT, json={"messages": [{"role": "user", "content": text}], "session_id": sid}, timeout=30
    )
    assert r.status_code == 200, r.text
    return r.json()["id"].removeprefix("chatcmpl-")[:16], r


def pinned(server: ServerProcess, per_worker: int) -> dict[str, list[requests.Session]]:
    """Keep-alive connections, ``per_worker`` on each of the two workers."""
    by_worker: dict[str, list[requests.Session]] = {}
    for _ in range(200):
        conn = requests.Session()
        worker, _ = ask(conn, server, "hello", uuid.uuid4().hex)
        group = by_worker.setdefault(worker, [])
        if len(group) < per_worker:
            group.append(conn)
        else:
            conn.close()
        if len(by_worker) == 2 and all(len(g) == per_worker for g in by_worker.values()):
            return by_worker
    raise AssertionError(f"connections did not reach both workers: {list(by_worker)}")


def replace_a_worker(srv: ServerProcess) -> None:
    """SIGKILL one worker and wait until the supervisor has a new one serving."""
    victim = min(children(srv.pid))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = children(srv.pid)
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.1)
    assert len(children(srv.pid)) == 2 and victim not in children(srv.pid), srv.stderr_text()


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamProcess]:
    with UpstreamProcess.start() as up:
        yield up


@pytest.fixture(scope="module")
def server(upstream: UpstreamProcess) -> Iterator[ServerProcess]:
    cfg = upstream_config(upstream.url)
    cfg["api"] = {"workers": 2}
    with ServerProcess(cfg) as srv:
        yield srv


def test_two_workers_serve_one_port_with_distinct_ids(server: ServerProcess) -> None:
    """Two worker processes answer on one port; their ids never collide."""
    assert len(children(server.pid)) == 2
    conns = pinned(server, 1)
    ids = set()
    for conn in (c for group in conns.values() for c in group):
        for _ in range(20):
            ids.add(ask(conn, server, "hi", uuid.uuid4().hex)[1].json()["id"])
    assert len(ids) == 40


def test_connections_opened_together_are_spread_over_the_workers(server: ServerProcess) -> None:
    """A burst of new connections does not all land on the worker that wakes first.

    Both workers are paused while 32 connections are opened and their
    requests sent; then one worker goes on, and the other a moment later.
    From one shared socket the first took every waiting connection; with a
    socket per worker the kernel has already split them by address, at
    random: a worker gets fewer than 4 of 32 about once in a million runs.
    """
    workers = sorted(children(server.pid))
    body = json.dumps({"messages": [{"role": "user", "content": "hello"}]})
    conns = []
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        for _ in range(32):
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            conn.request("POST", CHAT, body=body, headers={"Content-Type": "application/json"})
            conns.append(conn)
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.5)
    counts: dict[str, int] = {}
    for conn in conns:
        response = conn.getresponse()
        assert response.status == 200
        worker = json.loads(response.read())["id"].removeprefix("chatcmpl-")[:16]
        counts[worker] = counts.get(worker, 0) + 1
        conn.close()
    assert len(counts) == 2 and min(counts.values()) >= 4, counts


@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_held_by_workers_is_refused_to_another_server(server: ServerProcess, workers: int) -> None:
    """Sharing the port between workers does not let a second server share it too."""
    cfg = json.loads(server.config_path.read_text())
    cfg["api"] = {"port": server.port, "workers": workers}
    path = server.tmp / f"second-{workers}.json"
    path.write_text(json.dumps(cfg))
    p = run_nanobot("serve", "--config", str(path))
    assert p.returncode == 2 and f"cannot listen on 127.0.0.1:{server.port}" in p.stderr, p.stderr
    assert requests.get(server.url + "/health", timeout=5).status_code == 200


def test_a_session_keeps_its_history_across_workers(server: ServerProcess, upstream: UpstreamProcess) -> None:
    """Turns of one session alternate between workers; each sees every earlier turn."""
    alternate_turns(server, upstream, 8)


def alternate_turns(server: ServerProcess, upstream: UpstreamProcess, turns: int) -> None:
    """One session's turns, on each worker in turn; each must see every earlier turn."""
    (a,), (b,) = pinned(server, 1).values()
    sid = uuid.uuid4().hex
    for i in range(turns):
        upstream.clear()
        ask(a if i % 2 == 0 else b, server, f"turn {i}", sid)
        users = [m["content"] for m in upstream.requests()[-1]["body"]["messages"] if m["role"] == "user"]
        assert users == [f"turn {j}" for j in range(i + 1)]


def test_turns_of_one_session_never_overlap_across_workers(server: ServerProcess, upstream: UpstreamProcess) -> None:
    """Concurrent turns of one session, three on each worker, run one at a time."""
    conns = [c for group in pinned(server, 3).values() for c in group]
    sid = uuid.uuid4().hex
    upstream.clear()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        t0 = time.monotonic()
        futures = [pool.submit(ask, conn, server, f"#slow:300 turn{i}", sid) for i, conn in enumerate(conns)]
        workers = {f.result()[0] for f in futures}
        elapsed = time.monotonic() - t0
    assert len(workers) == 2
    assert elapsed >= 6 * 0.3  # one after another, never two at once
    # Each turn saw all the turns finished before it: 0, 1, ..., 5 earlier turns.
    seen = sorted(sum(m["role"] == "user" for m in r["body"]["messages"]) - 1 for r in upstream.requests())
    assert seen == list(range(6))


def test_other_sessions_run_in_parallel_on_both_workers(server: ServerProcess) -> None:
    """The shared lock is per session: different sessions do not wait on each other."""
    conns = [c for group in pinned(server, 3).values() for c in group]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        t0 = time.monotonic()
        futures = [pool.submit(ask, conn, server, "#slow:600 par", uuid.uuid4().hex) for conn in conns]
        assert all(f.result()[1].status_code == 200 for f in futures)
        elapsed = time.monotonic() - t0
    assert elapsed < 6 * 0.6 / 2


def test_a_killed_worker_is_replaced_and_sigterm_stops_all(upstream: UpstreamProcess) -> None:
    """A worker that dies is replaced; SIGTERM to the server ends every worker and exits 0."""
    cfg = upstream_config(upstream.url)
    cfg["api"] = {"workers": 2}
    with ServerProcess(cfg) as srv:
        replace_a_worker(srv)
        for _ in range(10):  # whichever worker answers, it answers
            ask(requests.Session(), srv, "still there", uuid.uuid4().hex)
        workers = children(srv.pid)
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=20) == 0
        # The supervisor reaps its workers before it exits: none is left behind.
        assert not any(alive(pid) for pid in workers)


def test_workers_end_when_the_supervisor_is_killed(upstream: UpstreamProcess) -> None:
    """SIGKILL on the supervisor leaves no worker serving on its own."""
    cfg = upstream_config(upstream.url)
    cfg["api"] = {"workers": 2}
    with ServerProcess(cfg) as srv:
        workers = children(srv.pid)
        assert len(workers) == 2
        srv.proc.kill()
        srv.proc.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(alive(pid) for pid in workers):
            time.sleep(0.1)
        assert not any(alive(pid) for pid in workers)
        with pytest.raises(requests.ConnectionError):
            requests.get(srv.url + "/health", timeout=2)


@pytest.mark.parametrize("spreads", [True, False])
def test_listen_per_worker_gives_each_worker_its_own_socket_where_linux_spreads(
    monkeypatch: pytest.MonkeyPatch, spreads: bool
) -> None:
    """One port for all; a socket each with SO_REUSEPORT on Linux, one shared socket elsewhere."""
    monkeypatch.setattr(app, "_REUSE_PORT_SPREADS", spreads)
    config = Config()
    config.api.port = 0
    shards = app.listen_per_worker(config, 3)
    try:
        socks = [s for shard in shards for s in shard]
        assert len({s.getsockname()[1] for s in socks}) == 1
        if spreads:
            assert len({id(s) for s in socks}) == 3
            assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in socks)
        else:
            assert shards[0] is shards[1] is shards[2]
            assert not shards[0][0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    finally:
        for sock in {s for shard in shards for s in shard}:
            sock.close()


@pytest.mark.parametrize("replacement", ["deleted", "directory"])
def test_a_lock_file_replaced_after_start_does_not_split_the_workers(
    upstream: UpstreamProcess, replacement: str
) -> None:
    """A worker started after ``sessions.lock`` was deleted (or made a directory) shares its peers' locks.

    Split onto two files, a turn on one worker would trust a cached window
    the other had outdated, and miss a turn; with a directory there, every
    replacement worker would fail and the server stop.
    """
    cfg = upstream_config(upstream.url)
    cfg["api"] = {"workers": 2}
    with ServerProcess(cfg) as srv:
        lock = srv.state_dir / "sessions.lock"
        lock.unlink()
        if replacement == "directory":
            lock.mkdir()
        replace_a_worker(srv)
        alternate_turns(srv, upstream, 6)


def test_a_directory_at_the_lock_path_is_a_startup_error(upstream: UpstreamProcess, tmp_path) -> None:
    workspace = tmp_path / "workspace"
    (tmp_path / "workspace.state" / "sessions.lock").mkdir(parents=True, mode=0o700)
    os.chmod(tmp_path / "workspace.state", 0o700)
    cfg = upstream_config(upstream.url)
    cfg["api"] = {"workers": 2, "port": 0}
    cfg["agents"]["defaults"]["workspace"] = str(workspace)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    p = run_nanobot("serve", "--config", str(path))
    assert p.returncode == 2, p.stderr
    assert "sessions.lock" in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_a_response_chain_is_served_by_both_workers(server: ServerProcess, upstream: UpstreamProcess) -> None:
    """/v1/responses: each worker continues, retrieves and deletes what the other stored."""
    (a,), (b,) = pinned(server, 1).values()
    previous = None
    for i in range(4):
        conn = a if i % 2 == 0 else b
        body = {"input": f"step {i}", **({"previous_response_id": previous} if previous else {})}
        r = conn.post(server.url + "/v1/responses", json=body, timeout=30)
        assert r.status_code == 200, r.text
        previous = r.json()["id"]
        users = [m["content"] for m in upstream.requests()[-1]["body"]["messages"] if m["role"] == "user"]
        assert users == [f"step {j}" for j in range(i + 1)]
    assert b.get(f"{server.url}/v1/responses/{previous}", timeout=30).json()["id"] == previous
    assert a.delete(f"{server.url}/v1/responses/{previous}", timeout=30).status_code == 200
    assert b.get(f"{server.url}/v1/responses/{previous}", timeout=30).status_code == 404
