"""Run :func:`extract_text` in worker processes, bounded in time, off the loop.

Each worker is one process with one pipe, driven by one thread of a small
thread pool: the thread sends the job, waits on the pipe with a deadline and,
when the deadline passes, kills the process (SIGKILL; a parser stuck in C code
ignores anything gentler) and reaps it. The event loop only awaits futures, so
neither a slow document nor a 10 MB pipe transfer ever blocks it. An
``asyncio.Queue`` of idle workers bounds the work in flight to
``limits.workers`` jobs; the rest wait their turn on the loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from nanobot.errors import UnprocessableFile
from nanobot.files.extract import ExtractionError, extract_text, preload
from nanobot.files.limits import FileLimits

log = logging.getLogger(__name__)

Target = Callable[[str, bytes, FileLimits], str]

# Decoding this much UTF-8 takes well under a millisecond, less than the
# pickling and pipe round trip to a worker would; beyond it a huge text file
# could hold the loop for tens of milliseconds, so it goes to the pool.
INLINE_TEXT_BYTES = 256 * 1024
# Spawning an interpreter and importing the document libraries; not charged
# to any file's timeout.
STARTUP_TIMEOUT = 60.0
_REAP_TIMEOUT = 5.0

# "spawn" starts each worker as a fresh interpreter that inherits nothing but
# its pipe. "fork" would copy a process that has an event loop, executor
# threads and open sockets/SQLite handles: a lock held by another thread at
# fork time stays locked forever in the child, and a parser exploit in the
# child would hold the server's descriptors. "forkserver" is also safe, but
# keeps a process-wide server and preload list shared with any other user of
# multiprocessing; workers are long-lived, so spawn's start-up cost is paid
# rarely (once per worker, and after a kill).
_CONTEXT = multiprocessing.get_context("spawn")


def _worker_main(conn: Connection, target: Target, memory_limit: int) -> None:
    """A worker process: serve ``(kind, data, limits)`` jobs until the pipe closes."""
    # Ctrl-C reaches the whole process group; shutting workers down is the
    # parent's job, and a KeyboardInterrupt here would only print tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    _limit_memory(memory_limit)
    _yield_cpu()
    preload()
    conn.send(("ready", "", False))
    while True:
        try:
            kind, data, limits = conn.recv()
        except (EOFError, OSError):
            return
        recycle = False
        try:
            if isinstance(data, str):  # the path of the saved upload: read it here
                data = Path(data).read_bytes()
            reply: tuple[str, str, bool] = ("ok", target(kind, data, limits), False)
        except ExtractionError as err:
            reply = ("error", err.reason, False)
        except MemoryError:
            # The heap may be fragmented or half-built objects kept alive:
            # answer, then let the parent replace this process.
            reply = ("error", "the document needs too much memory to read", True)
            recycle = True
        except Exception as err:
            reply = ("error", f"the document reader failed ({type(err).__name__})", False)
        del data
        conn.send(reply)
        if recycle:
            return


def _yield_cpu() -> None:
    """Read documents at a lower CPU priority than the server's event loop.

    With every core busy extracting, the loop would otherwise queue behind
    the workers for a CPU each time it wakes; at nice 10 the scheduler runs
    it first, so /health and open streams stay prompt.
    """
    try:
        os.nice(10)
    except (AttributeError, OSError):  # not POSIX, or not permitted: run as is
        pass


def _limit_memory(limit: int) -> None:
    """Cap this process's address space so a ballooning parser gets MemoryError."""
    if limit <= 0:
        return
    try:  # POSIX only
        import resource
    except ImportError:  # not POSIX: rely on the timeout alone
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


