"""Session store and ordering, in process: windows, ordering, idle cleanup."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import multiprocessing
import sqlite3
import tracemalloc

from nanobot.sessions.budget import bound_chars, message_chars, trim_window
from nanobot.sessions.locks import SessionLocks, SharedSessionLocks
from nanobot.sessions.store import SqliteSessionStore
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
            await store.append_turn(
                "a", [{"role": "user", "content": f"u{i}"}, {"role": "assistant", "content": f"a{i}"}]
            )
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


def _try_lock_byte(path: str, slot: int) -> bool:
    """From another process: can the byte be locked right now?"""
    # POSIX only
    import fcntl
    import os as os_

    fd = os_.open(path, os_.O_RDWR)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, slot)
        return True
    except OSError:
        return False
    finally:
        os_.close(fd)


def test_shared_locks_hold_a_byte_per_session_across_processes(tmp_path):
    """Keys sharing a byte both run in this process; the byte is held until the last leaves."""

    class OneByte(SharedSessionLocks):
        SLOTS = 1  # every key on byte 0

    path = tmp_path / "sessions.lock"
    other = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))

    def free_elsewhere() -> bool:
        return other.submit(_try_lock_byte, str(path), 0).result(timeout=30)

    async def main():
        locks = OneByte(path)
        a, b = locks.hold("a"), locks.hold("b")
        await a.__aenter__()
        await asyncio.wait_for(b.__aenter__(), 1)  # same process, same byte: no wait
        assert not free_elsewhere()
        await a.__aexit__(None, None, None)
        assert not free_elsewhere()  # "b" still runs
        await b.__aexit__(None, None, None)
        assert free_elsewhere()
        assert len(locks) == 0

    try:
        asyncio.run(main())
    finally:
        other.shutdown()


def _open_together(path: str, barrier) -> str:
    barrier.wait(10)
    try:
        Database(path).close()
    except Exception as exc:  # reported, not raised: the test names it
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def test_processes_opening_one_new_database_together(tmp_path):
    """As workers starting at once do: every one gets the file, in WAL mode."""

    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager, ctx.Pool(6) as pool:
        barrier = manager.Barrier(6)
        for round_ in range(12):
            path = str(tmp_path / f"race-{round_}.db")
            outcomes = pool.starmap(_open_together, [(path, barrier)] * 6)
            assert outcomes == ["ok"] * 6, outcomes
            assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_history_cache_is_bounded_in_bytes_not_sessions(tmp_path):
    """Sessions of a few huge messages are held only up to the byte budget."""

    budget = 8 * 1024 * 1024
    big = "x" * (1024 * 1024)

    async def main():
        db = Database(tmp_path / "big.db")
        store = SqliteSessionStore(db, cache_bytes=budget, cache_messages=58)
        tracemalloc.start()
        try:
            for s in range(20):  # 20 sessions of 4 turns of 1 MB: 80 MB if all were kept
                for t in range(4):
                    await store.append_turn(f"s{s}", [{"role": "user", "content": big + str(t)}])
                assert len(await store.history(f"s{s}", 50)) == 4
            gc.collect()
            held = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        assert held < budget + 2 * 1024 * 1024, held
        assert store.cached_bytes <= budget
        assert 1 <= len(store) <= 2  # the most recent sessions, 4 MB each
        # Evicted or not, every session reads back whole.
        for s in range(20):
            assert [m["content"][-1] for m in await store.history(f"s{s}", 50)] == ["0", "1", "2", "3"]
        db.close()

    asyncio.run(main())


def test_a_window_bigger_than_the_budget_is_not_cached(tmp_path):
    async def main():
        db = Database(tmp_path / "huge.db")
        store = SqliteSessionStore(db, cache_bytes=64 * 1024)
        await store.append_turn("small", [{"role": "user", "content": "hi"}])
        await store.history("small", 10)
        await store.append_turn("huge", [{"role": "user", "content": "y" * 100_000}])
        assert len(await store.history("huge", 10)) == 1
        assert len(store) == 1 and store.cached_bytes < 64 * 1024  # "small" stays, "huge" was never kept
        await store.append_turn("small", [{"role": "assistant", "content": "hello"}])
        assert [m["content"] for m in await store.history("small", 10)] == ["hi", "hello"]
        db.close()

    asyncio.run(main())


def _call(text: str) -> dict:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "message", "arguments": text}}],
    }


def test_history_by_size_keeps_the_newest_and_whole_tool_exchanges():
    u = {"role": "user", "content": "u" * 3000}
    call, result, reply = (
        _call("a" * 10),
        {"role": "tool", "tool_call_id": "c", "content": "r" * 4000},
        {
            "role": "assistant",
            "content": "done",
        },
    )
    history = [u, call, result, reply]
    assert bound_chars(history, 10_000) is history  # all fit: the list itself
    # The tool result fits, its call does not (and cannot be cut): both go, never a result alone.
    assert bound_chars(history, 4004 + 5) == [reply]
    assert bound_chars(history, 4004) == [reply]
    # A plain message that does not fit whole is cut to what is left, with a marker.
    sent = bound_chars(history, 4021 + 2000)
    assert sent[1:] == [call, result, reply] and sent[0]["role"] == "user"
    assert "[... 1000 characters cut ...]" in sent[0]["content"] and len(sent[0]["content"]) < 2100
    assert u["content"] == "u" * 3000  # the stored message is never edited
    # Below MIN_CUT characters left, an older message is dropped, not cut to a stub.
    assert bound_chars(history, 4021 + 10) == [call, result, reply]


def test_one_message_over_the_whole_budget_is_cut():
    big = {"role": "assistant", "content": "x" * 50_000}
    (only,) = bound_chars([{"role": "user", "content": "q"}, big], 100)
    assert only["content"].startswith("x" * 50) and only["content"].endswith("x" * 50)
    assert "[... 49900 characters cut ...]" in only["content"]
    assert bound_chars([big], 0)[0]["content"] == "\n[... 50000 characters cut ...]\n"
    assert message_chars(_call("abc")) == len("message") + 3
