"""The message tool end to end: API turn -> outbound queue -> fake platforms."""

from __future__ import annotations

import json
import time
import uuid

import common
from common import free_port, run_nanobot
from fault_helpers import wait_for
from servers import ServerProcess, merge, upstream_config


def ask(server, text, **extra):
    return common.ask(server, text, uuid.uuid4().hex, **extra)  # a session of its own per turn


def channels(upstream, telegram=True, webhook=True, webhook_url=None, allowed=("-100777", "5", "room-1", "c", "r")):
    return {
        "channels": {
            "telegram": {
                "enabled": telegram,
                "token": "123:SECRET",
                "apiBase": upstream.url,
                "allowedChatIds": list(allowed),
            },
            "webhook": {
                "enabled": webhook,
                "url": webhook_url or upstream.url + "/hook/main",
                "headers": {"X-Hook-Token": "hk"},
                "allowedChatIds": list(allowed),
            },
        }
    }


def outbox_listing(server):
    out = run_nanobot("outbox", "--config", str(server.config_path))
    assert out.returncode == 0, out.stderr
    return out.stdout


def tool(args):
    return "#tool:message " + json.dumps(args) + " please"


def test_telegram_and_webhook_delivery(make_server, upstream):
    server = make_server(merge(upstream_config(upstream.url), channels(upstream)))
    upstream.clear_received()
    long_text = "L" * 5000
    r = ask(server, tool({"content": long_text, "channel": "telegram", "chat_id": "-100777"}))
    reply = r.json()["choices"][0]["message"]["content"]
    assert "queued for delivery to telegram:-100777" in reply
    r = ask(server, tool({"content": "to the hook", "channel": "webhook", "chat_id": "room-1"}))
    assert "queued for delivery to webhook:room-1" in r.json()["choices"][0]["message"]["content"]
    got = wait_for(lambda: len(upstream.received()) >= 3 and upstream.received())
    tg = [x for x in got if x["path"].startswith("/bot")]
    assert [x["path"] for x in tg] == ["/bot123:SECRET/sendMessage"] * 2
    assert [x["body"]["chat_id"] for x in tg] == ["-100777", "-100777"]
    assert [len(x["body"]["text"]) for x in tg] == [4096, 904]
    hook = [x for x in got if x["path"].startswith("/hook")][0]
    assert hook["body"] == {"channel": "webhook", "chat_id": "room-1", "content": "to the hook"}
    assert hook["headers"].get("X-Hook-Token") == "hk"


def test_not_enabled_channel_is_undeliverable(make_server, upstream):
    server = make_server(merge(upstream_config(upstream.url), channels(upstream, telegram=False)))
    upstream.clear_received()
    r = ask(server, tool({"content": "nope", "channel": "telegram", "chat_id": "5"}))
    reply = r.json()["choices"][0]["message"]["content"]
    assert "not enabled: no delivery will occur" in reply
    # An unknown channel is an error result, and no row is stored for it.
    r = ask(server, tool({"content": "nope", "channel": "slack", "chat_id": "5"}))
    reply = r.json()["choices"][0]["message"]["content"]
    assert "Error: unknown channel 'slack' (known: telegram, webhook, api)" in reply
    time.sleep(0.5)
    assert upstream.received() == []
    listing = outbox_listing(server)
    assert listing.count("undeliverable") == 1 and "telegram" in listing and "slack" not in listing


def test_only_allowed_chats_are_targets(make_server, upstream):
    """By default an API session may message no chat; the operator lists the allowed ones."""
    server = make_server(merge(upstream_config(upstream.url), channels(upstream, allowed=())))
    upstream.clear_received()
    for channel in ("telegram", "webhook"):
        r = ask(server, tool({"content": "spam", "channel": channel, "chat_id": "victim"}))
        reply = r.json()["choices"][0]["message"]["content"]
        assert f"Error: chat_id 'victim' is not an allowed target on channel '{channel}'" in reply, reply
        assert f"channels.{channel}.allowedChatIds" in reply
    # The synthetic channel of another surface is no way out either.
    r = ask(server, tool({"content": "spam", "channel": "cli", "chat_id": "x"}))
    assert "Error: unknown channel 'cli'" in r.json()["choices"][0]["message"]["content"]
    time.sleep(0.5)
    assert upstream.received() == []
    assert "spam" not in outbox_listing(server)
    anyone = make_server(merge(upstream_config(upstream.url), channels(upstream, allowed=("*",))))
    r = ask(anyone, tool({"content": "to anyone", "channel": "webhook", "chat_id": "any-room"}))
    assert "queued for delivery to webhook:any-room" in r.json()["choices"][0]["message"]["content"]


def test_retry_then_delivered(make_server, upstream):
    server = make_server(merge(upstream_config(upstream.url), channels(upstream)))
    upstream.clear_received()
    upstream.fail("/hook", 1, 503)
    ask(server, tool({"content": "retry me", "channel": "webhook", "chat_id": "c"}))
    got = wait_for(lambda: [x for x in upstream.received() if not x.get("failed")], timeout=15)
    assert got and got[0]["body"]["content"] == "retry me"
    assert len([x for x in upstream.received() if x.get("failed")]) == 1


def test_pending_rows_delivered_after_restart(upstream, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/hook/dead"
    ws = tmp_path / "ws"
    upstream.clear_received()
    with ServerProcess(merge(upstream_config(upstream.url), channels(upstream, webhook_url=dead)), workspace=ws) as s:
        r = ask(s, tool({"content": "survive restart", "channel": "webhook", "chat_id": "r"}))
        assert "queued" in r.json()["choices"][0]["message"]["content"]
    assert upstream.received() == []
    with ServerProcess(merge(upstream_config(upstream.url), channels(upstream)), workspace=ws):
        got = wait_for(lambda: upstream.received(), timeout=20)
        assert got and got[0]["body"]["content"] == "survive restart"
