"""The history window bounded by size, as the session stores answer it.

A store asked for ``history(key, limit, max_chars)`` returns what
``bound_chars`` keeps of the window, but counts no character when the
messages' JSON sizes say the window fits. Checked against ``bound_chars`` of
what was appended, over generated sessions, on real SQLite files and a real
PostgreSQL (the session-wide ``postgres`` cluster), with the cache warm
(the windows the appends left) and cold (a second store on the database).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanobot.sessions import budget
from nanobot.sessions.budget import bound_chars, message_chars, trim_window
from nanobot.sessions.pg_locks import PgSessionOrdering
from nanobot.sessions.pg_store import PgSessionStore
from nanobot.sessions.store import SqliteSessionStore
from nanobot.storage.db import Database
from nanobot.storage.pg import PgDatabase

Message = dict[str, Any]

# Multi-byte characters and ones JSON escapes: a message's JSON is longer
# than its characters by different amounts.
PIECES = st.text(alphabet='ab é🙂"\\\n\x01', min_size=1, max_size=12)
TEXT = st.one_of(PIECES, st.builds(lambda piece, times: piece * times, PIECES, st.integers(0, 250)))
CALL = st.builds(
    lambda name, arguments: {"id": "c", "type": "function", "function": {"name": name, "arguments": arguments}},
    TEXT,
    TEXT,
)
PARTS = st.lists(
    st.one_of(st.builds(lambda t: {"type": "text", "text": t}, TEXT), st.just({"type": "image_url"})), max_size=3
)
MESSAGE = st.one_of(
    st.builds(lambda t: {"role": "user", "content": t}, TEXT),
    st.builds(lambda parts: {"role": "user", "content": parts}, PARTS),
    st.builds(lambda t: {"role": "assistant", "content": t}, TEXT),
    st.builds(
        lambda t, calls: {"role": "assistant", "content": t, "tool_calls": calls},
        st.one_of(st.none(), TEXT),
        st.lists(CALL, min_size=1, max_size=2),
    ),
    st.builds(lambda t: {"role": "tool", "tool_call_id": "c", "content": t}, TEXT),
)
TURNS = st.lists(st.lists(MESSAGE, min_size=1, max_size=4), min_size=1, max_size=8)
LIMIT = st.integers(0, 14)

_keys = itertools.count()


def near_the_window(data: st.DataObject, appended: list[Message], limit: int) -> int:
    """A budget up to a little over the JSON sizes of the last ``limit`` messages: where fitting is decided."""
    sizes = sum(len(orjson.dumps(m)) for m in appended[-limit:]) if limit > 0 else 0
    return data.draw(st.integers(0, sizes + 10), label="max_chars")


def expected(appended: list[Message], limit: int, max_chars: int) -> list[Message]:
    """What the agent is to send: ``bound_chars`` of the last ``limit`` messages, trimmed."""
    window = trim_window(appended[-limit:]) if limit > 0 else []
    return bound_chars(window, max_chars)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times characters were counted (``bound_chars``'s sum over the window).

    Patched: the work not done is all that tells the two paths apart.
    """
    calls = [0]
    total = budget._total

    def counting(messages: list[Message]) -> int:
        calls[0] += 1
        return total(messages)

    monkeypatch.setattr(budget, "_total", counting)
    return calls


# Values message_chars takes the len() of, as JSON may hold them: text, or
# lists and objects (one item, one "character").
LEN_VALUE = st.recursive(
    st.one_of(st.text(), st.none()), lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=8
)
ODD_MESSAGE = st.builds(
    lambda text, name, arguments: {
        "role": "assistant",
        "content": [{"type": "text", "text": text}],
        "tool_calls": [{"function": {"name": name, "arguments": arguments}}],
    },
    LEN_VALUE,
    LEN_VALUE,
    LEN_VALUE,
)


@given(st.one_of(MESSAGE, ODD_MESSAGE))
@settings(max_examples=300, deadline=None, database=None)
def test_a_messages_json_is_never_shorter_than_its_characters(message):
    assert message_chars(message) <= len(orjson.dumps(message))


# SQLite: one database file for the module, a store (its own cache) per example.


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    db = Database(tmp_path_factory.mktemp("budget") / "nanobot.db")
    yield db
    db.close()


@given(turns=TURNS, limit=LIMIT, cache_messages=st.integers(1, 12), data=st.data())
@settings(max_examples=150, deadline=None, database=None)
def test_sqlite_bounded_history_is_bound_chars_of_the_window(sqlite_db, runner, turns, limit, cache_messages, data):
    key = f"s{next(_keys)}"
    appended = [m for turn in turns for m in turn]
    max_chars = near_the_window(data, appended, limit)
    want = expected(appended, limit, max_chars)

    async def main() -> None:
        warm = SqliteSessionStore(sqlite_db, cache_messages=cache_messages)
        for turn in turns:
            await warm.append_turn(key, turn)
        assert await warm.history(key, limit, max_chars) == want
        cold = SqliteSessionStore(sqlite_db, cache_messages=cache_messages)
        assert await cold.history(key, limit, max_chars) == want  # read from the file
        assert await cold.history(key, limit, max_chars) == want  # and from what that read cached
        assert await cold.history(key, limit) == (trim_window(appended[-limit:]) if limit > 0 else [])

    runner.run(main())


