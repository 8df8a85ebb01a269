"""Per-session ordering: one turn at a time per session, in arrival order.

Each key's lock lives only while someone holds or waits for it, so a million
distinct session ids cost nothing once their requests end.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import zlib
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

from nanobot.config import ConfigError

try:
    import fcntl
except ImportError:  # not POSIX: only one worker process there
    fcntl = None  # type: ignore[assignment]


class SessionOrdering(Protocol):
    """What a turn needs: ``async with ordering.hold(key):`` runs alone on ``key``."""

    def hold(self, key: str) -> AbstractAsyncContextManager[None]: ...


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # holders + waiters


class _Hold:
    """``async with`` for one key (a plain class: cheaper than a generator CM)."""

    __slots__ = ("_locks", "_key", "_entry")

    def __init__(self, locks: dict[str, _Entry], key: str) -> None:
        self._locks = locks
        self._key = key

    async def __aenter__(self) -> None:
        entry = self._locks.get(self._key)
        if entry is None:
            entry = self._locks[self._key] = _Entry()
        entry.users += 1
        self._entry = entry
        try:
            # asyncio.Lock hands over in FIFO order; a cancelled waiter (the
            # request's deadline) leaves the queue intact for the others.
            await entry.lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._entry.lock.release()
        self._leave()

    def _leave(self) -> None:
        entry = self._entry
        entry.users -= 1
        if entry.users == 0:
            del self._locks[self._key]


class SessionLocks:
    """The in-process :class:`SessionOrdering`."""

    def __init__(self) -> None:
        self._locks: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._locks)

    def hold(self, key: str) -> _Hold:
        return _Hold(self._locks, key)


class SharedSessionLocks:
    """:class:`SessionOrdering` across the worker processes of one server.

    Also the :class:`~nanobot.sessions.store.SessionVersions` of the
    session store. In a process, turns on a key still queue in arrival order
    (:class:`SessionLocks`). Between processes, each key maps to one byte of
    a lock file, held with a POSIX record lock while this process runs a turn
    on any key of that byte. Record locks belong to the process, so the
    bytes it holds are counted here; and they vanish with the process, so a
    killed worker never leaves a session locked. A waiting turn polls (1 ms,
    doubling to 20 ms) and gives up only when its request's deadline
    cancels it. Across processes the order is the order the lock is taken,
    not strictly the order of arrival.
    """

    SLOTS = 1 << 16  # two keys share a byte about once per 65,536 pairs

    def __init__(self, lock: int | Path) -> None:
        """``lock``: the lock file's path, or a descriptor of it (:func:`open_lock_file`)
        opened once by the parent of the workers, so that every worker, a
        replacement forked after the path was deleted or replaced included,
        locks one inode."""
        self._local = SessionLocks()
        # Kept open for the life of the process: closing any descriptor of
        # the file would drop every record lock the process holds on it.
        self._fd = lock if isinstance(lock, int) else open_lock_file(lock)
        self._held: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._local)

    def hold(self, key: str) -> _SharedHold:
        return _SharedHold(self, key)

    async def take(self, slot: int) -> None:
        delay = 0.001
        while True:
            count = self._held.get(slot, 0)
            if count:  # this process holds the byte already, for another key
                self._held[slot] = count + 1
                return
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, slot)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.02)
                continue
            self._held[slot] = 1
            return

    def give(self, slot: int) -> None:
        count = self._held[slot] - 1
        if count:
            self._held[slot] = count
            return
        del self._held[slot]
        fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, slot)

    def slot(self, key: str) -> int:
        return zlib.crc32(key.encode()) % self.SLOTS

    # SessionVersions: an 8-byte counter per slot, after the lock bytes, read
    # and moved only by the process holding that slot. Keys sharing a slot
    # share its counter, which at worst costs them a re-read.

    def current(self, key: str) -> int:
        return int.from_bytes(os.pread(self._fd, 8, self._counter(key)), "little")

    def bump(self, key: str) -> int:
        version = self.current(key) + 1
        os.pwrite(self._fd, version.to_bytes(8, "little"), self._counter(key))
        return version

    def _counter(self, key: str) -> int:
        return self.SLOTS + 8 * self.slot(key)


def open_lock_file(path: Path) -> int:
    """The session lock file at ``path``, created 0600 if missing; a descriptor.

    Anything but a regular file there (a directory, a FIFO, a symlink) is a
    :class:`ConfigError` naming the path: the server would otherwise fail
    in every worker it starts.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot open the session lock file: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ConfigError(f"{path}: the session lock file is not a regular file")
    if stat.S_IMODE(info.st_mode) != 0o600:
        os.fchmod(fd, 0o600)
    return fd


class _SharedHold:
    __slots__ = ("_locks", "_local", "_slot")

    def __init__(self, locks: SharedSessionLocks, key: str) -> None:
        self._locks = locks
        self._local = locks._local.hold(key)
        self._slot = locks.slot(key)

    async def __aenter__(self) -> None:
        await self._local.__aenter__()
        try:
            await self._locks.take(self._slot)
        except BaseException:
            await self._local.__aexit__(None, None, None)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._locks.give(self._slot)
        await self._local.__aexit__(*exc)
