"""``nanobot db copy``: an embedded SQLite database's sessions, queue, cron jobs and stored responses into PostgreSQL.

Idempotent: a session is copied only when PostgreSQL has no session of that
key yet (taken in the same transaction that writes it), each outbound
row carries its origin (``sqlite:<id>:<created>``) under a unique key, and
cron jobs and stored responses keep their (random, unique) ids, so a second
run, or two runs at once, copy nothing twice; a job or response PostgreSQL
has already is left as it is.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from nanobot.cron.store import COLUMNS as CRON_COLUMNS
from nanobot.storage.pg import connect, migrate

CHUNK = 500  # sessions per transaction

_CLAIM_SESSIONS = """
INSERT INTO nanobot_sessions (key, length, updated)
SELECT * FROM unnest($1::text[], $2::int[], $3::float8[])
ON CONFLICT (key) DO NOTHING RETURNING key
"""

_OUTBOX = """
INSERT INTO nanobot_outbox (channel, chat_id, content, state, attempts, progress, next_attempt,
                            last_error, created, updated, origin)
SELECT c, ch, co, s, a, p, CASE WHEN s = 'pending' THEN extract(epoch from clock_timestamp())::float8 ELSE n END,
       e, cr, u, o
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::int[], $7::float8[],
            $8::text[], $9::float8[], $10::float8[], $11::text[]) AS x(c, ch, co, s, a, p, n, e, cr, u, o)
ON CONFLICT (origin) DO NOTHING RETURNING 1
"""


_RESPONSES = """
INSERT INTO nanobot_responses
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::bytea[], $6::bytea[], $7::bytea[],
                     $8::int[])
ON CONFLICT (id) DO NOTHING RETURNING 1
"""
RESPONSES_CHUNK = 100  # stored responses per statement (each may hold megabytes of input)


@dataclass
class CopyResult:
    sessions: int = 0
    messages: int = 0
    skipped: int = 0  # sessions PostgreSQL already had
    outbox: int = 0
    cron: int = 0
    responses: int = 0  # stored /v1/responses responses


def open_sqlite(path: Path) -> sqlite3.Connection:
    """``path`` read-only; ValueError when it is not a nanobot database."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise ValueError(f"{path}: not an SQLite database ({exc})") from None
    if "messages" not in tables and "outbox" not in tables:
        conn.close()
        raise ValueError(f"{path}: not a nanobot database (no messages or outbox table)")
    return conn


def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


async def copy_database(path: Path, url: str, progress: Callable[[str], None]) -> CopyResult:
    db = open_sqlite(path)
    conn = await connect(url)
    try:
        await migrate(conn)
        result = CopyResult()
        tables = _tables(db)
        if "messages" in tables:
            await _copy_sessions(db, conn, result, progress)
        if "outbox" in tables:
            await _copy_outbox(db, conn, result)
        if "cron_jobs" in tables:
            await _copy_cron(db, conn, result)
        if "responses" in tables:
            await _copy_responses(db, conn, result)
        return result
    finally:
        await conn.close()
        db.close()


async def _copy_sessions(
    db: sqlite3.Connection, conn: asyncpg.Connection, result: CopyResult, progress: Callable[[str], None]
) -> None:
    keys = [r[0] for r in db.execute("SELECT DISTINCT session FROM messages ORDER BY session")]
    last_report = time.monotonic()
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start : start + CHUNK]
        rows: dict[str, list[tuple[bytes, float]]] = {key: [] for key in chunk}
        marks = ",".join("?" * len(chunk))
        for session, data, created in db.execute(
            f"SELECT session, data, created FROM messages WHERE session IN ({marks}) ORDER BY session, id", chunk
        ):
            rows[session].append((bytes(data), created))
        async with conn.transaction():
            lengths = [len(rows[k]) for k in chunk]
            updated = [rows[k][-1][1] for k in chunk]
            claimed = {r[0] for r in await conn.fetch(_CLAIM_SESSIONS, chunk, lengths, updated)}
            records = [
                (key, n, data, created)
                for key in chunk
                if key in claimed
                for n, (data, created) in enumerate(rows[key], start=1)
            ]
            if records:
                await conn.copy_records_to_table(
                    "nanobot_messages", records=records, columns=["session", "n", "data", "created"]
                )
        result.sessions += len(claimed)
        result.skipped += len(chunk) - len(claimed)
        result.messages += len(records)
        done = start + len(chunk)
        if time.monotonic() - last_report >= 1.0 or (done == len(keys) and len(keys) > CHUNK):
            last_report = time.monotonic()
            progress(f"sessions: {done}/{len(keys)} read, {result.sessions} copied ({result.messages} messages)")


async def _copy_outbox(db: sqlite3.Connection, conn: asyncpg.Connection, result: CopyResult) -> None:
    columns = "id, channel, chat_id, content, state, attempts, progress, next_attempt, last_error, created, updated"
    cursor = db.execute(f"SELECT {columns} FROM outbox ORDER BY id")
    while True:
        batch = cursor.fetchmany(1000)
        if not batch:
            return
        cols = list(zip(*batch, strict=False))
        origins = [f"sqlite:{r[0]}:{r[9]!r}" for r in batch]
        inserted = await conn.fetch(_OUTBOX, *[list(c) for c in cols[1:]], origins)
        result.outbox += len(inserted)


async def _copy_cron(db: sqlite3.Connection, conn: asyncpg.Connection, result: CopyResult) -> None:
    rows = db.execute(f"SELECT {CRON_COLUMNS} FROM cron_jobs ORDER BY id").fetchall()
    marks = ", ".join(f"${i}" for i in range(1, 16))
    insert = f"INSERT INTO nanobot_cron_jobs ({CRON_COLUMNS}) VALUES ({marks}) ON CONFLICT (id) DO NOTHING"
    for row in rows:
        status: str = await conn.execute(insert, *row)
        result.cron += status == "INSERT 0 1"


async def _copy_responses(db: sqlite3.Connection, conn: asyncpg.Connection, result: CopyResult) -> None:
    columns = "id, session, prev, created, body, items, messages, count"
    cursor = db.execute(f"SELECT {columns} FROM responses ORDER BY created")
    while True:
        batch = cursor.fetchmany(RESPONSES_CHUNK)
        if not batch:
            return
        cols = [list(c) for c in zip(*batch, strict=False)]
        for blobs in cols[4:7]:
            blobs[:] = [bytes(b) for b in blobs]
        result.responses += len(await conn.fetch(_RESPONSES, *cols))
