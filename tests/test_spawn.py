"""The spawn tool end to end: background subagents in real server processes."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from datetime import UTC, datetime

import requests
from common import ask, run_nanobot
from cron_helpers import call, cron_config, directive, session_messages
from fault_helpers import wait_for
from servers import merge, upstream_config

from nanobot.tools.spawn import INSTRUCTIONS


def subagent_id(reply: str) -> str:
    found = re.search(r"Subagent ([0-9a-f]+) \(", reply)
    assert found, reply
    return found.group(1)


def records(server, sid, outcome=""):
    """The subagent results recorded in the parent session ``api:sid``."""
    messages = session_messages(server.workspace, f"api:{sid}")
    return [
        (m, messages[i + 1])
        for i, m in enumerate(messages[:-1])
        if m["role"] == "user" and m["content"].startswith("[subagent ") and f"' {outcome}" in m["content"]
    ]


def test_spawn_returns_at_once_and_the_result_lands_in_the_parent_session(make_server, upstream):
    server = make_server(cron_config(upstream))
    sid, marker = uuid.uuid4().hex, uuid.uuid4().hex
    reply = call(server, sid, "spawn", task=f"#slow:3000 research {marker}", label="research")
    sub = subagent_id(reply)
    assert "started in the background" in reply
    assert records(server, sid) == []  # the parent's turn ended while the subagent still works
    ((head, result),) = wait_for(lambda: records(server, sid, "finished"), timeout=20)
    assert head["content"] == f"[subagent {sub} 'research' finished] task: #slow:3000 research {marker}"
    assert result == {"role": "assistant", "content": f"You said: #slow:3000 research {marker}"}
    # The subagent's own session holds its turn; its model saw neither spawn nor cron.
    own = session_messages(server.workspace, f"subagent:{sub}")
    assert [m["role"] for m in own] == ["user", "assistant"]
    task = f"#slow:3000 research {marker}"
    (sent,) = [r["body"] for r in upstream.requests() if r["body"]["messages"][-1].get("content") == task]
    names = [t["function"]["name"] for t in sent["tools"]]
    assert "message" in names and "spawn" not in names and "cron" not in names
    assert INSTRUCTIONS in sent["messages"][0]["content"]
    # The parent's next turn is sent the result as history.
    ask(server, f"next {marker}", sid)
    (nxt,) = [r["body"] for r in upstream.requests() if r["body"]["messages"][-1].get("content") == f"next {marker}"]
    assert f"You said: #slow:3000 research {marker}" in str(nxt["messages"])


def test_a_subagent_spawned_by_a_job_reports_on_the_jobs_channel(make_server, upstream):
    server = make_server(cron_config(upstream))
    sid, marker = uuid.uuid4().hex, uuid.uuid4().hex
    at = datetime.fromtimestamp(time.time() + 2, UTC).isoformat(timespec="seconds")
    job = directive("spawn", {"task": f"look up {marker}", "label": "lookup"})
    call(server, sid, "cron", action="add", at=at, message=job, channel="webhook", chat_id="room-1")

    def delivered():
        return [r["body"]["content"] for r in upstream.received() if r["path"] == "/hook/main"]

    got = wait_for(lambda: any("Subagent 'lookup' finished" in c for c in delivered()) and delivered(), timeout=30)
    assert any("Subagent" in c and "started in the background" in c for c in got)  # the job's own reply
    assert f"Subagent 'lookup' finished:\n\nYou said: look up {marker}" in got
    assert records(server, sid, "finished")  # and in the session that made the job


def test_at_most_max_concurrent_subagents_run(make_server, upstream):
    server = make_server(cron_config(upstream, tools={"spawn": {"maxConcurrent": 2}}))
    sid = uuid.uuid4().hex
    text = " ".join(directive("spawn", {"task": f"#slow:4000 part {i}", "label": f"p{i}"}) for i in range(3))
    r = ask(server, text, sid)
    assert r.status_code == 200
    calls = [m for m in session_messages(server.workspace, f"api:{sid}") if m["role"] == "tool"]
    results = [m["content"] for m in calls]
    assert sum("started in the background" in c for c in results) == 2
    assert sum("Error: 2 subagents are running already (tools.spawn.maxConcurrent)" in c for c in results) == 1
    assert "nanobot_subagents_running 2.0" in requests.get(server.url + "/metrics", timeout=10).text
    wait_for(lambda: len(records(server, sid, "finished")) == 2, timeout=30)
    assert "nanobot_subagents_running 0.0" in requests.get(server.url + "/metrics", timeout=10).text


def test_neither_a_client_disconnect_nor_api_timeout_stops_a_subagent_but_its_own_timeout_does(make_server, upstream):
    server = make_server(cron_config(upstream, api={"timeout": 4}, tools={"spawn": {"timeout": 9}}))
    sid, marker = uuid.uuid4().hex, uuid.uuid4().hex
    # The parent's model calls spawn after 2 s and answers 2 s later; the client leaves at 3 s.
    text = "#slow:2000 " + directive("spawn", {"task": f"#slow:6000 long {marker}", "label": "long"})
    try:
        ask(server, text, sid, timeout=3)
    except requests.Timeout:
        pass
    ((head, result),) = wait_for(lambda: records(server, sid, "finished"), timeout=30)
    assert result["content"] == f"You said: #slow:6000 long {marker}"  # ran past api.timeout and the client
    reply = call(server, sid, "spawn", task="#slow:30000 forever", label="forever")
    assert "started" in reply
    ((head, result),) = wait_for(lambda: records(server, sid, "timed out"), timeout=30)
    assert "tools.spawn.timeout (9 s)" in result["content"]


def test_shutdown_cancels_running_subagents_and_records_it_keeping_the_parent_history(make_server, upstream):
    server = make_server(cron_config(upstream))
    sid = uuid.uuid4().hex
    call(server, sid, "spawn", task="#slow:60000 endless", label="endless")
    before = session_messages(server.workspace, f"api:{sid}")
    assert [m["role"] for m in before] == ["user", "assistant", "tool", "assistant"]
    wait_for(lambda: any("endless" in str(r["body"]["messages"][-1]) for r in upstream.requests()), timeout=10)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    stopper.join(30)
    assert server.proc.returncode == 0, server.stderr_text()
    after = session_messages(server.workspace, f"api:{sid}")
    assert after[:4] == before
    assert after[4]["content"].startswith("[subagent ") and "'endless' cancelled" in after[4]["content"]
    assert after[5] == {"role": "assistant", "content": "It was cancelled: the server shut down before it finished."}


def test_nanobot_agent_waits_for_the_subagents_it_spawned(tmp_path, upstream):
    config = merge(upstream_config(upstream.url), {"agents": {"defaults": {"workspace": str(tmp_path / "ws")}}})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    out = run_nanobot(
        "agent", "-m", directive("spawn", {"task": "#slow:1000 in the terminal", "label": "cli"}), "--config", str(path)
    )
    assert out.returncode == 0, out.stderr
    assert "started in the background" in out.stdout
    assert "Subagent 'cli' finished:\n\nYou said: #slow:1000 in the terminal" in out.stdout
    assert "[waiting for 1 subagent(s)" in out.stderr
