"""The outbound queue interface: messages for other chat channels.

The agent's ``message`` tool only ever talks to this interface; where rows
live (the embedded SQLite file, or a shared PostgreSQL database) and how they
reach a platform is the implementation's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# Row states. ``undeliverable``: the channel is not enabled, so it is kept for
# the record (``nanobot outbox``) and never sent later.
PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
UNDELIVERABLE = "undeliverable"


@dataclass(frozen=True, slots=True)
class Enqueued:
    id: int
    state: str  # PENDING or UNDELIVERABLE


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    channel: str
    chat_id: str
    content: str
    state: str
    attempts: int
    last_error: str | None
    created: float
    updated: float


@dataclass(frozen=True, slots=True)
class Due:
    """A pending row as the worker saw it when it picked it."""

    id: int
    channel: str
    chat_id: str
    content: str
    attempts: int
    progress: int
    next_attempt: float


class Outbox(Protocol):
    def is_enabled(self, channel: str) -> bool: ...

    async def enqueue(self, channel: str, chat_id: str, content: str) -> Enqueued: ...

    async def rows(self, states: tuple[str, ...] | None = None, limit: int = 100) -> list[OutboxRow]: ...

    async def counts(self) -> dict[tuple[str, str], int]:
        """Rows by ``(channel, state)``, for metrics."""

    async def start(self) -> None:
        """Start background delivery (the server does; ``nanobot agent`` too, briefly)."""

    async def close(self) -> None: ...
