"""The server's state folder: database, SQLite side files, uploads, locks.

It lives apart from the agent's workspace (``agents.defaults.stateDir``,
default ``<workspace>.state``), so nothing a tool or a sandboxed command
writes can become a file the server opens: a planted symlink under the
uploads, or a hot ``nanobot.db-journal`` SQLite would replay at start-up.

The server never follows a link in its own paths: the state folder and
the folders below it are opened as :class:`SafeDir`; anything but a real
directory owned by the server's user is refused at start-up (exit 2).
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import stat
from pathlib import Path

from nanobot.config import Config, ConfigError
from nanobot.storage.safedir import SafeDir

log = logging.getLogger("nanobot.storage")

DB_NAME = "nanobot.db"
SIDE_FILES = ("-wal", "-shm")  # what a WAL database keeps beside itself
JOURNAL = "-journal"  # a rollback journal: never written by this server (WAL)
MEDIA = ("media", "api")  # uploads, below the state folder


class StateError(ConfigError):
    """The state folder or the database is not what the server created; exit 2."""


def media(config: Config) -> SafeDir:
    """Where uploads are kept."""
    return SafeDir(config.state_dir, MEDIA)


def database_path(config: Config) -> Path:
    return config.state_dir / DB_NAME


def prepare_state(config: Config) -> None:
    """Check (and create) the state folder before anything opens a file in it.

    Moves an older install's ``<workspace>/nanobot.db`` in, refuses a
    foreign rollback journal and a corrupt database. :class:`StateError`
    (exit 2) names the path and what to do.
    """
    for folder in (SafeDir(config.state_dir), media(config)):
        try:
            os.close(folder.open())
        except OSError as exc:
            raise StateError(f"state folder: {exc.strerror or exc}") from None
    if config.database.url:
        return  # PostgreSQL: the state folder only holds uploads and locks
    # The database itself is checked by its own thread as it opens it
    # (Database(verify=True)), off the event loop.
    _migrate(config.workspace / DB_NAME, database_path(config))


def _migrate(old: Path, new: Path) -> None:
    """An install from before the state folder kept its database in the workspace."""
    if not os.path.lexists(old) or os.path.lexists(new):
        return
    if os.path.lexists(f"{old}{JOURNAL}"):
        raise StateError(
            f"{old}{JOURNAL}: a rollback journal beside the old database, which this server never writes; "
            f"it may have been planted. Check the database, delete that file, then start again"
        )
    for suffix in ("", *SIDE_FILES):
        source = Path(f"{old}{suffix}")
        if not os.path.lexists(source):
            continue
        if not stat.S_ISREG(os.lstat(source).st_mode):
            raise StateError(f"{source}: not a regular file (a link?); refusing to move it into the state folder")
        shutil.move(str(source), f"{new}{suffix}")
    log.warning("moved the database %s (and its -wal/-shm) into the state folder: %s", old, new)


def check_database(path: Path) -> None:
    """Refuse a hot journal the server did not write; then ``PRAGMA quick_check``.

    Blocking (a scan of the file): the database thread runs it, before
    its own connection opens the file.
    """
    journal = Path(f"{path}{JOURNAL}")
    if os.path.lexists(journal):
        raise StateError(
            f"{journal}: a rollback journal, which this server never writes (its database is WAL); "
            f"SQLite would replay it into {path.name}. Move it away (keep it for inspection) and start again"
        )
    if not os.path.lexists(path):
        return
    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise StateError(f"{path}: not a regular file (a link?), refused")
    problem = _quick_check(path)
    if problem is not None:
        raise StateError(
            f"{path}: the database is corrupt ({problem}). Restore it from a backup, "
            f"or move it away to start with an empty one"
        )


def _quick_check(path: Path) -> str | None:
    try:
        # No journal is left to replay (checked above), and the file exists.
        conn = sqlite3.connect(str(path))
        try:
            rows = conn.execute("PRAGMA quick_check").fetchall()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    result = "; ".join(str(row[0]) for row in rows[:5])
    return None if result == "ok" else result
