"""What the cron and spawn tests share: configs, tool directives, reading deliveries."""

from __future__ import annotations

import json
import re
import sqlite3
from typing import Any

from common import ask, state_db
from servers import merge, upstream_config

DUE = re.compile(r"\[scheduled job ([0-9a-f]+), [^\]]*, due ([^\]]+)\]")


def cron_config(upstream: Any, **extra: Any) -> dict[str, Any]:
    """The scripted upstream, both fake channels (chats 'room-1' and '-100777' allowed), a 1 s minimum interval."""
    base = merge(
        upstream_config(upstream.url),
        {
            "tools": {"cron": {"minIntervalSeconds": 1}},
            "channels": {
                "telegram": {
                    "enabled": True,
                    "token": "123:SECRET",
                    "apiBase": upstream.url,
                    "allowedChatIds": ["-100777"],
                },
                "webhook": {"enabled": True, "url": upstream.url + "/hook/main", "allowedChatIds": ["room-1"]},
            },
        },
    )
    return merge(base, extra)


def directive(tool: str, args: dict[str, Any]) -> str:
    return f"#tool:{tool} {json.dumps(args)}"


def call(server: Any, sid: str, tool: str, **args: Any) -> str:
    """One turn whose model calls ``tool`` with ``args``; the reply (the scripted upstream echoes the result)."""
    r = ask(server, directive(tool, args), sid)
    assert r.status_code == 200, r.text
    reply: str = r.json()["choices"][0]["message"]["content"]
    return reply


def job_id(reply: str) -> str:
    found = re.search(r"Scheduled job ([0-9a-f]+)", reply)
    assert found, reply
    return found.group(1)


def fires(upstream: Any, job: str) -> list[tuple[str, str]]:
    """(path, due time) of each successful delivery of ``job``'s replies."""
    out = []
    for record in upstream.received():
        if record.get("failed"):
            continue
        body = record["body"]
        text = body.get("text") or body.get("content") or ""
        for found in DUE.finditer(text):
            if found.group(1) == job:
                out.append((record["path"], found.group(2)))
    return out


def session_messages(workspace: Any, key: str) -> list[dict[str, Any]]:
    """The stored messages of session ``key`` in the server's SQLite file."""
    db = sqlite3.connect(state_db(workspace))
    try:
        rows = db.execute("SELECT data FROM messages WHERE session = ? ORDER BY id", (key,)).fetchall()
    finally:
        db.close()
    return [json.loads(r[0]) for r in rows]
