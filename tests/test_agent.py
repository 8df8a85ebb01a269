"""The agent against a scripted upstream: what it really sends and stores."""

from __future__ import annotations

import concurrent.futures
import json
import sqlite3
import time
import uuid

from common import ask, sdk
from servers import ServerProcess, upstream_config

from nanobot.protocol import parse_frames


def last_sent(upstream):
    return upstream.requests()[-1]["body"]


def test_request_sent_upstream(agent_server, upstream):
    upstream.clear()
    sid = uuid.uuid4().hex
    r = ask(agent_server, "what is sent", sid, temperature=1.9, max_tokens=7, tools=[], n=1, seed=4)
    assert r.status_code == 200
    body = last_sent(upstream)
    assert body["model"] == "scripted"
    # A client that waits for the whole reply: one non-streamed upstream call.
    assert body["stream"] is False and "stream_options" not in body
    # The configured values, never the client's.
    assert body["temperature"] == 0.1 and body["max_tokens"] == 4096
    assert "n" not in body
    # The enabled tools of the default config: file tools, web_fetch, message, cron and spawn, no exec.
    names = [t["function"]["name"] for t in body["tools"]]
    assert names == ["read_file", "write_file", "edit_file", "list_dir", "web_fetch", "message", "cron", "spawn"]
    assert body["messages"][0]["role"] == "system" and "nanobot" in body["messages"][0]["content"]
    assert body["messages"][-1] == {"role": "user", "content": "what is sent"}
    headers = upstream.requests()[-1]["headers"]
    assert headers["Authorization"] == "Bearer test-key"
    ask(agent_server, "streamed", sid, stream=True)
    body = last_sent(upstream)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_usage_summed_over_tool_iterations(agent_server, upstream):
    sid = uuid.uuid4().hex
    upstream.clear()
    r = ask(agent_server, '#tool:message {"content":"inline note"} go', sid)
    assert r.status_code == 200
    calls = upstream.requests()
    assert len(calls) == 2
    out = r.json()
    # Inline message content and the final reply are both in this reply.
    assert "inline note" in out["choices"][0]["message"]["content"]
    assert out["choices"][0]["message"]["content"].endswith(
        "tool result: Message shown to the user in this conversation."
    )
    assert out["usage"]["completion_tokens"] > 1
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + out["usage"]["completion_tokens"]
    # The second call carried the assistant tool call and its result.
    second = calls[1]["body"]["messages"]
    assert second[-2]["role"] == "assistant" and second[-2]["tool_calls"][0]["function"]["name"] == "message"
    assert second[-1]["role"] == "tool" and second[-1]["tool_call_id"] == second[-2]["tool_calls"][0]["id"]