def test_sqlite_a_window_that_fits_is_not_counted(sqlite_db, runner, counted):
    history = [{"role": "user", "content": 'ünï🙂 "q"\n'}, {"role": "assistant", "content": "a" * 50}]
    chars = sum(map(message_chars, history))
    json = sum(len(orjson.dumps(m)) for m in history)

    async def main() -> None:
        store = SqliteSessionStore(sqlite_db)
        await store.append_turn("fits", history)
        assert await store.history("fits", 50, json) == history  # from the cache
        assert await SqliteSessionStore(sqlite_db).history("fits", 50, json) == history  # from the file
        assert counted[0] == 0
        # Below the JSON sizes they cannot tell: counted, and it still fits.
        assert await store.history("fits", 50, json - 1) == history
        assert counted[0] == 1
        assert await store.history("fits", 50, chars - 1) == [history[1]]  # the user message does not
        assert counted[0] == 2

    runner.run(main())


def test_sqlite_windows_that_do_not_fit(sqlite_db, runner):
    """A cut with its marker; tool results at the window's start; sizes of exactly the messages returned."""
    u = {"role": "user", "content": "u" * 3000}
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "message", "arguments": "a" * 10}}],
    }
    result = {"role": "tool", "tool_call_id": "c", "content": "r" * 4000}
    reply = {"role": "assistant", "content": "done"}

    async def main() -> None:
        store = SqliteSessionStore(sqlite_db)
        await store.append_turn("cut", [u, call, result, reply])
        sent = await store.history("cut", 50, 4021 + 2000)
        assert sent[1:] == [call, result, reply] and "[... 1000 characters cut ...]" in sent[0]["content"]
        assert sent == bound_chars([u, call, result, reply], 4021 + 2000)
        assert await store.history("cut", 50, 4004) == [reply]  # the result fits, its call does not: both go
        # The window of 2 starts with the tool result, which is dropped: its
        # 4000 characters count against nothing.
        assert await store.history("cut", 2, 10) == [reply]
        # The newest message alone is over the budget, an older small one is not.
        await store.append_turn(
            "last", [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x" * 5000}]
        )
        (only,) = await store.history("last", 1, 100)
        assert "[... 4900 characters cut ...]" in only["content"]
        assert await store.history("last", 1, 0) == bound_chars([{"role": "assistant", "content": "x" * 5000}], 0)

    runner.run(main())


# PostgreSQL: one database for the module, the turn order of production (each
# read and commit under the session's lock, whose grant carries its length).


@pytest.fixture(scope="module")
def pg(postgres: Any, runner: Any) -> Iterator[tuple[PgDatabase, PgSessionOrdering]]:
    db = PgDatabase(postgres.new_database(), 2)
    runner.run(db.start())
    ordering = PgSessionOrdering(db)
    yield db, ordering
    runner.run(ordering.close())
    runner.run(db.close())


async def _pg_history(ordering: PgSessionOrdering, store: PgSessionStore, key: str, limit: int, max_chars: int) -> Any:
    async with ordering.hold(key):
        return await store.history(key, limit, max_chars)


@given(turns=TURNS, limit=LIMIT, cache_messages=st.integers(1, 12), data=st.data())
@settings(max_examples=60, deadline=None, database=None)
def test_pg_bounded_history_is_bound_chars_of_the_window(pg, runner, turns, limit, cache_messages, data):
    db, ordering = pg
    # The server caches more than ``limit``; fewer must still read the whole window.
    key = f"pg{next(_keys)}"
    appended = [m for turn in turns for m in turn]
    max_chars = near_the_window(data, appended, limit)
    want = expected(appended, limit, max_chars)

    async def main() -> None:
        warm = PgSessionStore(db, fence=ordering, cache_messages=cache_messages)
        for turn in turns:
            async with ordering.hold(key):
                await warm.history(key, limit)
                await warm.append_turn(key, turn)
        assert await _pg_history(ordering, warm, key, limit, max_chars) == want
        cold = PgSessionStore(db, fence=ordering, cache_messages=cache_messages)
        assert await _pg_history(ordering, cold, key, limit, max_chars) == want
        assert await _pg_history(ordering, cold, key, limit, max_chars) == want

    runner.run(main())


def test_pg_a_window_that_fits_is_not_counted(pg, runner, counted):
    db, ordering = pg
    history = [{"role": "user", "content": 'ünï🙂 "q"\n'}, {"role": "assistant", "content": "a" * 50}]
    chars = sum(map(message_chars, history))
    json = sum(len(orjson.dumps(m)) for m in history)

    async def main() -> None:
        store = PgSessionStore(db, fence=ordering)
        async with ordering.hold("pg-fits"):
            await store.append_turn("pg-fits", history)
        assert await _pg_history(ordering, store, "pg-fits", 50, json) == history  # the cached window
        assert await _pg_history(ordering, PgSessionStore(db, fence=ordering), "pg-fits", 50, json) == history
        assert counted[0] == 0
        assert await _pg_history(ordering, store, "pg-fits", 50, json - 1) == history
        assert counted[0] == 1
        assert await _pg_history(ordering, store, "pg-fits", 50, chars - 1) == [history[1]]
        assert counted[0] == 2

    runner.run(main())
