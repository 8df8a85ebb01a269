"""``nanobot db copy``, ``config check`` and ``outbox`` against a real PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
import time

import orjson
from common import ask, run_nanobot, sdk
from servers import ServerProcess, merge, upstream_config


def nanobot(*args, config=None):
    return run_nanobot(*args, *(["--config", str(config)] if config else []))


def write_config(tmp_path, data, name="config.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def test_db_copy_moves_sessions_and_queue_once(postgres, upstream, tmp_path):
    url = postgres.new_database()
    base = upstream_config(upstream.url)
    with ServerProcess(merge(base, {"channels": {"telegram": {"allowedChatIds": ["9"]}}})) as old:  # SQLite
        assert ask(old, "one", "moved").status_code == 200
        assert ask(old, "two", "moved").status_code == 200
        tool = '#tool:message {"content": "kept", "channel": "telegram", "chat_id": "9"} x'
        assert ask(old, tool, "other").status_code == 200
        job = '#tool:cron {"action": "add", "every_seconds": 3600, "message": "hourly"} x'
        assert "Scheduled job" in ask(old, job, "jobs").json()["choices"][0]["message"]["content"]
        source = old.database
    # Enough sessions to see progress lines.
    with sqlite3.connect(source) as db:
        db.executemany(
            "INSERT INTO messages (session, data, created) VALUES (?, ?, ?)",
            [(f"api:bulk{i}", orjson.dumps({"role": "user", "content": f"b{i}"}), time.time()) for i in range(1200)],
        )
    config = write_config(
        tmp_path, merge(base, {"database": {"url": url}, "agents": {"defaults": {"workspace": str(tmp_path / "ws")}}})
    )

    first = nanobot("db", "copy", "--from", str(source), config=config)
    assert first.returncode == 0, first.stderr
    assert "copied 1203 sessions (1212 messages), 1 outbound rows and 1 cron jobs" in first.stdout
    assert "sessions: 1203/1203 read" in first.stderr  # the progress line
    second = nanobot("db", "copy", "--from", str(source), config=config)
    assert second.returncode == 0, second.stderr
    assert "copied 0 sessions (0 messages), 0 outbound rows and 0 cron jobs" in second.stdout
    assert "1203 sessions were there already" in second.stdout
    jobs = nanobot("cron", "list", config=config)
    assert jobs.returncode == 0 and "api:jobs" in jobs.stdout and "every 3600 s" in jobs.stdout, jobs.stderr

    upstream.clear()
    with ServerProcess(merge(base, {"database": {"url": url}})) as new:
        assert ask(new, "three", "moved").status_code == 200
    (call,) = [r["body"]["messages"] for r in upstream.requests()]
    assert [m["content"] for m in call[1:]] == ["one", "You said: one", "two", "You said: two", "three"]
    listing = nanobot("outbox", config=config)
    assert listing.returncode == 0, listing.stderr
    assert "undeliverable" in listing.stdout and "kept" in listing.stdout


def test_db_copy_refuses_what_is_not_a_nanobot_database(postgres, tmp_path):
    config = write_config(tmp_path, {"database": {"url": postgres.new_database()}})
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    out = nanobot("db", "copy", "--from", str(tmp_path / "junk.db"), config=config)
    assert out.returncode == 2 and "not an SQLite database" in out.stderr and "Traceback" not in out.stderr
    out = nanobot("db", "copy", "--from", str(tmp_path / "missing.db"), config=config)
    assert out.returncode == 2 and "no such file" in out.stderr
    sqlite_only = write_config(tmp_path, {}, "sqlite.json")
    out = nanobot("db", "copy", "--from", str(tmp_path / "junk.db"), config=sqlite_only)
    assert out.returncode == 2 and "database.url is not set" in out.stderr


def test_config_check_shows_the_database_masked_and_whether_it_answers(postgres, tmp_path):
    url = postgres.new_database().replace("nanobot@", "nanobot:s3cret@")
    config = write_config(tmp_path, {"database": {"url": url}})
    out = nanobot("config", "check", config=config)
    assert out.returncode == 0, out.stderr
    assert "s3cret" not in out.stdout + out.stderr
    masked = url.replace("s3cret", "***")
    assert f"# database: PostgreSQL at {masked}: answers" in out.stderr
    assert json.loads(out.stdout)["database"]["url"] == url.replace("nanobot:s3cret@", "***@")

    dead = write_config(tmp_path, {"database": {"url": "postgresql://u:pw@127.0.0.1:1/x"}}, "dead.json")
    out = nanobot("config", "check", config=dead)
    assert out.returncode == 0
    assert (
        "# database: PostgreSQL at postgresql://u:***@127.0.0.1:1/x: NOT answering (connection refused)" in out.stderr
    )

    out = nanobot("config", "check", config=write_config(tmp_path, {}, "lite.json"))
    assert "# database: SQLite at" in out.stderr


def test_a_database_url_that_is_not_postgresql_is_a_config_error(tmp_path):
    config = write_config(tmp_path, {"database": {"url": "mysql://u:pw@db/x"}})
    out = nanobot("config", "check", config=config)
    assert out.returncode == 2
    assert "database.url: expected a postgresql:// URL" in out.stderr and "pw" not in out.stderr


def test_db_copy_moves_stored_responses_and_their_chains(postgres, upstream, tmp_path):
    url = postgres.new_database()
    base = upstream_config(upstream.url)
    with ServerProcess(base) as old:  # SQLite
        first = sdk(old).responses.create(model="scripted", input="kept in sqlite")
        second = sdk(old).responses.create(model="scripted", input="and then", previous_response_id=first.id)
        source = old.database
    config = write_config(
        tmp_path, merge(base, {"database": {"url": url}, "agents": {"defaults": {"workspace": str(tmp_path / "ws")}}})
    )
    copied = nanobot("db", "copy", "--from", str(source), config=config)
    assert copied.returncode == 0 and "; 2 stored responses copied" in copied.stdout, copied.stdout + copied.stderr
    again = nanobot("db", "copy", "--from", str(source), config=config)
    assert again.returncode == 0 and "stored responses" not in again.stdout
    with ServerProcess(merge(base, {"database": {"url": url}})) as new:
        client = sdk(new)
        assert client.responses.retrieve(second.id).output_text == "You said: and then"
        client.responses.create(model="scripted", input="on postgres", previous_response_id=second.id)
        users = [m["content"] for m in upstream.requests()[-1]["body"]["messages"] if m["role"] == "user"]
        assert users == ["kept in sqlite", "and then", "on postgres"]
