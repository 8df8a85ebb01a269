"""The ``outbox`` table in SQLite and every statement on it (for :mod:`~nanobot.outbound.sqlite_outbox`).

Each function takes the connection first and runs on the database thread
(through ``Database.run``); none of them is ever called on the event loop.
"""

from __future__ import annotations

import sqlite3

from nanobot.outbound.base import DELIVERED, Due, OutboxRow

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    content TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    progress INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(next_attempt) WHERE state = 'pending';
"""

_ROW_COLUMNS = "id, channel, chat_id, content, state, attempts, last_error, created, updated"


def create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(_SCHEMA)
    columns = {r[1] for r in conn.execute("PRAGMA table_info(outbox)")}
    if "progress" not in columns:  # a table made before pieces were tracked
        conn.execute("ALTER TABLE outbox ADD COLUMN progress INTEGER NOT NULL DEFAULT 0")


def insert(
    conn: sqlite3.Connection, channel: str, chat_id: str, content: str, state: str, error: str | None, now: float
) -> int:
    cur = conn.execute(
        "INSERT INTO outbox (channel, chat_id, content, state, attempts, progress, next_attempt,"
        " last_error, created, updated) VALUES (?, ?, ?, ?, 0, 0, ?, ?, ?, ?)",
        (channel, chat_id, content, state, now, error, now, now),
    )
    assert cur.lastrowid is not None  # set by every INSERT
    return cur.lastrowid


def select(conn: sqlite3.Connection, states: tuple[str, ...] | None, limit: int) -> list[OutboxRow]:
    where, params = "", []
    if states is not None:
        where = f"WHERE state IN ({', '.join('?' * len(states))})"
        params = list(states)
    sql = f"SELECT {_ROW_COLUMNS} FROM outbox {where} ORDER BY id DESC LIMIT ?"
    return [OutboxRow(*r) for r in conn.execute(sql, (*params, limit))]


def counts(conn: sqlite3.Connection, known: tuple[str, ...]) -> dict[tuple[str, str], int]:
    """Rows by (channel, state); channels not in ``known`` (names a model made up) as one ``other``."""
    rows = conn.execute(
        f"SELECT CASE WHEN {_in(known)} THEN channel ELSE 'other' END AS c, state, count(*) "
        "FROM outbox GROUP BY c, state",
        known,
    )
    return {(channel, state): n for channel, state, n in rows}


def _in(channels: tuple[str, ...]) -> str:
    return f"channel IN ({', '.join('?' * len(channels))})"


def due_rows(conn: sqlite3.Connection, channels: tuple[str, ...], now: float, limit: int) -> list[Due]:
    # Rows of a channel disabled since they were queued are left alone (not
    # failed): enabling the channel again sends them.
    sql = (
        "SELECT id, channel, chat_id, content, attempts, progress, next_attempt FROM outbox"
        f" WHERE state = 'pending' AND next_attempt <= ? AND {_in(channels)}"
        " ORDER BY next_attempt, id LIMIT ?"
    )
    return [Due(*r) for r in conn.execute(sql, (now, *channels, limit))]


def earliest(conn: sqlite3.Connection, channels: tuple[str, ...]) -> float | None:
    sql = f"SELECT MIN(next_attempt) FROM outbox WHERE state = 'pending' AND {_in(channels)}"
    earliest: float | None = conn.execute(sql, channels).fetchone()[0]
    return earliest


def claim(conn: sqlite3.Connection, row_id: int, seen: float, lease_end: float, now: float) -> bool:
    # Compare-and-set on next_attempt: every change to a pending row moves
    # it, so success means the row is still exactly as the worker read it.
    cur = conn.execute(
        "UPDATE outbox SET next_attempt = ?, updated = ? WHERE id = ? AND state = 'pending' AND next_attempt = ?",
        (lease_end, now, row_id, seen),
    )
    return cur.rowcount == 1


def set_progress(conn: sqlite3.Connection, row_id: int, progress: int, now: float) -> None:
    conn.execute("UPDATE outbox SET progress = ?, updated = ? WHERE id = ?", (progress, now, row_id))


def mark_delivered(conn: sqlite3.Connection, row_id: int, now: float) -> None:
    conn.execute(
        f"UPDATE outbox SET state = '{DELIVERED}', attempts = attempts + 1, last_error = NULL,"
        " updated = ? WHERE id = ?",
        (now, row_id),
    )


def mark_failure(
    conn: sqlite3.Connection, row_id: int, state: str, error: str, next_attempt: float, now: float
) -> None:
    conn.execute(
        "UPDATE outbox SET state = ?, attempts = attempts + 1, last_error = ?, next_attempt = ?,"
        " updated = ? WHERE id = ?",
        (state, error, next_attempt, now, row_id),
    )


def release(conn: sqlite3.Connection, leases: list[tuple[int, float]], now: float) -> None:
    # Only rows still carrying our lease: one whose result was written in
    # the meantime keeps that result.
    conn.executemany(
        "UPDATE outbox SET next_attempt = ?, updated = ? WHERE id = ? AND state = 'pending' AND next_attempt = ?",
        [(now, now, row_id, lease_end) for row_id, lease_end in leases],
    )
