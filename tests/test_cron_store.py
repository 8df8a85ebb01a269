"""Schedules and the job store: real SQLite files and a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from nanobot.cron import schedule
from nanobot.cron.pg_store import PgCronStore
from nanobot.cron.sqlite_store import SqliteCronStore
from nanobot.cron.store import CronJob
from nanobot.storage.db import Database
from nanobot.storage.pg import MIGRATIONS, PgDatabase

NOW = datetime(2026, 3, 28, 12, 0, tzinfo=ZoneInfo("UTC")).timestamp()


def parsed(**args):
    return schedule.parse(args, NOW, 60)


def test_cron_expression_in_a_time_zone_across_daylight_saving():
    s = parsed(cron_expr="0 9 * * *", tz="Europe/Berlin")
    first = s.first(NOW)
    # 09:00 in Berlin on the 29th is after the switch to summer time: 07:00 UTC.
    assert schedule.iso(first) == "2026-03-29T07:00:00+00:00"
    assert schedule.iso(first, "Europe/Berlin") == "2026-03-29T09:00:00+02:00"
    assert schedule.iso(s.after(first, first)) == "2026-03-30T07:00:00+00:00"
    assert s.describe() == "cron '0 9 * * *' (Europe/Berlin)"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ({"cron_expr": "61 * * * *"}, "not a valid cron expression"),
        ({"cron_expr": "hello"}, "not a valid cron expression"),
        ({"cron_expr": "0 9 * * *", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"cron_expr": "0 9 * * *", "tz": "../../etc/passwd"}, "unknown time zone"),
        ({"at": "2026-03-28T11:59:00Z"}, "is in the past"),
        ({"at": "tomorrow"}, "is not an ISO time"),
        ({"every_seconds": 30}, "at least 60"),
        ({"every_seconds": "60"}, "must be a number"),
        ({"every_seconds": 60, "tz": "UTC"}, "not with 'every_seconds'"),
        ({"cron_expr": "0,1 * * * * *"}, "fires 1 s apart"),
        ({}, "exactly one of"),
        ({"every_seconds": 60, "at": "2027-01-01T00:00:00"}, "exactly one of"),
    ],
)
def test_bad_schedules_are_errors_saying_why(args, says):
    result = parsed(**args)
    assert isinstance(result, str) and result.startswith("Error:") and says in result, result


def test_at_without_offset_is_in_the_given_zone_else_utc():
    assert parsed(at="2026-03-28T18:00:00").first(NOW) == NOW + 6 * 3600
    assert parsed(at="2026-03-28T18:00:00", tz="Europe/Berlin").first(NOW) == NOW + 5 * 3600
    assert parsed(at="2026-03-28T18:00:00", tz="Europe/Berlin").after(NOW, NOW) is None


def test_missed_fires_give_one_catch_up_and_keep_the_phase():
    every = parsed(every_seconds=60)
    due = NOW - 3600 - 10  # an hour of fires missed while the server was down
    nxt = every.after(due, NOW)
    assert NOW < nxt <= NOW + 60 and (nxt - due) % 60 == 0
    cron = parsed(cron_expr="*/5 * * * *")
    assert cron.after(NOW - 86400, NOW) == NOW + 300


def job(session="api:s", next_run=NOW, job_id=None, **kw):
    return CronJob(
        job_id or CronJob.new_id(), session, "api", "s", "ping", parsed(every_seconds=60), next_run, NOW, **kw
    )


async def exercise(store_a, store_b):
    """Two stores on one database (two workers, or two nodes)."""
    first = job()
    assert await store_a.add(first, 2)
    assert await store_a.add(job(), 2)
    assert not await store_b.add(job(), 2)  # the session's cap counts what any process added
    assert await store_b.add(job(session="api:other", next_run=NOW + 100), 2)
    assert [j.session for j in await store_b.jobs()] == ["api:s", "api:s", "api:other"]
    assert len(await store_b.jobs("api:s")) == 2
    assert not await store_b.remove(first.id, "api:other")  # only the session's own
    assert await store_b.next_due() == NOW
    # Many claimers race for each due time: exactly one wins it.
    for round_ in range(5):
        (seen,) = [j for j in await store_a.jobs("api:s") if j.id == first.id]
        claims = [store.claim(seen, seen.next_run + 60, NOW + round_) for store in (store_a, store_b) * 4]
        assert sorted(await asyncio.gather(*claims)) == [False] * 7 + [True]
    (after,) = [j for j in await store_a.jobs("api:s") if j.id == first.id]
    assert after.next_run == NOW + 300 and after.runs == 5 and after.last_run == NOW + 4
    await store_b.finish(first.id, "ok")
    assert [j.last_status for j in await store_a.jobs("api:s") if j.id == first.id] == ["ok"]
    assert [j.id for j in await store_a.due(NOW + 1, 10)] != []
    # A one-shot job's claim deletes it, once.
    once = CronJob("once1", "api:o", "api", "o", "x", parsed(at="2026-03-29T00:00:00"), NOW + 5, NOW)
    assert await store_a.add(once, 20)
    assert sorted(await asyncio.gather(store_a.claim(once, None, NOW), store_b.claim(once, None, NOW))) == [
        False,
        True,
    ]
    assert await store_a.jobs("api:o") == []
    assert await store_b.remove(first.id)
    assert not await store_a.remove(first.id)


def test_sqlite_store_two_workers_on_one_file(tmp_path):
    a, b = Database(tmp_path / "nanobot.db"), Database(tmp_path / "nanobot.db")
    try:
        asyncio.run(exercise(SqliteCronStore(a), SqliteCronStore(b)))
    finally:
        a.close()
        b.close()
    SqliteCronStore(Database(tmp_path / "nanobot.db"))  # opening again upgrades nothing
    conn = sqlite3.connect(tmp_path / "nanobot.db")
    assert conn.execute("SELECT component, version FROM schema_versions").fetchall() == [("cron_jobs", 1)]


def test_postgres_store_two_nodes(postgres):
    url = postgres.new_database()

    async def main():
        a, b = PgDatabase(url, 4), PgDatabase(url, 4)
        await a.start()
        await b.start()
        try:
            await exercise(PgCronStore(a), PgCronStore(b))
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())
    assert postgres.psql("SELECT max(version) FROM nanobot_schema_version", url.rsplit("/", 1)[1]).strip() == str(
        len(MIGRATIONS)
    )


@pytest.mark.parametrize(
    "tools",
    [
        {"cron": {"maxJobsPerSession": 0}},
        {"cron": {"minIntervalSeconds": 0}},
        {"spawn": {"maxConcurrent": 0}},
        {"spawn": {"timeout": -1}},
    ],
)
def test_bounds_must_be_positive(tools):
    from nanobot.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="must be positive"):
        parse_config({"tools": tools})
    with pytest.raises(ConfigError, match="tools.cron.every: unknown key"):
        parse_config({"tools": {"cron": {"every": 1}}})
