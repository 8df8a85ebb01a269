"""The outbound queue against real HTTP on loopback and a real SQLite file.

The receiver is a tiny Tornado app on its own thread and event loop, so the
test's loop holds only the outbox's own tasks (checked after ``close()``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tornado.web
from test_transport import Upstream, aio, response, serving
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.testing import bind_unused_port

from nanobot.config import ChannelsConfig, TelegramConfig, WebhookConfig
from nanobot.outbound.base import DELIVERED, FAILED, PENDING, UNDELIVERABLE, OutboxRow
from nanobot.outbound.channels import ChannelSenders, DeliveryError, split_text
from nanobot.outbound.sqlite_outbox import SqliteOutbox
from nanobot.storage.db import Database

TOKEN = "123456:SECRET-token_value"

pytestmark = pytest.mark.timeout(30)


# --- the receiver --------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    failed: bool


@dataclass
class Script:
    """What the receiver does: which request numbers fail, how slow it is."""

    fail_on: set[int] = field(default_factory=set)  # 1-based request numbers
    delay: float = 0.0
    error_body: dict[str, Any] | None = None
    received: list[Received] = field(default_factory=list)

    def ok(self) -> list[Received]:
        return [r for r in self.received if not r.failed]


class _Sink(tornado.web.RequestHandler):
    def initialize(self, script: Script) -> None:
        self.script = script

    async def post(self, *_: str) -> None:
        s = self.script
        number = len(s.received) + 1
        failed = number in s.fail_on
        s.received.append(
            Received(self.request.path, dict(self.request.headers), json.loads(self.request.body), failed)
        )
        if s.delay:
            await asyncio.sleep(s.delay)
        if failed:
            self.set_status(500)
            self.finish(s.error_body or {"ok": False, "description": "injected failure"})
        else:
            self.finish({"ok": True, "result": {"message_id": number}})


class Receiver:
    """Fake Telegram (``/bot<TOKEN>/sendMessage``) and webhook (``/hook/<name>``)."""

    def __init__(self, script: Script, port: int | None = None) -> None:
        self.script = script
        if port is None:
            sock, port = bind_unused_port()
        else:
            sock = bind_sockets(port, "127.0.0.1", family=socket.AF_INET)[0]
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self._sock = sock
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        app = tornado.web.Application(
            [
                (r"/bot([^/]+)/sendMessage", _Sink, {"script": self.script}),
                (r"/hook/([^/]+)", _Sink, {"script": self.script}),
            ]
        )
        server = HTTPServer(app)
        server.add_sockets([self._sock])
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        server.stop()
        await server.close_all_connections()

    def __enter__(self) -> Receiver:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)


# --- helpers ---------------------------------------------------------------------


def channels(base: str, **overrides: Any) -> ChannelsConfig:
    return ChannelsConfig(
        telegram=overrides.get("telegram", TelegramConfig(enabled=True, token=TOKEN, api_base=base)),
        webhook=overrides.get(
            "webhook", WebhookConfig(enabled=True, url=f"{base}/hook/main", headers={"X-Secret": "s3cr3t"})
        ),
    )


def make(path: Path, config: ChannelsConfig, **kw: Any) -> tuple[Database, SqliteOutbox]:
    db = Database(path / "nanobot.db")
    # A long poll: every prompt delivery below must come from the wake-up
    # on enqueue or from the computed next_attempt, never from polling.
    opts: dict[str, Any] = {"http_timeout": 2.0, "base_backoff": 0.02, "max_backoff": 0.1, "poll_interval": 30.0}
    return db, SqliteOutbox(db, config, **(opts | kw))


def against(script: Script, main: Callable[[str], Coroutine[Any, Any, None]]) -> Script:
    """Run ``main(base_url)`` with a receiver following ``script`` at that URL."""
    with Receiver(script) as rx:
        asyncio.run(main(rx.base))
    return script


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def row(outbox: SqliteOutbox, row_id: int) -> OutboxRow:
    return next(r for r in await outbox.rows(limit=1000) if r.id == row_id)


async def settled(outbox: SqliteOutbox, row_id: int, state: str) -> OutboxRow:
    async def check() -> bool:
        return (await row(outbox, row_id)).state == state

    await until(check)
    return await row(outbox, row_id)


# --- tests -------------------------------------------------------------------------


def test_split_text_pieces() -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(10_000))
    pieces = split_text(text)
    assert [len(p) for p in pieces] == [4096, 4096, 1808]
    assert "".join(pieces) == text
    assert split_text("hi") == ["hi"]


def test_telegram_chat_id_sent_as_given(tmp_path: Path) -> None:
    async def main(base: str) -> None:
        db, outbox = make(tmp_path, channels(base))
        await outbox.start()
        a = await outbox.enqueue("telegram", "-1001234567890", "hello")
        b = await outbox.enqueue("telegram", "@my_channel", "world")
        assert a.state == b.state == PENDING
        for e in (a, b):
            r = await settled(outbox, e.id, DELIVERED)
            assert r.attempts == 1 and r.last_error is None
        await outbox.close()
        db.close()

    script = against(Script(), main)
    bodies = sorted((r.body for r in script.received), key=lambda b: b["text"])
    assert bodies == [
        {"chat_id": "-1001234567890", "text": "hello"},
        {"chat_id": "@my_channel", "text": "world"},
    ]
    assert all(r.path == f"/bot{TOKEN}/sendMessage" for r in script.received)
    assert all(r.headers["Content-Type"] == "application/json" for r in script.received)


def test_long_telegram_message_in_ordered_pieces(tmp_path: Path) -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(10_000))

    async def main(base: str) -> None:
        db, outbox = make(tmp_path, channels(base))
        await outbox.start()
        e = await outbox.enqueue("telegram", "42", text)
        assert (await settled(outbox, e.id, DELIVERED)).attempts == 1
        await outbox.close()
        db.close()

    script = against(Script(), main)
    sent = [r.body["text"] for r in script.received]
    assert [len(t) for t in sent] == [4096, 4096, 1808]
    assert "".join(sent) == text
    assert all(r.body["chat_id"] == "42" for r in script.received)


def test_retry_resumes_after_last_delivered_piece(tmp_path: Path) -> None:
    text = "x" * 4096 + "y" * 4096 + "z" * 10

    async def main(base: str) -> None:
        db, outbox = make(tmp_path, channels(base))
        await outbox.start()
        e = await outbox.enqueue("telegram", "7", text)
        r = await settled(outbox, e.id, DELIVERED)
        assert r.attempts == 2
        await outbox.close()
        db.close()

    script = against(Script(fail_on={2}), main)  # the second piece fails once
    assert [r.body["text"][0] for r in script.received] == ["x", "y", "y", "z"]
    assert "".join(r.body["text"] for r in script.ok()) == text


def test_webhook_body_and_headers(tmp_path: Path) -> None:
    async def main(base: str) -> None:
        db, outbox = make(tmp_path, channels(base))
        await outbox.start()
        e = await outbox.enqueue("webhook", "room-1", "hello hook")
        await settled(outbox, e.id, DELIVERED)
        await outbox.close()
        db.close()

    script = against(Script(), main)
    (req,) = script.received
    assert req.path == "/hook/main"
    assert req.body == {"channel": "webhook", "chat_id": "room-1", "content": "hello hook"}
    assert req.headers["X-Secret"] == "s3cr3t"
    assert req.headers["Content-Type"] == "application/json"


def test_failing_twice_then_delivered(tmp_path: Path) -> None:
    async def main(base: str) -> None:
        db, outbox = make(tmp_path, channels(base))
        await outbox.start()
        e = await outbox.enqueue("webhook", "c", "retry me")
        r = await settled(outbox, e.id, DELIVERED)
        assert r.attempts == 3 and r.last_error is None
        await outbox.close()
        db.close()

    script = against(Script(fail_on={1, 2}), main)
    assert len(script.received) == 3 and len(script.ok()) == 1


def test_target_down_then_back(tmp_path: Path) -> None:
    sock, port = bind_unused_port()
    sock.close()  # nothing listens: connection refused
    base = f"http://127.0.0.1:{port}"
    script = Script()

    async def main() -> None:
        db, outbox = make(tmp_path, channels(base), max_attempts=100)
        await outbox.start()
        e = await outbox.enqueue("telegram", "1", "are you there?")

        async def failed_twice() -> bool:
            r = await row(outbox, e.id)
            return r.attempts >= 2

        await until(failed_twice)
        r = await row(outbox, e.id)
        assert r.state == PENDING and r.last_error and "refused" in r.last_error.lower()
        with Receiver(script, port=port):
            await settled(outbox, e.id, DELIVERED)
        await outbox.close()
        db.close()

    asyncio.run(main())
    assert [r.body["text"] for r in script.received] == ["are you there?"]


def test_max_attempts_reached_is_failed(tmp_path: Path) -> None:
    async def main(base: str) -> None:
        db, outbox = make(tmp_path, channels(base), max_attempts=3)
        await outbox.start()
        e = await outbox.enqueue("webhook", "c", "doomed")
        r = await settled(outbox, e.id, FAILED)
        assert r.attempts == 3
        assert r.last_error is not None and "HTTP 500" in r.last_error
        await asyncio.sleep(0.3)  # a failed row is never tried again
        await outbox.close()
        db.close()

    script = against(Script(fail_on=set(range(1, 100))), main)
    assert len(script.received) == 3


def test_disabled_unconfigured_unknown_are_undeliverable(tmp_path: Path) -> None:
    async def main(base: str) -> None:
        config = channels(
            base,
            telegram=TelegramConfig(enabled=False, token=TOKEN, api_base=base),
            webhook=WebhookConfig(enabled=True, url=""),
        )
        db, outbox = make(tmp_path, config)
        assert not outbox.is_enabled("telegram")
        assert not outbox.is_enabled("webhook")
        assert not outbox.is_enabled("slack")
        await outbox.start()
        queued = [
            await outbox.enqueue("telegram", "1", "a"),
            await outbox.enqueue("webhook", "2", "b"),
            await outbox.enqueue("slack", "3", "c"),
        ]
        assert [q.state for q in queued] == [UNDELIVERABLE] * 3
        await asyncio.sleep(0.3)  # let the worker run a few rounds
        rows = await outbox.rows()
        assert [r.state for r in rows] == [UNDELIVERABLE] * 3
        for r in rows:
            assert r.last_error and f"channel {r.channel!r} is not enabled" in r.last_error
            assert r.attempts == 0
        assert await outbox.rows((UNDELIVERABLE,), limit=2) == rows[:2]
        assert await outbox.rows((PENDING, DELIVERED)) == []
        await outbox.close()
        db.close()

    script = against(Script(), main)
    assert script.received == []


def test_pending_rows_survive_restart(tmp_path: Path) -> None:
    async def main(base: str) -> None:
        db, outbox = make(tmp_path, channels(base))
        e = await outbox.enqueue("telegram", "99", "sent after restart")  # worker never started
        await outbox.close()
        db.close()

        db, outbox = make(tmp_path, channels(base))
        await outbox.start()
        r = await settled(outbox, e.id, DELIVERED)
        assert r.attempts == 1
        await outbox.close()
        db.close()

    script = against(Script(), main)
    assert [r.body for r in script.received] == [{"chat_id": "99", "text": "sent after restart"}]


def test_close_cancels_in_flight_delivery(tmp_path: Path) -> None:
    script = Script(delay=5.0)

    async def main(base: str) -> None:
        db, outbox = make(tmp_path, channels(base))
        await outbox.start()
        e = await outbox.enqueue("webhook", "c", "slow")

        async def arrived() -> bool:
            return len(script.received) == 1

        await until(arrived)
        started = time.monotonic()
        await outbox.close()
        assert time.monotonic() - started < 2.0
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert others == []
        r = await row(outbox, e.id)
        assert r.state == PENDING and r.attempts == 0 and r.last_error is None
        db.close()

        # The released row is due at once for the next process.
        script.delay = 0.0
        db, outbox = make(tmp_path, channels(base))
        await outbox.start()
        await settled(outbox, e.id, DELIVERED)
        await outbox.close()
        db.close()

    against(script, main)


def test_token_never_in_last_error(tmp_path: Path) -> None:
    sock, port = bind_unused_port()
    sock.close()
    down = f"http://127.0.0.1:{port}"

    async def main(base: str) -> None:
        db, outbox = make(tmp_path, channels(base), max_attempts=1)
        await outbox.start()
        echoed = await outbox.enqueue("telegram", "1", "x")
        r = await settled(outbox, echoed.id, FAILED)
        assert r.last_error and TOKEN not in r.last_error and "***" in r.last_error
        await outbox.close()
        db.close()

        db, outbox = make(tmp_path, channels(down), max_attempts=1)
        await outbox.start()
        refused = await outbox.enqueue("telegram", "1", "y")
        r = await settled(outbox, refused.id, FAILED)
        assert r.last_error and TOKEN not in r.last_error
        await outbox.close()
        db.close()

    # A peer that echoes the request URL (token included) in its error.
    echoing = Script(fail_on={1}, error_body={"ok": False, "description": f"no bot at /bot{TOKEN}/sendMessage"})
    against(echoing, main)


def test_webhook_path_and_headers_never_in_last_error(tmp_path: Path) -> None:
    """A webhook's path and query are as secret as a token: only scheme://host may show."""
    secret_path, header = "/hook/k7Qz9secret?sig=abc123xyz", "hdr-Secret-42"

    async def main(base: str) -> None:
        hook = WebhookConfig(enabled=True, url=base + secret_path, headers={"Authorization": f"Bearer {header}"})
        db, outbox = make(tmp_path, channels(base, webhook=hook), max_attempts=1)
        await outbox.start()
        row = await outbox.enqueue("webhook", "1", "x")
        r = await settled(outbox, row.id, FAILED)
        assert r.last_error and "***" in r.last_error
        for secret in ("k7Qz9secret", "abc123xyz", header):
            assert secret not in r.last_error, r.last_error
        await outbox.close()
        db.close()

    # A peer that quotes back what it got: the URL, and the header.
    quoting = Script(fail_on={1}, error_body={"error": f"POST {secret_path} refused; Authorization: Bearer {header}"})
    against(quoting, main)


