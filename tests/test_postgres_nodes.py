"""Several ``nanobot serve`` nodes on one real PostgreSQL database.

Each node is its own process with its own port and workspace; the cluster
is the session-wide ``postgres`` fixture (initdb + pg_ctl in a temp dir).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import orjson
import requests
from common import CHAT, ask
from servers import ServerProcess, merge, upstream_config
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from nanobot.storage.pg import MIGRATIONS


def node(upstream, url, **extra):
    return ServerProcess(merge(upstream_config(upstream.url), merge({"database": {"url": url}}, extra)))


def llm_calls(upstream, marker):
    """The LLM requests whose user message carries ``marker``: their message lists."""
    out = []
    for record in upstream.requests():
        messages = record["body"]["messages"]
        if marker in str(messages[-1].get("content")):
            out.append(messages)
    return out


def session_length(postgres, url, key):
    got = postgres.psql(f"SELECT length FROM nanobot_sessions WHERE key = '{key}'", url.rsplit("/", 1)[1]).strip()
    return int(got or 0)


def test_a_session_continues_on_another_node(postgres, upstream):
    url = postgres.new_database()
    sid, marker = uuid.uuid4().hex, uuid.uuid4().hex
    with node(upstream, url) as a, node(upstream, url) as b:
        assert ask(a, f"first {marker}", sid).status_code == 200
        r = ask(b, f"second {marker}", sid)
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"] == f"You said: second {marker}"
        r = ask(a, f"third {marker}", sid)  # a's cached window is stale: b moved the session on
        assert r.status_code == 200
    calls = llm_calls(upstream, marker)
    assert [[m["content"] for m in c[1:]] for c in calls] == [
        [f"first {marker}"],
        [f"first {marker}", f"You said: first {marker}", f"second {marker}"],
        [
            f"first {marker}",
            f"You said: first {marker}",
            f"second {marker}",
            f"You said: second {marker}",
            f"third {marker}",
        ],
    ]
    assert session_length(postgres, url, f"api:{sid}") == 6


def test_turns_on_one_session_never_overlap_across_three_nodes(postgres, upstream):
    url = postgres.new_database()
    sid, marker = uuid.uuid4().hex, uuid.uuid4().hex
    turns = 12
    with node(upstream, url) as a, node(upstream, url) as b, node(upstream, url) as c:
        nodes = [a, b, c]
        started = time.monotonic()
        with ThreadPoolExecutor(turns) as pool:
            results = list(pool.map(lambda i: ask(nodes[i % 3], f"#slow:100 turn {i} {marker}", sid), range(turns)))
        elapsed = time.monotonic() - started
    assert [r.status_code for r in results] == [200] * turns
    # Each turn saw every turn before it, whichever node ran it: history
    # lengths 0, 2, 4, ... each exactly once, and the turns took turns.
    seen = sorted(len(messages) - 2 for messages in llm_calls(upstream, marker))
    assert seen == list(range(0, 2 * turns, 2))
    assert elapsed >= turns * 0.1
    assert session_length(postgres, url, f"api:{sid}") == 2 * turns


def test_killed_node_frees_its_session_at_once_and_commits_nothing(postgres, upstream):
    url = postgres.new_database()
    sid, marker = uuid.uuid4().hex, uuid.uuid4().hex
    with node(upstream, url) as a, node(upstream, url) as b:
        threading.Thread(target=lambda: _swallow(ask, a, f"#slow:20000 doomed {marker}", sid), daemon=True).start()
        deadline = time.monotonic() + 10
        while not llm_calls(upstream, f"doomed {marker}") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert llm_calls(upstream, f"doomed {marker}"), "the turn never reached the LLM"
        a.kill()  # SIGKILL, mid-turn: the session is locked by a
        killed = time.monotonic()
        r = ask(b, f"after {marker}", sid, timeout=10)
        waited = time.monotonic() - killed
        assert r.status_code == 200
    assert waited < 1.0
    (after,) = llm_calls(upstream, f"after {marker}")
    assert [m["role"] for m in after] == ["system", "user"]  # nothing of the killed turn
    assert session_length(postgres, url, f"api:{sid}") == 2


def _swallow(fn, *args):
    try:
        fn(*args)
    except requests.RequestException:
        pass


def test_a_session_waits_without_holding_pooled_connections(postgres, upstream):
    """300 requests queued on one session, a pool of 2: all are served in
    order, and another session is served meanwhile."""
    url = postgres.new_database()
    sid, marker = uuid.uuid4().hex, uuid.uuid4().hex
    with node(upstream, url, database={"url": url, "poolSize": 2}) as a:

        async def run():
            client = AsyncHTTPClient(force_instance=True, max_clients=400)

            async def post(text, session):
                body = orjson.dumps({"messages": [{"role": "user", "content": text}], "session_id": session})
                req = HTTPRequest(
                    a.url + CHAT,
                    method="POST",
                    body=body,
                    request_timeout=60,
                    headers={"Content-Type": "application/json"},
                )
                return await client.fetch(req, raise_error=False)

            queued = [asyncio.ensure_future(post(f"q{i} {marker}", sid)) for i in range(300)]
            await asyncio.sleep(0.3)
            started = time.monotonic()
            other = await post("another session", uuid.uuid4().hex)
            other_time = time.monotonic() - started
            done = await asyncio.gather(*queued)
            client.close()
            return other, other_time, done

        other, other_time, done = asyncio.run(run())
    assert other.code == 200 and other_time < 2.0
    assert [r.code for r in done] == [200] * 300
    assert session_length(postgres, url, f"api:{sid}") == 600


class BlackHole:
    """A TCP server that accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_a_message_queued_by_a_node_that_dies_is_delivered_by_another(postgres, upstream):
    url = postgres.new_database()
    hole = BlackHole()
    chat = uuid.uuid4().hex
    hook = {"channels": {"webhook": {"enabled": True, "url": hole.url, "allowedChatIds": ["*"]}}}
    tool = f'#tool:message {{"content": "from a", "channel": "webhook", "chat_id": "{chat}"}} go'
    try:
        a = node(upstream, url, **hook)
        r = ask(a, tool, uuid.uuid4().hex)
        assert "queued for delivery to webhook" in r.json()["choices"][0]["message"]["content"]
        deadline = time.monotonic() + 10
        while not hole.accepted and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hole.accepted, "node a never tried to deliver"
        a.kill()  # mid-delivery, holding the row's lease
        upstream.clear_received()
        b = node(upstream, url, channels={"webhook": {"enabled": True, "url": upstream.url + "/hook/b"}})
        with b:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                got = [x for x in upstream.received() if x["body"].get("chat_id") == chat]
                if got:
                    break
                time.sleep(0.1)
            assert [x["body"] for x in got] == [{"channel": "webhook", "chat_id": chat, "content": "from a"}]
        database = url.rsplit("/", 1)[1]
        assert postgres.psql("SELECT state, attempts FROM nanobot_outbox", database).split() == ["delivered|1"]
    finally:
        hole.close()


