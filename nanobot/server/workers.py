"""``api.workers`` > 1: forked processes serving one port.

The parent binds the port (a listening socket per worker, see
``listen_per_worker``), forks the workers and from then on only
supervises: it announces the server once every worker is ready, forwards
SIGTERM/SIGINT, replaces a worker that dies, and returns when all are gone.
It forks before any thread or event loop exists, so every worker starts
clean. What keeps sessions correct across workers lives elsewhere: a turn
holds its session's byte of a shared lock file (``SharedSessionLocks``; the
parent opens it once, so a worker forked later locks the same inode), and
a worker's cached history is trusted only while that session's version in
the same file has not moved (``SqliteSessionStore``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable

from nanobot.config import ConfigError

log = logging.getLogger("nanobot.server")

STARTUP_TIMEOUT = 60.0
RESTARTS_PER_MINUTE = 5  # more than this and the server stops instead of looping
_POLL = 0.05
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class _Supervisor:
    def __init__(self, count: int, serve_one: Callable[[int, Callable[[], None]], None], stop_timeout: float) -> None:
        self._count = count
        self._serve_one = serve_one
        self._stop_timeout = stop_timeout
        self._ready_r, self._ready_w = os.pipe()
        self._children: dict[int, int] = {}  # pid -> worker index
        self._stopping_since: float | None = None
        self._restarts: deque[float] = deque()
        self.exit_code = 0

    # --- forking ------------------------------------------------------------------

    def spawn(self, index: int) -> None:
        # Signals wait until the worker has dropped the supervisor's handlers.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        pid = os.fork()
        if pid:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            self._children[pid] = index
            return
        code = 1
        try:  # the worker: never returns into the parent's code
            for sig in _STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
            _die_with_parent()
            os.close(self._ready_r)
            self._serve_one(index, self._tell_ready)
            code = 0
        except ConfigError as exc:
            print(f"nanobot: {exc}", file=sys.stderr, flush=True)
            code = 2
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()  # os._exit skips the interpreter's own flushing
            sys.stderr.flush()
            os._exit(code)

    # --- supervising ----------------------------------------------------------------

    def wait_ready(self) -> bool:
        """True once every worker reported ready; False if one exited first."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        ready = 0
        while ready < self._count:
            if time.monotonic() > deadline:
                log.error("workers did not start within %.0f s", STARTUP_TIMEOUT)
                self.exit_code = 1
                return False
            readable, _, _ = select.select([self._ready_r], [], [], _POLL)
            if readable:
                ready += len(os.read(self._ready_r, 64))
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid:
                self._children.pop(pid, None)
                self.exit_code = os.waitstatus_to_exitcode(status) or 1
                return False
        return True

    def _tell_ready(self) -> None:
        os.write(self._ready_w, b".")

    def stop(self, *_: object) -> None:
        if self._stopping_since is None:
            self._stopping_since = time.monotonic()
        for pid in self._children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def supervise(self) -> None:
        """Reap workers until all are gone, replacing any that die while serving."""
        while self._children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if not pid:
                self._enforce_stop_timeout()
                time.sleep(_POLL)
                continue
            index = self._children.pop(pid, None)
            if index is None or self._stopping_since is not None:
                continue
            log.warning(
                "worker %d (pid %d) exited (%s); starting another", index, pid, os.waitstatus_to_exitcode(status)
            )
            now = time.monotonic()
            self._restarts.append(now)
            while now - self._restarts[0] > 60:
                self._restarts.popleft()
            if len(self._restarts) > RESTARTS_PER_MINUTE:
                log.error("workers keep exiting; stopping the server")
                self.exit_code = 1
                self.stop()
                continue
            self.spawn(index)

    def _enforce_stop_timeout(self) -> None:
        if self._stopping_since is not None and time.monotonic() - self._stopping_since > self._stop_timeout:
            for pid in self._children:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def run_workers(
    count: int, serve_one: Callable[[int, Callable[[], None]], None], announce: Callable[[], None], stop_timeout: float
) -> int:
    """Fork ``count`` workers running ``serve_one(index, ready)``; supervise them; the exit code."""
    sup = _Supervisor(count, serve_one, stop_timeout)
    for sig in _STOP_SIGNALS:
        signal.signal(sig, sup.stop)
    for index in range(count):
        sup.spawn(index)
    if sup.wait_ready():
        announce()
    else:
        sup.stop()
    sup.supervise()
    return sup.exit_code


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker when the supervisor dies, even by SIGKILL."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: a stray worker stops on its own SIGTERM
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
