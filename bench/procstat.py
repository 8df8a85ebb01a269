"""CPU and memory of a process tree, read from `/proc` (Linux only).

CPU time is the figure that stays stable on a noisy, shared machine: wall-clock
throughput depends on what else runs, but the CPU seconds a server spends per
request barely do. `tree_cpu(pid)` sums `utime+stime+cutime+cstime` over the
process and every live descendant, so worker processes (the file-extraction
pool) are charged to the server, and a descendant that exited and was reaped
is still counted through its parent's `cutime/cstime`.

`RssSampler` polls `VmRSS` every ~100 ms in a thread to catch the peak, which a
before/after pair would miss.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the `(comm)` field, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rfind(b")") + 2 :].decode().split()


def descendants(pid: int) -> list[int]:
    """Live descendants of `pid` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        fields = _stat_fields(int(name))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
    out: list[int] = []
    todo = list(children.get(pid, ()))
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(children.get(child, ()))
    return out


def proc_cpu(pid: int) -> float:
    """CPU seconds of one process, its reaped children included (0 if gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # After comm: state ppid ... utime(11) stime(12) cutime(13) cstime(14).
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / _CLK_TCK


def own_cpu(pid: int | None) -> float:
    """CPU seconds of the process itself (its threads, no child processes)."""
    fields = _stat_fields(pid) if pid is not None else None
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / _CLK_TCK


def tree_cpu(pid: int | None) -> float:
    """CPU seconds of `pid` and all its live descendants (0.0 for None)."""
    if pid is None:
        return 0.0
    return proc_cpu(pid) + sum(proc_cpu(child) for child in descendants(pid))


def runqueue_wait(pid: int | None) -> float | None:
    """Seconds the process's main thread (for the server, its event loop) has
    spent runnable but waiting for a CPU; None where schedstat is missing.

    When a latency probe is slow, this tells a loop that had work to do from
    a loop that was ready but not scheduled.
    """
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat", "rb") as fh:
            return int(fh.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def rss_kb(pid: int) -> int:
    """Resident set size of one process in KiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class RssSampler:
    """Samples the RSS of `pid` (and of its tree) every `interval` seconds.

    With `tree=True` the before/peak/after figures are sums over the whole
    process tree (for a peer started through a shell, whose pid is the shell).
    """

    pid: int
    interval: float = 0.1
    tree: bool = False
    before_kb: int = 0
    peak_kb: int = 0
    after_kb: int = 0
    tree_peak_kb: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _read(self, kids: list[int]) -> tuple[int, int]:
        main = rss_kb(self.pid)
        return main, main + sum(rss_kb(k) for k in kids)

    def start(self) -> RssSampler:
        main, total = self._read(descendants(self.pid))
        self.before_kb = self.peak_kb = total if self.tree else main
        self.tree_peak_kb = total
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        kids: list[int] = []
        next_scan = 0.0
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            if now >= next_scan:  # re-list workers about once a second
                kids, next_scan = descendants(self.pid), now + 1.0
            main, total = self._read(kids)
            self.peak_kb = max(self.peak_kb, total if self.tree else main)
            self.tree_peak_kb = max(self.tree_peak_kb, total)
            self.samples += 1

    def stop(self, settle: float = 0.2) -> RssSampler:
        """Stop sampling; `after` is read `settle` seconds later."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        time.sleep(settle)
        main, total = self._read(descendants(self.pid))
        self.after_kb = total if self.tree else main
        self.peak_kb = max(self.peak_kb, self.after_kb)
        self.tree_peak_kb = max(self.tree_peak_kb, total)
        return self


def self_cpu() -> float:
    """CPU seconds (user+system) this process has used so far."""
    times = os.times()
    return times.user + times.system
