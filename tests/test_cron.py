"""The cron tool end to end: real server processes, the scripted upstream, the fake channels."""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import requests
from common import run_nanobot, state_db
from cron_helpers import call, cron_config, fires, job_id, session_messages
from croniter import croniter
from fault_helpers import wait_for
from servers import ServerProcess


def test_a_job_every_second_fires_in_its_session_and_reaches_both_channels(make_server, upstream):
    server = make_server(cron_config(upstream))
    sid = uuid.uuid4().hex
    hook = job_id(
        call(server, sid, "cron", action="add", every_seconds=1, message="ping", channel="webhook", chat_id="room-1")
    )
    tg = job_id(
        call(server, sid, "cron", action="add", every_seconds=1, message="ping", channel="telegram", chat_id="-100777")
    )
    assert wait_for(lambda: len(fires(upstream, hook)) >= 3 and len(fires(upstream, tg)) >= 3, timeout=20)
    listing = call(server, sid, "cron", action="list")
    assert f"{hook}: every 1 s" in listing and "-> webhook:room-1" in listing and "last: ok: queued" in listing
    assert "tool result: Removed job" in call(server, sid, "cron", action="remove", job_id=hook)
    assert "Removed job" in call(server, sid, "cron", action="remove", job_id=tg)
    hooked = [x for x in upstream.received() if x["path"] == "/hook/main"]
    assert hooked[0]["body"]["chat_id"] == "room-1" and "You said: [scheduled job" in hooked[0]["body"]["content"]
    assert {path for path, _ in fires(upstream, tg)} == {"/bot123:SECRET/sendMessage"}
    # Each fire was a turn of the session that made the job: recorded there.
    recorded = session_messages(server.workspace, f"api:{sid}")
    assert sum(m["role"] == "user" and m["content"].startswith(f"[scheduled job {hook}") for m in recorded) >= 3
    # Due times fired once each, and nothing fires once removed.
    for job in (hook, tg):
        dues = [due for _, due in fires(upstream, job)]
        assert len(dues) == len(set(dues))
    metrics = requests.get(server.url + "/metrics", timeout=10).text
    found = re.search(r"^nanobot_cron_jobs_fired_total (\S+)$", metrics, re.M)
    assert found is not None, metrics
    fired = float(found.group(1))
    assert fired >= 6 and "nanobot_cron_job_failures_total 0.0" in metrics
    settled = len(upstream.received())
    time.sleep(2.5)
    assert len(upstream.received()) <= settled + 2  # at most fires already running when removed
    assert call(server, sid, "cron", action="list").endswith("No scheduled jobs in this conversation.")


def test_list_and_remove_are_per_session_and_bad_input_is_an_error_result(make_server, upstream):
    server = make_server(cron_config(upstream, tools={"cron": {"maxJobsPerSession": 2, "minIntervalSeconds": 60}}))
    mine, other = uuid.uuid4().hex, uuid.uuid4().hex
    added = call(server, mine, "cron", action="add", every_seconds=3600, message="hourly")
    assert "replies are recorded in this conversation" in added  # an API session: no channel to deliver to
    first = job_id(added)
    job_id(call(server, mine, "cron", action="add", cron_expr="0 9 * * *", message="daily"))
    assert "has 2 jobs already (tools.cron.maxJobsPerSession)" in call(
        server, mine, "cron", action="add", every_seconds=3600, message="third"
    )
    assert "No scheduled jobs" in call(server, other, "cron", action="list")
    assert f"Error: no job '{first}' in this conversation" in call(server, other, "cron", action="remove", job_id=first)
    errors: dict[str, tuple[dict[str, Any], str]] = {
        "every_seconds": ({"every_seconds": 5}, "at least 60"),
        "cron": ({"cron_expr": "every day"}, "not a valid cron expression"),
        "tz": ({"cron_expr": "0 9 * * *", "tz": "Nowhere/City"}, "unknown time zone 'Nowhere/City'"),
        "at": ({"at": "2020-01-01T00:00:00Z"}, "is in the past"),
        "target": ({"every_seconds": 3600, "channel": "telegram", "chat_id": "victim"}, "not an allowed target"),
        "channel": ({"every_seconds": 3600, "channel": "slack", "chat_id": "x"}, "unknown channel 'slack'"),
    }
    for name, (args, says) in errors.items():
        reply = call(server, other, "cron", action="add", message="x", **args)
        assert "tool result: Error: " in reply and says in reply, (name, reply)
    assert "Error: no job 'nope'" in call(server, mine, "cron", action="remove", job_id="nope")
    assert "Error: argument 'job_id' must be a string" in call(server, mine, "cron", action="remove", job_id=7)
    assert "Error: 'action' must be one of" in call(server, mine, "cron", action="pause")
    listing = call(server, mine, "cron", action="list")
    assert f"{first}: every 3600 s" in listing and "cron '0 9 * * *' (UTC)" in listing
    assert "No scheduled jobs" in call(server, other, "cron", action="list")  # the refused adds stored nothing