def test_three_nodes_racing_to_create_the_schema(postgres, upstream):
    url = postgres.new_database()
    with ThreadPoolExecutor(3) as pool:
        nodes = list(pool.map(lambda _: node(upstream, url), range(3)))
    try:
        for n in nodes:
            assert requests.get(n.url + "/health", timeout=5).json() == {"status": "ok"}
            assert ask(n, "hello", uuid.uuid4().hex).status_code == 200
            assert "Traceback" not in n.stderr_text()
        database = url.rsplit("/", 1)[1]
        versions = postgres.psql("SELECT version FROM nanobot_schema_version ORDER BY version", database).split()
        assert versions == [str(v) for v in range(1, len(MIGRATIONS) + 1)]  # each step applied once
    finally:
        for n in nodes:
            n.stop()


def test_postgres_stopped_and_started_again_under_load(postgres, upstream):
    url = postgres.new_database()
    marker = uuid.uuid4().hex
    outcomes: list[tuple[str, int | None, dict]] = []
    stop = threading.Event()
    with node(upstream, url) as a:

        def client(i: int) -> None:
            n = 0
            while not stop.is_set():
                text = f"t{n} c{i} {marker}"
                try:
                    r = ask(a, text, f"load-{i}-{marker}", timeout=15)
                    outcomes.append((text, r.status_code, r.json()))
                except requests.RequestException:
                    outcomes.append((text, None, {}))
                n += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            postgres.stop_server("fast")
            health = _wait_health(a, 503)
            assert "database unavailable" in health.json()["reason"]
            started = time.monotonic()
            r = ask(a, "during the outage", uuid.uuid4().hex)
            assert time.monotonic() - started < 2.0  # fails fast
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "database_unavailable"
            assert r.json()["error"]["type"] == "overloaded_error"
            time.sleep(0.5)
            postgres.start_server()
            _wait_health(a, 200)
            resumed = len(outcomes)
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert "Traceback" not in a.stderr_text()
    statuses = [status for _, status, _ in outcomes]
    assert set(statuses) <= {200, 503}, statuses
    assert 503 in statuses and statuses[resumed:].count(200) > 0
    assert all(body["error"]["code"] == "database_unavailable" for _, s, body in outcomes if s == 503)
    # No turn answered 200 is missing from the database.
    stored = postgres.psql("SELECT convert_from(data, 'UTF8') FROM nanobot_messages", url.rsplit("/", 1)[1])
    users = {orjson.loads(line)["content"] for line in stored.splitlines() if '"role":"user"' in line}
    answered = {text for text, status, _ in outcomes if status == 200}
    assert answered and answered <= users


