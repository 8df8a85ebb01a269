"""One SQLite file, one connection, one thread.

SQLite calls block, so they never run on the event loop: every query is a
function handed to a single dedicated thread, which also serialises writers
without SQLite's busy-retry dance. WAL keeps readers and the writer apart on
disk and makes a committed turn survive a crash.

Hand-offs are batched: jobs queued while the thread is busy run together
and their results come back to the loop in one wake-up. Under load that is
one thread switch per batch instead of two per query, which is most of what
a query costs here.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

from nanobot.storage.private import DIR_MODE, FILE_MODE, private_file, tighten_if_present
from nanobot.storage.state import check_database

T = TypeVar("T")

_STOP = object()


class Database:
    """An SQLite connection owned by one worker thread."""

    def __init__(self, path: Path | str, verify: bool = False) -> None:
        """``verify``: refuse a foreign hot journal and a corrupt file (the server's start-up)."""
        self.path = Path(path)
        self._verify = verify
        self._jobs: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Condition(threading.Lock())
        self._closed = False
        self._conn: sqlite3.Connection | None = None
        ready: list[BaseException | None] = []
        self._thread = threading.Thread(target=self._main, args=(ready,), name="nanobot-db", daemon=True)
        self._thread.start()
        with self._wake:
            while not ready:
                self._wake.wait()
        if ready[0] is not None:
            raise ready[0]

    # --- the database thread --------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        with _opening(self.path):
            if self._verify:
                check_database(self.path)
            # 0600 before SQLite writes a byte; SQLite gives the -wal and -shm
            # files it creates the database file's mode. Those an older version
            # left readable are tightened here.
            private_file(self.path)
            for suffix in ("-wal", "-shm"):
                tighten_if_present(self.path.with_name(self.path.name + suffix))
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            _use_wal(conn)
        # NORMAL under WAL: a committed transaction survives a process crash;
        # only an OS crash may lose the last moments, never corrupt the file.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _main(self, ready: list[BaseException | None]) -> None:
        try:
            self._conn = self._open()
            error = None
        except BaseException as exc:  # reported to the constructor
            error = exc
        with self._wake:
            ready.append(error)
            self._wake.notify_all()
        if error is not None:
            return
        while True:
            with self._wake:
                while not self._jobs:
                    self._wake.wait()
                batch = list(self._jobs)
                self._jobs.clear()
            done: dict[asyncio.AbstractEventLoop, list[tuple[Any, ...]]] = {}
            for job in batch:
                if job[0] is _STOP:
                    self._finish(done)
                    if self._conn is not None:
                        self._conn.close()
                    job[1].set()
                    return
                fn, args, loop, fut = job
                try:
                    outcome = (fut, True, fn(self._conn, *args))
                except BaseException as exc:  # handed to the awaiting coroutine
                    outcome = (fut, False, exc)
                if loop is None:
                    fut.append(outcome)
                else:
                    done.setdefault(loop, []).append(outcome)
            self._finish(done)
            with self._wake:
                self._wake.notify_all()  # sync callers waiting in call()

    @staticmethod
    def _finish(done: dict[asyncio.AbstractEventLoop, list[tuple[Any, ...]]]) -> None:
        for loop, outcomes in done.items():
            try:
                loop.call_soon_threadsafe(_resolve, outcomes)
            except RuntimeError:
                pass  # that loop is closed: nobody waits for these any more

    # --- callers ----------------------------------------------------------------

    def _submit(self, job: tuple[Any, ...]) -> None:
        if self._closed:
            raise RuntimeError("database is closed")
        with self._wake:
            self._jobs.append(job)
            self._wake.notify_all()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the database thread without blocking the loop."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._submit((fn, args, loop, fut))
        return cast(T, await fut)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the database thread and wait (start-up, CLI)."""
        if threading.current_thread() is self._thread:
            return fn(self._conn, *args)
        reply: list[tuple[Any, ...]] = []  # the database thread appends (fut, ok, value)
        self._submit((fn, args, None, reply))
        with self._wake:
            while not reply:
                self._wake.wait()
        _, ok, value = reply[0]
        if not ok:
            raise value
        return cast(T, value)

    def close(self) -> None:
        """Finish queued work, close the connection and stop the thread."""
        if self._closed:
            return
        stopped = threading.Event()
        self._submit((_STOP, stopped))
        self._closed = True
        stopped.wait()
        self._thread.join()


@contextlib.contextmanager
def _opening(path: Path, timeout: float = 10.0) -> Iterator[None]:
    """Hold ``<db>.open.lock`` while the file is checked, opened and put in WAL mode.

    Switching a new file to WAL goes through a short-lived rollback journal:
    a worker starting beside another must not take that journal for a
    foreign one. A file of its own, because closing any descriptor of the
    database would drop the POSIX locks SQLite holds on it.
    """
    fd = os.open(f"{path}.open.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{path}: another process has been opening the database for {timeout:.0f} s"
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # releases the flock


def _use_wal(conn: sqlite3.Connection, timeout: float = 10.0) -> None:
    """Put the file in WAL mode, waiting for other processes doing the same.

    Workers starting together all switch one new file: SQLite answers one of
    them "locked" at once, skipping its busy wait, where waiting would
    deadlock. The switch is then tried again until the winner has made it.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _resolve(outcomes: list[tuple[Any, ...]]) -> None:
    for fut, ok, value in outcomes:
        if fut.cancelled():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)
