"""The server's state folder: out of the sandbox's reach, never followed through a link, checked at start-up."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
import requests
from common import CHAT, ask, run_nanobot
from servers import ServerProcess, merge, upstream_config

from nanobot.testing.process import UpstreamProcess

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


def exec_config(upstream: UpstreamProcess, **extra: object) -> dict:
    return merge(upstream_config(upstream.url), {"tools": {"exec": {"enabled": True}}, **extra})


def run_exec(server: ServerProcess, command: str) -> None:
    r = ask(server, "#tool:exec " + json.dumps({"command": command}), uuid.uuid4().hex)
    assert r.status_code == 200, r.text


def serve_fails(tmp_path: Path, workspace: Path, extra: dict | None = None) -> str:
    """``nanobot serve`` on ``workspace`` must refuse to start: its stderr."""
    config = tmp_path / "refused.json"
    config.write_text(json.dumps(merge({"agents": {"defaults": {"workspace": str(workspace)}}}, extra or {})))
    p = run_nanobot("serve", "--config", str(config), "--port", "0", timeout=30)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    return p.stderr


@needs_bwrap
def test_a_planted_uploads_link_is_not_followed(upstream: UpstreamProcess, tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    victim = host / "old-file"
    victim.write_text("keep me")
    past = time.time() - 90 * 86400
    os.utime(victim, (past, past))
    ws = tmp_path / "ws"
    with ServerProcess(exec_config(upstream), workspace=ws) as s:
        # The old uploads folder, inside the workspace: the sandbox can plant a link there.
        run_exec(s, f"mkdir -p media && ln -s {host} media/api && ls -l media")
        assert (ws / "media" / "api").is_symlink()
        r = requests.post(s.url + CHAT, data={"message": "look"}, files={"files": ("x.txt", b"hello")}, timeout=60)
        assert r.status_code == 200, r.text
        assert sorted(os.listdir(host)) == ["old-file"]
        assert len(os.listdir(s.state_dir / "media" / "api")) == 1
    # The retention sweep at start-up removes nothing through the link.
    with ServerProcess(exec_config(upstream, api={"files": {"retentionDays": 1}}), workspace=ws):
        time.sleep(0.5)
    assert victim.read_text() == "keep me"


def test_uploads_folder_swapped_for_a_link_is_refused(upstream: UpstreamProcess, tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    with ServerProcess(upstream_config(upstream.url), workspace=tmp_path / "ws") as s:
        media = s.state_dir / "media" / "api"
        shutil.rmtree(media)
        media.symlink_to(host)
        r = requests.post(s.url + CHAT, data={"message": "x"}, files={"files": ("x.txt", b"hi")}, timeout=60)
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
        assert os.listdir(host) == []
        assert "not a real directory" in s.stderr_text()


@needs_bwrap
def test_a_journal_planted_in_the_workspace_is_ignored(upstream: UpstreamProcess, tmp_path: Path) -> None:
    ws, sid = tmp_path / "ws", "kept"
    with ServerProcess(exec_config(upstream), workspace=ws) as s:
        assert ask(s, "remember the lime", sid).status_code == 200
        run_exec(s, "head -c 4096 /dev/urandom > nanobot.db-journal; echo planted")
        assert (ws / "nanobot.db-journal").exists()
    with ServerProcess(upstream_config(upstream.url), workspace=ws) as s:
        upstream.clear()
        assert ask(s, "again", sid).status_code == 200
        assert s.database.exists()
    with sqlite3.connect(s.database) as db:
        assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM messages WHERE session = ?", (f"api:{sid}",)).fetchone()[0] == 4


def test_a_journal_in_the_state_folder_refuses_start(upstream: UpstreamProcess, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    with ServerProcess(upstream_config(upstream.url), workspace=ws) as s:
        assert ask(s, "hi").status_code == 200
    journal = Path(f"{s.database}-journal")
    journal.write_bytes(os.urandom(4096))
    err = serve_fails(tmp_path, ws)
    assert str(journal) in err and "rollback journal" in err
    assert journal.exists()  # left for the operator to inspect


def test_a_state_folder_that_is_a_link_refuses_start(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    real.mkdir()
    (tmp_path / "ws.state").symlink_to(real)
    err = serve_fails(tmp_path, tmp_path / "ws")
    assert str(tmp_path / "ws.state") in err and "not a real directory" in err
    assert os.listdir(real) == []


def test_a_corrupt_database_refuses_start(tmp_path: Path) -> None:
    state = tmp_path / "ws.state"
    state.mkdir(mode=0o700)
    (state / "nanobot.db").write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    err = serve_fails(tmp_path, tmp_path / "ws")
    assert "corrupt" in err and str(state / "nanobot.db") in err


def test_a_state_folder_inside_the_workspace_is_refused(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    err = serve_fails(tmp_path, ws, {"agents": {"defaults": {"stateDir": str(ws / "state")}}})
    assert "stateDir" in err and "outside the workspace" in err


def test_an_old_database_in_the_workspace_is_moved_with_its_history(upstream: UpstreamProcess, tmp_path: Path) -> None:
    ws, sid = tmp_path / "ws", "old"
    with ServerProcess(upstream_config(upstream.url), workspace=ws) as s:
        assert ask(s, "remember the lime", sid).status_code == 200
    for suffix in ("", "-wal", "-shm"):  # as an older version left them
        if os.path.exists(f"{s.database}{suffix}"):
            os.rename(f"{s.database}{suffix}", ws / f"nanobot.db{suffix}")
    with ServerProcess(upstream_config(upstream.url), workspace=ws) as s:
        upstream.clear()
        assert ask(s, "what did I say", sid).status_code == 200
        sent = [m["content"] for m in upstream.requests()[-1]["body"]["messages"][1:]]
        assert sent == ["remember the lime", "You said: remember the lime", "what did I say"]
        assert "moved the database" in s.stderr_text()
    assert not (ws / "nanobot.db").exists() and s.database.exists()


def test_an_old_database_with_a_journal_is_not_moved(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    sqlite3.connect(ws / "nanobot.db").execute("CREATE TABLE t (x)").connection.close()
    (ws / "nanobot.db-journal").write_bytes(b"planted")
    err = serve_fails(tmp_path, ws)
    assert str(ws / "nanobot.db-journal") in err
    assert (ws / "nanobot.db").exists()


def test_postgres_mode_keeps_uploads_in_the_state_folder(tmp_path: Path) -> None:
    # database.url set: the state folder still holds uploads (checked at start, before any connection).
    from nanobot.config import Config
    from nanobot.storage.state import media

    config = Config()
    config.agents.defaults.workspace = str(tmp_path / "ws")
    config.database.url = "postgresql://x@127.0.0.1:1/db"
    assert media(config).path == tmp_path / "ws.state" / "media" / "api"