def _wait_health(server, status, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        r = requests.get(server.url + "/health", timeout=5)
        if r.status_code == status or time.monotonic() > deadline:
            assert r.status_code == status, r.text
            return r
        time.sleep(0.05)


def test_a_node_started_while_postgres_is_down_serves_once_it_is_back(postgres, upstream):
    url = postgres.new_database()
    postgres.stop_server("fast")
    try:
        with node(upstream, url, api={"workers": 2}) as a:
            health = _wait_health(a, 503)
            assert "database unavailable: connection refused" in health.json()["reason"]
            r = ask(a, "too early", uuid.uuid4().hex)
            assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable"
            postgres.start_server()
            _wait_health(a, 200)
            time.sleep(0.6)  # one probe interval: the other worker has seen it too
            sid = uuid.uuid4().hex
            for text in ("one", "two", "three", "four"):  # across both workers
                assert ask(a, text, sid).status_code == 200
            assert session_length(postgres, url, f"api:{sid}") == 8
    finally:
        if not (postgres.data / "postmaster.pid").exists():
            postgres.start_server()


def test_a_turn_that_lost_its_lock_to_another_node_commits_nothing(postgres, upstream):
    url = postgres.new_database()
    sid, marker = uuid.uuid4().hex, uuid.uuid4().hex
    database = url.rsplit("/", 1)[1]
    with node(upstream, url) as a, node(upstream, url) as b:
        slow: list[requests.Response] = []
        worker = threading.Thread(target=lambda: slow.append(ask(a, f"#slow:3000 first {marker}", sid)))
        worker.start()
        deadline = time.monotonic() + 10
        while not llm_calls(upstream, f"first {marker}") and time.monotonic() < deadline:
            time.sleep(0.02)
        # a's lock connection (the only one that has taken a session lock) goes away mid-turn.
        killed = postgres.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE '%nanobot_grant_session%'"
            " AND pid <> pg_backend_pid()",
            database,
        )
        assert killed.strip() == "1"
        r = ask(b, f"second {marker}", sid, timeout=10)  # the session is free: b runs a turn
        assert r.status_code == 200
        worker.join(30)
    # a's turn read an older session: it fails cleanly and commits nothing.
    assert slow[0].status_code == 503 and slow[0].json()["error"]["code"] == "database_unavailable"
    assert session_length(postgres, url, f"api:{sid}") == 2
    stored = postgres.psql("SELECT convert_from(data, 'UTF8') FROM nanobot_messages", database)
    assert f"second {marker}" in stored and f"first {marker}" not in stored
