"""Session store and ordering, in process: windows, ordering, idle cleanup."""

from __future__ import annotations

import asyncio

from nanobot.sessions.locks import SessionLocks
from nanobot.sessions.store import SqliteSessionStore, trim_window
from nanobot.storage.db import Database


def test_trim_window_never_starts_with_tool():
    msgs = [{"role": "tool", "content": "r"}, {"role": "tool", "content": "r2"}, {"role": "assistant", "content": "a"}]
    assert trim_window(msgs) == [{"role": "assistant", "content": "a"}]
    assert trim_window([]) == []


def test_locks_fifo_and_dropped_when_idle():
    async def main():
        locks = SessionLocks()
        order = []

        async def turn(i):
            async with locks.hold("k"):
                order.append(i)
                await asyncio.sleep(0.01)

        tasks = [asyncio.create_task(turn(i)) for i in range(20)]
        await asyncio.sleep(0)
        assert len(locks) == 1
        await asyncio.gather(*tasks)
        assert order == list(range(20))
        assert len(locks) == 0
        # A cancelled waiter leaves no entry behind and does not block others.
        async with locks.hold("x"):
            waiter = asyncio.create_task(turn(99))
            await asyncio.sleep(0)
            waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert len(locks) == 0
        for i in range(10_000):
            async with locks.hold(f"s{i}"):
                pass
        assert len(locks) == 0

    asyncio.run(main())


def test_store_roundtrip_cache_and_reload(tmp_path):
    async def main():
        db = Database(tmp_path / "n.db")
        store = SqliteSessionStore(db, cache_messages=5)
        for i in range(4):
            await store.append_turn("a", [{"role": "user", "content": f"u{i}"}, {"role": "assistant", "content": f"a{i}"}])
        assert [m["content"] for m in await store.history("a", 3)] == ["a2", "u3", "a3"]
        assert [m["content"] for m in await store.history("a", 100)][0] == "u0"
        assert await store.history("missing", 10) == []
        db.close()
        db2 = Database(tmp_path / "n.db")
        store2 = SqliteSessionStore(db2)
        assert len(await store2.history("a", 100)) == 8
        db2.close()

    asyncio.run(main())


def test_db_errors_reach_the_caller(tmp_path):
    async def main():
        db = Database(tmp_path / "e.db")
        try:
            await db.run(lambda conn: conn.execute("SELECT * FROM nope"))
        except Exception as exc:
            assert "no such table" in str(exc)
        else:
            raise AssertionError("expected an error")
        results = await asyncio.gather(*[db.run(lambda conn, i=i: i * 2) for i in range(200)])
        assert results == [i * 2 for i in range(200)]
        db.close()

    asyncio.run(main())