def test_whole_turn_is_history(agent_server, upstream):
    sid = uuid.uuid4().hex
    ask(agent_server, '#tool:message {"content":"x"} first', sid)
    upstream.clear()
    ask(agent_server, "next", sid)
    roles = [m["role"] for m in last_sent(upstream)["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"]


def test_tool_events_opt_in(agent_server):
    sid = uuid.uuid4().hex
    text = '#tool:message {"content":"streamed inline"} go'
    plain = parse_frames(ask(agent_server, text, sid, stream=True).content)
    assert not any("nanobot_tool" in json.dumps(f) for f in plain)
    deltas = "".join(f["choices"][0]["delta"].get("content", "") for f in plain[:-1] if f["choices"])
    assert "streamed inline" in deltas
    withev = parse_frames(
        ask(agent_server, text, sid + "b", stream=True, stream_options={"include_tool_events": True}).content
    )
    events = [
        f["choices"][0]["delta"]["nanobot_tool"]
        for f in withev[:-1]
        if f["choices"] and "nanobot_tool" in f["choices"][0]["delta"]
    ]
    call_id = events[0]["id"]
    assert call_id.startswith("call_")
    assert events == [
        {"name": "message", "status": "started", "id": call_id},
        {"name": "message", "status": "finished", "id": call_id, "ok": True},
    ]
    assert withev[-1] == "[DONE]"


def test_tool_errors_reach_the_model(agent_server, upstream):
    upstream.clear()
    r = ask(agent_server, "#tool:nosuchtool {} go", uuid.uuid4().hex)
    assert r.status_code == 200
    assert "tool result: Error: unknown tool 'nosuchtool'" in r.json()["choices"][0]["message"]["content"]
    # a missing argument is refused by the schema check, before the tool runs
    r = ask(agent_server, '#tool:message {"channel":"telegram","chat_id":"1"} go', uuid.uuid4().hex)
    assert "tool result: Error: argument 'content' is required." in r.json()["choices"][0]["message"]["content"]
    # one the schema allows but the tool refuses is the tool's own error
    r = ask(agent_server, '#tool:message {"content":"","channel":"telegram","chat_id":"1"} go', uuid.uuid4().hex)
    assert "content' must be a non-empty string" in r.json()["choices"][0]["message"]["content"]


def test_iteration_cap(make_server, upstream):
    server = make_server(upstream_config(upstream.url, maxToolIterations=3))
    upstream.clear()
    sid = uuid.uuid4().hex
    r = ask(server, "#toolloop", sid)
    assert r.status_code == 200
    assert len(upstream.requests()) == 3
    assert "limit of 3 model calls" in r.json()["choices"][0]["message"]["content"]
    upstream.clear()
    ask(server, "after", sid)
    msgs = last_sent(upstream)["messages"]
    # Well-formed: every tool call has its result, the cap note is a plain reply.
    calls = [c["id"] for m in msgs if m.get("tool_calls") for c in m["tool_calls"]]
    results = [m["tool_call_id"] for m in msgs if m["role"] == "tool"]
    assert calls == results and len(calls) == 2


def test_empty_reply_not_rerun(agent_server, upstream):
    upstream.clear()
    r = ask(agent_server, "#empty", uuid.uuid4().hex)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == ""
    assert len(upstream.requests()) == 1


def test_history_window(make_server, upstream):
    server = make_server(upstream_config(upstream.url, maxHistoryMessages=3))
    sid = uuid.uuid4().hex
    ask(server, "one", sid)
    ask(server, '#tool:message {"content":"m"} two', sid)  # user, assistant(call), tool, assistant
    upstream.clear()
    ask(server, "three", sid)
    msgs = last_sent(upstream)["messages"]
    # The last 3 earlier messages would start with the assistant tool call's
    # result... the window moves forward so it never starts with a tool message.
    assert msgs[1]["role"] != "tool"
    assert msgs[-1]["content"] == "three"
    assert len(msgs) - 2 <= 3
    server0 = make_server(upstream_config(upstream.url, maxHistoryMessages=0))
    ask(server0, "a", sid)
    upstream.clear()
    ask(server0, "b", sid)
    assert [m["role"] for m in last_sent(upstream)["messages"]] == ["system", "user"]


def test_system_prompt_config(make_server, upstream):
    server = make_server(upstream_config(upstream.url, systemPrompt="You are Zed."))
    upstream.clear()
    ask(server, "hi")
    assert last_sent(upstream)["messages"][0] == {"role": "system", "content": "You are Zed."}


def test_history_survives_restart(upstream, tmp_path):
    ws = tmp_path / "ws"
    sid = uuid.uuid4().hex
    with ServerProcess(upstream_config(upstream.url), workspace=ws) as s:
        ask(s, "remember the lime", sid)
    with ServerProcess(upstream_config(upstream.url), workspace=ws) as s:
        upstream.clear()
        ask(s, "what did I say", sid)
        contents = [m["content"] for m in last_sent(upstream)["messages"][1:]]
        assert contents == ["remember the lime", "You said: remember the lime", "what did I say"]
    db = sqlite3.connect(s.database)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT count(*) FROM messages WHERE session = ?", (f"api:{sid}",)).fetchone()[0] == 4


def timed(server, text, sid):
    t0 = time.monotonic()
    r = ask(server, text, sid)
    return t0, time.monotonic(), r


def test_same_session_serialized_in_order(agent_server, upstream):
    sid = uuid.uuid4().hex
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = []
        for i in range(3):
            futures.append(pool.submit(timed, agent_server, f"#slow:400 turn{i}", sid))
            time.sleep(0.05)  # arrival order
        results = [f.result() for f in futures]
    ends = [end for _, end, _ in results]
    assert all(r.status_code == 200 for *_, r in results)
    assert ends == sorted(ends)
    assert ends[-1] - results[0][0] >= 1.1  # three 400 ms turns one after another
    upstream.clear()
    ask(agent_server, "final", sid)
    users = [m["content"] for m in last_sent(upstream)["messages"] if m["role"] == "user"]
    assert users == ["#slow:400 turn0", "#slow:400 turn1", "#slow:400 turn2", "final"]


def test_different_sessions_concurrent(agent_server):
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        t0 = time.monotonic()
        futures = [pool.submit(timed, agent_server, "#slow:600 par", uuid.uuid4().hex) for _ in range(6)]
        results = [f.result() for f in futures]
        elapsed = time.monotonic() - t0
    assert all(r.status_code == 200 for *_, r in results)
    assert elapsed < 6 * 0.6 / 2  # far below serial time (3.6 s)


def test_openai_sdk_tool_turn_streaming(agent_server):
    c = sdk(agent_server)
    chunks = list(
        c.chat.completions.create(
            model="scripted",
            stream=True,
            messages=[{"role": "user", "content": '#tool:message {"content":"hey"} x'}],
            extra_body={"session_id": uuid.uuid4().hex},
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.startswith("hey") and "tool result:" in text


def test_provider_extra_headers(make_server, upstream):
    cfg = upstream_config(upstream.url)
    cfg["providers"]["scripted"]["extraHeaders"] = {"X-Team": "blue"}
    server = make_server(cfg)
    upstream.clear()
    assert ask(server, "hi").status_code == 200
    assert upstream.requests()[-1]["headers"]["X-Team"] == "blue"