def test_many_rows_beyond_one_batch(tmp_path: Path) -> None:
    async def main(base: str) -> None:
        db, outbox = make(tmp_path, channels(base))
        queued = [await outbox.enqueue("webhook", str(i), f"m{i}") for i in range(120)]
        await outbox.start()
        for e in queued:
            await settled(outbox, e.id, DELIVERED)
        await outbox.close()
        db.close()

    script = against(Script(), main)
    assert sorted(r.body["content"] for r in script.received) == sorted(f"m{i}" for i in range(120))


def test_two_processes_sharing_the_file_send_each_row_once(tmp_path: Path) -> None:
    async def main(base: str) -> None:
        db1, first = make(tmp_path, channels(base))
        db2, second = make(tmp_path, channels(base))
        queued = [await first.enqueue("telegram", str(i), f"t{i}") for i in range(40)]
        await first.start()
        await second.start()
        for e in queued:
            await settled(first, e.id, DELIVERED)
        for outbox, db in ((first, db1), (second, db2)):
            await outbox.close()
            db.close()

    script = against(Script(delay=0.01), main)
    assert sorted(r.body["text"] for r in script.received) == sorted(f"t{i}" for i in range(40))


# --- the HTTP exchange itself, against exact bytes ------------------------------------------


async def _no_progress(_: int) -> None:
    return None


