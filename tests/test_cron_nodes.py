"""Scheduled jobs on PostgreSQL: several nodes, several workers each, one fire per due time."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timedelta

from cron_helpers import DUE, call, cron_config, fires, job_id
from fault_helpers import wait_for
from servers import ServerProcess, merge


def node(upstream, url, name, **extra):
    """A node on ``url`` whose LLM calls carry the API key ``key-<name>`` (who ran a turn)."""
    config = merge(
        cron_config(upstream), {"database": {"url": url}, "providers": {"scripted": {"apiKey": f"key-{name}"}}}
    )
    return ServerProcess(merge(config, extra))


def stored_fires(postgres, url, job):
    """Due times of ``job`` whose turn was committed to its session (their user messages)."""
    rows = postgres.psql("SELECT convert_from(data, 'UTF8') FROM nanobot_messages", url.rsplit("/", 1)[1])
    users = [json.loads(line)["content"] for line in rows.splitlines() if line.startswith('{"role":"user"')]
    return [m.group(2) for text in users if (m := DUE.match(text)) and m.group(1) == job]


def test_two_nodes_of_two_workers_fire_each_job_once_per_due_time(postgres, upstream):
    url = postgres.new_database()
    with node(upstream, url, "a", api={"workers": 2}) as a, node(upstream, url, "b", api={"workers": 2}) as b:
        jobs = []
        for server in (a, b, a):
            reply = call(
                server,
                uuid.uuid4().hex,
                "cron",
                action="add",
                every_seconds=1,
                message="tick",
                channel="webhook",
                chat_id="room-1",
            )
            jobs.append(job_id(reply))
        assert wait_for(lambda: all(len(fires(upstream, j)) >= 5 for j in jobs), timeout=40)
        for j in jobs:
            postgres.psql(f"DELETE FROM nanobot_cron_jobs WHERE id = '{j}'", url.rsplit("/", 1)[1])
        time.sleep(1.5)  # fires already running deliver
    for j in jobs:
        dues = [due for _, due in fires(upstream, j)]
        assert len(dues) >= 5 and len(dues) == len(set(dues)), dues  # each due time once, over 4 schedulers
        assert sorted(stored_fires(postgres, url, j)) == sorted(dues)  # each fire one turn in its session


def test_a_node_killed_mid_turn_leaves_the_job_to_its_next_due_time(postgres, upstream):
    url = postgres.new_database()
    with node(upstream, url, "a") as a, node(upstream, url, "b") as b:
        reply = call(
            a,
            uuid.uuid4().hex,
            "cron",
            action="add",
            every_seconds=3,
            message="#slow:2000 tick",
            channel="webhook",
            chat_id="room-1",
        )
        job = job_id(reply)

        def first_turn():
            for record in upstream.requests():
                found = DUE.search(str(record["body"]["messages"][-1].get("content")))
                if found and found.group(1) == job:
                    return record["headers"]["Authorization"], found.group(2)
            return None

        started = wait_for(first_turn, timeout=15)
        assert started, "no fire reached the LLM"
        key, killed_due = started
        runner, survivor = (a, b) if key == "Bearer key-a" else (b, a)
        runner.kill()  # SIGKILL while the turn waits on the model
        assert wait_for(lambda: len(fires(upstream, job)) >= 2, timeout=30)
        call(survivor, "x", "cron", action="list")  # the survivor still serves
    dues = [due for _, due in fires(upstream, job)]
    assert killed_due not in dues  # the killed turn delivered nothing and was not run again
    assert len(dues) == len(set(dues)) and min(dues) > killed_due
    assert killed_due not in stored_fires(postgres, url, job)  # nor committed half
    # The schedule went on at the very next due time.
    assert min(dues) == _plus(killed_due, 3), (killed_due, dues)


def _plus(iso_time, seconds):
    return (datetime.fromisoformat(iso_time) + timedelta(seconds=seconds)).isoformat(timespec="seconds")
