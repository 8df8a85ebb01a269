"""A turn on PostgreSQL learns whether its session has a paused turn from its lock's grant.

Real PostgreSQL, two "nodes" (each its own pool, lock connection and store)
in one event loop; the round trips a store makes are counted at
``PgDatabase.run``, the one door to the pool.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nanobot.sessions.pg_locks import PgSessionOrdering
from nanobot.sessions.pg_store import PgSessionStore
from nanobot.storage.pg import PgDatabase


class CountedDatabase(PgDatabase):
    """PgDatabase that counts its pooled round trips."""

    calls = 0

    async def run(self, fn: Any, *args: Any) -> Any:
        self.calls += 1
        return await super().run(fn, *args)


async def _node(url: str) -> tuple[CountedDatabase, PgSessionOrdering, PgSessionStore]:
    db = CountedDatabase(url, 2)
    await db.start()
    ordering = PgSessionOrdering(db)
    return db, ordering, PgSessionStore(db, fence=ordering)


def test_no_paused_turn_costs_no_query_and_a_paused_one_is_seen_by_another_node(postgres):
    url = postgres.new_database()
    key = "api:paused-grant"

    async def main() -> None:
        (db_a, locks_a, a), (db_b, locks_b, b) = await _node(url), await _node(url)
        try:
            async with locks_a.hold(key):
                before = db_a.calls
                assert await a.paused(key) is None
                assert db_a.calls == before  # the grant said so: no round trip
                await a.pause_turn(key, b'{"calls": 1}')
            async with locks_b.hold(key):  # another node, after a's lock is gone
                assert locks_b.paused(key) is True
                assert await b.paused(key) == b'{"calls": 1}'
                await b.append_turn(key, [{"role": "user", "content": "x"}], closes_paused=True)
            async with locks_a.hold(key):
                assert locks_a.paused(key) is False and locks_a.length(key) == 1
                assert await a.paused(key) is None
        finally:
            for locks, db in ((locks_a, db_a), (locks_b, db_b)):
                await locks.close()
                await db.close()

    asyncio.run(asyncio.wait_for(main(), 60))