class _Worker:
    """One worker process and its pipe, driven from one executor thread at a time."""

    def __init__(self, name: str, target: Target, memory_limit: int) -> None:
        self._name = name
        self._target = target
        self._memory_limit = memory_limit
        # Guards the process/pipe pair against close() from another thread.
        self._lock = threading.Lock()
        self._proc: Any = None
        self._conn: Connection | None = None
        self._busy = False
        self._closed = False

    def run(self, kind: str, data: bytes | str, limits: FileLimits) -> tuple[str, str]:
        """Blocking round trip: ``(status, payload)``; status is ok/error/timeout/crashed/closed."""
        with self._lock:
            if self._closed:
                return "closed", ""
            if self._proc is None or not self._proc.is_alive():
                self._discard()
                self._spawn()
            conn = self._conn
            assert conn is not None
            self._busy = True
        try:
            return self._round_trip(conn, kind, data, limits)
        finally:
            with self._lock:
                self._busy = False

    def ensure_started(self) -> None:
        """Spawn the process now if it is not running (blocking: call from a thread)."""
        with self._lock:
            if not self._closed and (self._proc is None or not self._proc.is_alive()):
                self._discard()
                self._spawn()

    def _round_trip(self, conn: Connection, kind: str, data: bytes | str, limits: FileLimits) -> tuple[str, str]:
        started = time.monotonic()
        try:
            conn.send((kind, data, limits))
            remaining = limits.timeout_seconds - (time.monotonic() - started)
            if not conn.poll(max(remaining, 0.0)):
                log.warning("extraction worker %s timed out; killing it", self._name)
                self._stop(conn)
                return "timeout", ""
            status, payload, recycle = conn.recv()
        except (EOFError, OSError):
            self._stop(conn)
            return ("closed" if self._closed else "crashed"), ""
        if recycle:
            self._stop(conn)
        return status, payload

    def close(self) -> None:
        """Kill the process; a thread in the middle of a job sees EOF and reaps it."""
        with self._lock:
            self._closed = True
            if self._proc is not None:
                self._proc.kill()
            if not self._busy:
                self._discard()

    def _spawn(self) -> None:
        parent, child = _CONTEXT.Pipe(duplex=True)
        proc = _CONTEXT.Process(
            target=_worker_main,
            args=(child, self._target, self._memory_limit),
            name=self._name,
            daemon=True,  # never outlive the server, even if close() is skipped
        )
        try:
            proc.start()
        except BaseException:
            parent.close()
            raise
        finally:
            # Our copy of the child's end must go, or a dead worker never reads as EOF.
            child.close()
        self._proc, self._conn = proc, parent
        try:
            ready = parent.poll(STARTUP_TIMEOUT) and parent.recv()[0] == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            self._discard()
            raise RuntimeError(f"extraction worker {self._name} failed to start")

    def _stop(self, conn: Connection) -> None:
        with self._lock:
            if self._conn is conn:
                self._discard()

    def _discard(self) -> None:
        """Kill, reap and forget the current process (lock held)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(_REAP_TIMEOUT)
            if self._proc.exitcode is not None:  # reaped: free its sentinel fd now
                self._proc.close()
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None


class Extractor:
    """Extracts document text in a bounded pool of worker processes.

    Workers start lazily on first use, from the event loop that first calls
    :meth:`extract` (the instance then belongs to that loop). ``target`` swaps
    the function run in the workers (tests use it to simulate slow or crashing
    readers); it must be picklable, i.e. a module-level function. As with any
    spawned process, a worker imports the program's main module first, so
    that module must keep its work under ``if __name__ == "__main__":``.
    """

    def __init__(self, limits: FileLimits, *, target: Target | None = None) -> None:
        self._limits = limits
        self._target: Target = target or extract_text
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: asyncio.Queue[_Worker] | None = None
        self._workers: list[_Worker] = []
        self._threads: ThreadPoolExecutor | None = None
        self._closed = False

    async def extract(self, kind: str, data: bytes, filename: str, saved: Path | None = None) -> str:
        """The text of ``data``; raises :class:`UnprocessableFile` (422) naming ``filename``.

        With ``saved`` (the same bytes on disk) a worker is sent the path and
        reads the file itself: piping 10 MB costs the server ~5-10 ms of CPU
        and the event loop its share of the GIL while the pipe fills.
        """
        if self._closed:
            raise RuntimeError("the extractor is closed")
        if kind == "text" and len(data) <= INLINE_TEXT_BYTES and self._target is extract_text:
            try:
                return extract_text(kind, data, self._limits)
            except ExtractionError as err:
                raise _unreadable(filename, err.reason) from None
        idle, threads = self._start()
        worker = await idle.get()
        try:
            source = str(saved.absolute()) if saved is not None else data
            future = threads.submit(worker.run, kind, source, self._limits)
        except RuntimeError:  # close() shut the executor down while we waited
            idle.put_nowait(worker)
            raise RuntimeError("the extractor is closed") from None
        # The worker goes back to the queue when its thread is done, not when
        # this coroutine is: a cancelled caller must not free a busy worker.
        future.add_done_callback(functools.partial(self._release, worker))
        status, payload = await asyncio.wrap_future(future)
        if status == "ok":
            return payload
        if status == "error":
            raise _unreadable(filename, payload)
        if status == "timeout":
            raise UnprocessableFile(
                f"could not read '{filename}': extraction took longer than {self._limits.timeout_seconds:g} s",
                code="extraction_timeout",
            )
        if status == "crashed":
            raise _unreadable(filename, "the document reader stopped unexpectedly")
        raise RuntimeError("the extractor is closed")

    async def warm(self, processes: bool = False) -> None:
        """Start the driver threads now (and the processes, if asked).

        A thread pool starts its threads on first use, and ``Thread.start``
        waits for the new thread to run: under load, with other threads
        holding the GIL, that wait stalled the event loop for tens of ms.
        """
        idle, threads = self._start()
        workers = [await idle.get() for _ in range(len(self._workers))]
        try:
            # One job per worker at once: the executor must start every thread.
            job = (lambda w: w.ensure_started()) if processes else (lambda w: time.sleep(0.01))
            await asyncio.gather(*(asyncio.wrap_future(threads.submit(job, w)) for w in workers))
        finally:
            for worker in workers:
                idle.put_nowait(worker)

    async def close(self) -> None:
        """Kill every worker, reap it, and stop the threads; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._threads is not None:
            await asyncio.to_thread(self._shutdown, self._threads)

    def _start(self) -> tuple[asyncio.Queue[_Worker], ThreadPoolExecutor]:
        loop = asyncio.get_running_loop()
        if self._idle is None or self._threads is None:
            self._loop = loop
            self._idle = asyncio.Queue()
            count = self._limits.workers
            self._threads = ThreadPoolExecutor(count, thread_name_prefix="nanobot-extract")
            memory = self._limits.max_worker_memory_bytes
            for index in range(count):
                worker = _Worker(f"nanobot-extract-{index}", self._target, memory)
                self._workers.append(worker)
                self._idle.put_nowait(worker)
        elif loop is not self._loop:
            raise RuntimeError("an Extractor is bound to the event loop that first used it")
        return self._idle, self._threads

    def _release(self, worker: _Worker, _future: Future[tuple[str, str]]) -> None:
        # Runs in the executor thread that finished the job.
        assert self._loop is not None and self._idle is not None
        try:
            self._loop.call_soon_threadsafe(self._idle.put_nowait, worker)
        except RuntimeError:  # the loop is closed; nobody is waiting any more
            pass

    def _shutdown(self, threads: ThreadPoolExecutor) -> None:
        for worker in self._workers:
            worker.close()
        threads.shutdown(wait=True, cancel_futures=True)


def _unreadable(filename: str, reason: str) -> UnprocessableFile:
    return UnprocessableFile(f"could not read '{filename}': {reason}", code="unreadable_file")
