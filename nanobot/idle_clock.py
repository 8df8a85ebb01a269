"""One timer for many things that act once they have been idle for a while.

A stream's heartbeat pings after ``interval`` seconds without a frame; an
upstream call fails after its read timeout without a byte. A timer each
would cost ~0.5 KB and a schedule and a cancel per stream or call, and the
timer would mostly be pushed forward. Here the things sharing a loop and an
interval share one timer: it fires when the one idle longest is due, calls
every one idle for ``interval``, then waits for the next one due, and stops
when none is left. Each is still called when its idleness reaches
``interval``, as with a timer of its own. Watching and letting go are a
dict's set and pop: the timer is not cancelled when the last one goes (it
fires once more, finds nothing, and stops), so a loop serving one request
at a time does not schedule one per request either.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Protocol


class Idle(Protocol):
    last: float  # loop.time() of its last activity

    def idle(self, now: float) -> bool:
        """Called once ``last`` is ``interval`` old: True to stay watched.

        It may move ``last`` forward (to count its wait from ``now``).
        """
        ...


class IdleClock:
    """The shared timer of one loop and interval (get it with :meth:`of`)."""

    # Keyed by the loop, weakly: a clock holds no reference to its loop.
    _clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, IdleClock]] = weakref.WeakKeyDictionary()
    # The last loop asked about and its clocks: calling a weak reference is
    # cheaper than a WeakKeyDictionary lookup, which builds one per call.
    _last: tuple[weakref.ref[asyncio.AbstractEventLoop], dict[float, IdleClock]] | None = None

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._watched: dict[Idle, None] = {}  # an ordered set
        self._handle: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop, interval: float) -> IdleClock:
        """``loop``'s clock for ``interval``."""
        last = cls._last
        if last is not None and last[0]() is loop:
            clocks = last[1]
        else:
            found = cls._clocks.get(loop)
            clocks = cls._clocks[loop] = {} if found is None else found
            cls._last = (weakref.ref(loop), clocks)
        clock = clocks.get(interval)
        if clock is None:
            clock = clocks[interval] = cls(interval)
        return clock

    def add(self, item: Idle, loop: asyncio.AbstractEventLoop) -> None:
        self._watched[item] = None
        if self._handle is None:
            self._handle = loop.call_at(item.last + self._interval, self._tick)

    def remove(self, item: Idle) -> None:
        """Stop watching ``item``; nothing if it was not watched."""
        self._watched.pop(item, None)

    def __len__(self) -> int:
        return len(self._watched)

    def _tick(self) -> None:
        self._handle = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        # A timer may fire a little early; a thousandth of the interval is
        # the tolerance the per-stream timers had.
        due = now - self._interval * 0.999
        for item in list(self._watched):
            if item.last <= due and not item.idle(now):
                self._watched.pop(item, None)
        if self._handle is not None:  # an item added by another's side effects set one
            self._handle.cancel()
            self._handle = None
        if self._watched:
            oldest = min(item.last for item in self._watched)
            self._handle = loop.call_at(oldest + self._interval, self._tick)


class Deadline:
    """Expires an ``asyncio.timeout(None)`` scope ``seconds`` after ``start``, on the shared clock.

    The scope stays asyncio's own: its expiry cancels the task and its exit
    turns that into ``TimeoutError``, as with a deadline given to it. Only
    its timer is shared. :meth:`stop` before the scope exits.
    """

    __slots__ = ("_scope", "_clock", "last")

    def __init__(self, scope: asyncio.Timeout, start: float, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._scope = scope
        self.last = start
        self._clock = IdleClock.of(loop, seconds)
        self._clock.add(self, loop)

    def idle(self, now: float) -> bool:
        self._scope.reschedule(now)  # due now: it expires at the loop's next turn
        return False

    def stop(self) -> None:
        self._clock.remove(self)