def test_one_shot_at_fires_once_and_is_gone(make_server, upstream):
    server = make_server(cron_config(upstream))
    sid = uuid.uuid4().hex
    at = datetime.fromtimestamp(time.time() + 2, UTC).isoformat(timespec="seconds")
    job = job_id(call(server, sid, "cron", action="add", at=at, message="once", channel="webhook", chat_id="room-1"))
    assert wait_for(lambda: fires(upstream, job), timeout=15)
    time.sleep(1.5)
    assert len(fires(upstream, job)) == 1
    assert "No scheduled jobs" in call(server, sid, "cron", action="list")


def test_cron_expression_in_a_time_zone_gets_its_next_time_there(make_server, upstream):
    server = make_server(cron_config(upstream))
    sid = uuid.uuid4().hex
    reply = call(server, sid, "cron", action="add", cron_expr="30 7 * * 1-5", tz="America/New_York", message="standup")
    expected = croniter("30 7 * * 1-5", datetime.now(ZoneInfo("America/New_York"))).get_next(datetime)
    assert f"next run {expected.isoformat(timespec='seconds')}" in reply, reply
    assert expected.isoformat().endswith(("-05:00", "-04:00"))  # a New York offset, not UTC


def test_cli_lists_and_removes_jobs_with_secrets_masked(make_server, upstream):
    server = make_server(cron_config(upstream))
    sid = uuid.uuid4().hex
    job = job_id(call(server, sid, "cron", action="add", every_seconds=3600, message="say 123:SECRET"))
    out = run_nanobot("cron", "list", "--config", str(server.config_path))
    assert out.returncode == 0, out.stderr
    assert job in out.stdout and f"api:{sid}" in out.stdout and "every 3600 s" in out.stdout
    assert "123:SECRET" not in out.stdout and "say ***" in out.stdout
    out = run_nanobot("cron", "remove", job, "--config", str(server.config_path))
    assert out.returncode == 0 and f"removed job {job}" in out.stdout, out.stderr
    out = run_nanobot("cron", "remove", job, "--config", str(server.config_path))
    assert out.returncode == 1 and f"no cron job '{job}'" in out.stderr
    assert "No scheduled jobs" in call(server, sid, "cron", action="list")
    out = run_nanobot("cron", "list", "--config", str(server.config_path))
    assert out.returncode == 0 and "no cron jobs" in out.stdout


def test_restart_after_downtime_fires_a_missed_job_once(upstream, tmp_path):
    ws = tmp_path / "ws"
    sid = uuid.uuid4().hex
    with ServerProcess(cron_config(upstream), workspace=ws) as server:
        job = job_id(
            call(
                server,
                sid,
                "cron",
                action="add",
                every_seconds=3600,
                message="hourly",
                channel="webhook",
                chat_id="room-1",
            )
        )
    # Five hours of due times missed while the server was down.
    db = sqlite3.connect(state_db(ws))
    missed = time.time() - 5 * 3600 - 60
    with db:
        db.execute("UPDATE cron_jobs SET next_run = ? WHERE id = ?", (missed, job))
    with ServerProcess(cron_config(upstream), workspace=ws):
        assert wait_for(lambda: fires(upstream, job), timeout=15)
        time.sleep(1.5)
        assert len(fires(upstream, job)) == 1
    runs, next_run = db.execute("SELECT runs, next_run FROM cron_jobs WHERE id = ?", (job,)).fetchone()
    assert runs == 1 and time.time() < next_run < time.time() + 3600
    assert (next_run - missed) % 3600 == 0  # still on the job's own phase


def test_two_workers_on_one_sqlite_file_fire_each_due_time_once(make_server, upstream):
    server = make_server(cron_config(upstream, api={"workers": 2}))
    jobs = [
        job_id(
            call(
                server,
                uuid.uuid4().hex,
                "cron",
                action="add",
                every_seconds=1,
                message="w",
                channel="webhook",
                chat_id="room-1",
            )
        )
        for _ in range(2)
    ]
    assert wait_for(lambda: all(len(fires(upstream, j)) >= 5 for j in jobs), timeout=30)
    for j in jobs:
        removed = run_nanobot("cron", "remove", j, "--config", str(server.config_path))
        assert removed.returncode == 0, removed.stderr
    time.sleep(1.5)
    for j in jobs:
        dues = [due for _, due in fires(upstream, j)]
        assert len(dues) == len(set(dues)), dues
