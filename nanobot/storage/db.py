"""One SQLite file, one connection, one thread.

SQLite calls block, so they never run on the event loop: every query is a
function handed to a single dedicated thread, which also serialises writers
without SQLite's busy-retry dance. WAL keeps readers and the writer apart on
disk and makes a committed turn survive a crash.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class Database:
    """An SQLite connection owned by one worker thread."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nanobot-db")
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._executor.submit(self._open).result()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL under WAL: a committed transaction survives a process crash;
        # only an OS crash may lose the last moments, never corrupt the file.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        self._conn = conn

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the database thread and wait (sync callers)."""
        if threading.current_thread().name.startswith("nanobot-db"):
            return fn(self._conn, *args)
        return self._executor.submit(fn, self._conn, *args).result()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the database thread without blocking the loop."""
        if self._closed:
            raise RuntimeError("database is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._conn, *args)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True

        def _close(conn: sqlite3.Connection | None) -> None:
            if conn is not None:
                conn.close()

        self._executor.submit(_close, self._conn).result()
        self._executor.shutdown(wait=True)


def transaction(conn: sqlite3.Connection, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
    """Apply ``statements`` atomically: all of them or none."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, params in statements:
            conn.execute(sql, params)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
