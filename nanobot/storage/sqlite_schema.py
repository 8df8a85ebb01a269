"""Versioned tables in the SQLite file: each component's version in ``schema_versions``.

A component (``cron_jobs``, ...) lists its upgrades; :func:`migrate` applies
the missing ones in one ``BEGIN IMMEDIATE`` transaction, so workers opening
the file together apply each step once.
"""

from __future__ import annotations

import sqlite3


def migrate(conn: sqlite3.Connection, component: str, migrations: list[tuple[str, ...]]) -> int:
    """Bring ``component``'s tables to the newest version; returns it.

    Each migration is a tuple of single statements (``executescript`` would
    commit half way).
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_versions (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        row = conn.execute("SELECT version FROM schema_versions WHERE component = ?", (component,)).fetchone()
        current = int(row[0]) if row else 0
        for version in range(current + 1, len(migrations) + 1):
            for statement in migrations[version - 1]:
                conn.execute(statement)
        if len(migrations) > current:
            conn.execute(
                "INSERT INTO schema_versions (component, version) VALUES (?, ?)"
                " ON CONFLICT(component) DO UPDATE SET version = excluded.version",
                (component, len(migrations)),
            )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return max(current, len(migrations))
