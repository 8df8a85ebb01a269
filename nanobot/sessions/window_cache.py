"""Recent sessions' history windows in memory, bounded in bytes.

Each window holds a session's last messages as committed, the version they
were read at (a store says what its versions are), and what they weigh (LRU:
a session of a few huge messages weighs what it costs, not one slot). Shared
by the session stores, whatever database is behind them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

Message = dict[str, Any]

# What a cached message costs beyond its JSON text (its dict, the parsed
# strings' headers), and a cached session beyond its messages: a million
# tiny sessions are bounded by the budget too.
MESSAGE_OVERHEAD = 400
SESSION_OVERHEAD = 300


@dataclass(slots=True)
class Window:
    """A session's cached last messages, and what each weighs (its JSON size)."""

    version: int
    rows: list[Message]
    sizes: list[int]  # one per row, its JSON's bytes: what it weighs, and a bound on its characters (budget.py)
    cost: int
    paused: bytes | None = None  # the session's paused turn at this version (a store that reads it with the window)


class WindowCache:
    """Windows of at most ``keep`` messages, ``budget`` bytes in all."""

    def __init__(self, budget: int, keep: int) -> None:
        self._windows: OrderedDict[str, Window] = OrderedDict()
        self._budget = budget
        self.keep = keep
        self.cached_bytes = 0  # what the windows in the cache weigh together

    def __len__(self) -> int:
        return len(self._windows)

    def get(self, key: str) -> Window | None:
        """``key``'s window, now the most recently used; None if not cached."""
        window = self._windows.get(key)
        if window is not None:
            self._windows.move_to_end(key)
        return window

    def remember(
        self, key: str, version: int, rows: list[Message], sizes: list[int], paused: bytes | None = None
    ) -> None:
        rows, sizes = rows[-self.keep :], sizes[-self.keep :]
        cost = SESSION_OVERHEAD + sum(sizes) + MESSAGE_OVERHEAD * len(sizes)  # at most ``keep`` numbers
        if paused is not None:
            cost += len(paused)
        self.drop(key)
        if cost > self._budget:
            return  # bigger than the whole budget: read from the database each time
        self._windows[key] = Window(version, rows, sizes, cost, paused)
        self.cached_bytes += cost
        while self.cached_bytes > self._budget:
            _, evicted = self._windows.popitem(last=False)
            self.cached_bytes -= evicted.cost

    def drop(self, key: str) -> None:
        old = self._windows.pop(key, None)
        if old is not None:
            self.cached_bytes -= old.cost

    def clear(self) -> None:
        self._windows.clear()
        self.cached_bytes = 0
