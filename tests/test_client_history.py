"""api.clientHistory: "reject" (default) vs "ignore" for clients that resend everything."""

from __future__ import annotations

import uuid

import requests
from common import CHAT
from servers import merge, upstream_config

CONVERSATION = [
    {"role": "system", "content": "be nice"},
    {"role": "user", "content": "old question"},
    {"role": "assistant", "content": "old answer"},
    {"role": "user", "content": "the new turn"},
]


def test_reject_is_default(agent_server):
    r = requests.post(agent_server.url + CHAT, json={"messages": CONVERSATION})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


def test_ignore_uses_last_user_message(make_server, upstream):
    server = make_server(merge(upstream_config(upstream.url), {"api": {"clientHistory": "ignore"}}))
    sid = uuid.uuid4().hex
    upstream.clear()
    r = requests.post(server.url + CHAT, json={"messages": CONVERSATION, "session_id": sid})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == "You said: the new turn"
    sent = upstream.requests()[-1]["body"]["messages"]
    # The server owns the history: the client's copy is not sent upstream.
    assert [m["content"] for m in sent[1:]] == ["the new turn"]
    # Session from X-Session-Id when the body has none.
    hsid = uuid.uuid4().hex
    requests.post(server.url + CHAT, json={"messages": CONVERSATION}, headers={"X-Session-Id": hsid})
    upstream.clear()
    requests.post(
        server.url + CHAT, json={"messages": [{"role": "user", "content": "next"}]}, headers={"X-Session-Id": hsid}
    )
    assert [m["content"] for m in upstream.requests()[-1]["body"]["messages"][1:]] == [
        "the new turn",
        "You said: the new turn",
        "next",
    ]
    # session_id in the body wins over the header.
    upstream.clear()
    requests.post(
        server.url + CHAT,
        json={"messages": [{"role": "user", "content": "x"}], "session_id": sid},
        headers={"X-Session-Id": hsid},
    )
    assert upstream.requests()[-1]["body"]["messages"][1]["content"] == "the new turn"
    assert len(upstream.requests()[-1]["body"]["messages"]) == 4
    # Still no user message at all -> 400.
    r = requests.post(server.url + CHAT, json={"messages": [{"role": "assistant", "content": "x"}]})
    assert r.status_code == 400
    r = requests.post(server.url + CHAT, json={"messages": CONVERSATION}, headers={"X-Session-Id": "a\x01"})
    assert r.status_code in (400,)
