"""The workspace is 0700 and the database files 0600, whatever the umask.

Checked on a real server process started with the common umask 022, on a
fresh workspace and on one an older version left world-readable.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from servers import ServerProcess

DB_FILES = ("nanobot.db", "nanobot.db-wal", "nanobot.db-shm")


@pytest.fixture(autouse=True)
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the server inherits it
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def one_turn(server: ServerProcess) -> None:
    r = requests.post(
        server.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}, timeout=30
    )
    assert r.status_code == 200, r.text


def test_a_fresh_workspace_and_its_database_are_private(make_server: Callable[..., ServerProcess]) -> None:
    server = make_server({})
    one_turn(server)
    assert mode(server.workspace) == 0o700
    assert mode(server.state_dir) == 0o700
    for name in DB_FILES:  # -wal and -shm exist while the server has the file open
        assert mode(server.state_dir / name) == 0o600, name
    assert mode(server.state_dir / "nanobot.db.open.lock") == 0o600


def test_files_an_older_version_left_readable_are_tightened(
    make_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    workspace = tmp_path / "old-workspace"
    workspace.mkdir(mode=0o755)
    conn = sqlite3.connect(workspace / "nanobot.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    for name in DB_FILES:
        os.chmod(workspace / name, 0o644)
    conn.close()  # the -wal and -shm go with the last connection: make them again, readable
    for name in DB_FILES[1:]:
        (workspace / name).touch(mode=0o644)
    server = make_server({}, workspace=workspace)
    one_turn(server)
    assert mode(workspace) == 0o700
    for name in DB_FILES:  # moved into the state folder at start-up, and tightened there
        assert not (workspace / name).exists(), name
        assert mode(server.state_dir / name) == 0o600, name