def senders(base: str, timeout: float = 2.0) -> ChannelSenders:
    return ChannelSenders(channels(base), http_timeout=timeout, max_clients=4)


@aio
async def test_deliveries_share_one_keep_alive_connection() -> None:
    async with Upstream(serving(response(b'{"ok": true}'))) as up:
        sender = senders(up.url)
        try:
            for text in ("one", "two", "three"):
                await sender.send("webhook", "c", text, 0, _no_progress)
        finally:
            await sender.close()
    assert up.connections == 1
    assert [json.loads(body)["content"] for _, body in up.requests] == ["one", "two", "three"]


@aio
async def test_a_huge_error_answer_is_read_only_in_part() -> None:
    huge = b"E" * (20 * 1024 * 1024)
    async with Upstream(serving(response(huge, status="500 Internal Server Error"))) as up:
        sender = senders(up.url)
        try:
            with pytest.raises(DeliveryError) as caught:
                await sender.send("webhook", "c", "x", 0, _no_progress)
        finally:
            await sender.close()
    message = str(caught.value)
    assert message.startswith("webhook: HTTP 500: EEEE") and len(message) <= 500


@aio
async def test_an_answer_that_trickles_past_the_timeout_fails_in_time() -> None:
    async def trickle(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await up.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):  # a byte every 50 ms: each read is quick, the whole is not
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)

    async with Upstream(trickle) as up:
        sender = senders(up.url, timeout=0.5)
        started = time.monotonic()
        try:
            with pytest.raises(DeliveryError) as caught:
                await sender.send("webhook", "c", "x", 0, _no_progress)
        finally:
            await sender.close()
    assert time.monotonic() - started < 2.0
    assert "Timeout" in str(caught.value)
