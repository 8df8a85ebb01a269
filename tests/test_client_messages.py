"""What real clients send: system/developer messages (api.clientSystem) and whole conversations
(api.clientHistory "use"), through the real openai SDK against a server on a scripted upstream."""

from __future__ import annotations

import concurrent.futures
import time
import uuid

import openai
import pytest
import requests
from common import CHAT, sdk
from fault_helpers import read_db
from servers import ServerProcess, merge, upstream_config

from nanobot.agent.context import FILE_TOOLS_NOTE
from nanobot.agent.loop import DEFAULT_SYSTEM_PROMPT as BUILT_IN_PROMPT
from nanobot.client_messages import MAX_INSTRUCTION_CHARS

# The server's own system prompt with the default tools (file tools on).
DEFAULT_SYSTEM_PROMPT = f"{BUILT_IN_PROMPT}\n\n{FILE_TOOLS_NOTE}"


def sent(upstream) -> list[dict]:
    """The messages the last LLM call carried."""
    return upstream.requests()[-1]["body"]["messages"]


def stored(server, sid: str) -> list[str]:
    rows = read_db(server.database, "SELECT data FROM messages WHERE session = ? ORDER BY id", (f"api:{sid}",))
    return [bytes(r[0]).decode() for r in rows]


def error_of(exc_info) -> dict:
    return exc_info.value.body if isinstance(exc_info.value.body, dict) else {}


# ------------------------------------------------------------------------------ api.clientSystem


def test_system_message_is_appended_for_this_turn_only(agent_server, upstream):
    client, sid = sdk(agent_server), uuid.uuid4().hex
    upstream.clear()
    reply = client.chat.completions.create(
        model="scripted",
        extra_body={"session_id": sid},
        messages=[{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "hello"}],
    )
    assert reply.choices[0].message.content == "You said: hello"
    assert sent(upstream) == [
        {"role": "system", "content": f"{DEFAULT_SYSTEM_PROMPT}\n\nAnswer in French."},
        {"role": "user", "content": "hello"},
    ]
    # Streaming, with developer messages and text parts: joined in order, after the agent's prompt.
    stream = client.chat.completions.create(
        model="scripted",
        stream=True,
        extra_body={"session_id": sid},
        messages=[
            {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "system", "content": "No emoji."},
            {"role": "user", "content": "again"},
        ],
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "You said: again"
    messages = sent(upstream)
    assert messages[0]["content"] == f"{DEFAULT_SYSTEM_PROMPT}\n\nBe brief.\n\nNo emoji."
    # Never stored: the session holds the two turns, and no instruction.
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    rows = stored(agent_server, sid)
    assert len(rows) == 4 and not any("French" in r or "brief" in r for r in rows)
    client.chat.completions.create(
        model="scripted", extra_body={"session_id": sid}, messages=[{"role": "user", "content": "third"}]
    )
    assert sent(upstream)[0] == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}


def test_instructions_are_bounded(agent_server):
    with pytest.raises(openai.BadRequestError) as exc:
        sdk(agent_server).chat.completions.create(
            model="scripted",
            messages=[
                {"role": "system", "content": "x" * (MAX_INSTRUCTION_CHARS + 1)},
                {"role": "user", "content": "hi"},
            ],
        )
    assert error_of(exc)["code"] == "instructions_too_long"


@pytest.mark.parametrize("mode", ["ignore", "reject"])
def test_client_system_ignore_and_reject(make_server, upstream, mode):
    server = make_server(merge(upstream_config(upstream.url), {"api": {"clientSystem": mode}}))
    body = {"messages": [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "hi"}]}
    upstream.clear()
    r = requests.post(server.url + CHAT, json=body, timeout=30)
    if mode == "ignore":
        assert r.status_code == 200
        assert sent(upstream)[0] == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}
    else:
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "system_message_not_allowed" and err["param"] == "messages[0]"
        assert "api.clientSystem" in err["message"]
        assert upstream.requests() == []


# ----------------------------------------------------------------------- errors about the list


def test_instructions_after_the_user_message_are_refused(agent_server, make_server, upstream):
    """Where the server keeps the history, system and developer messages come before the user message."""
    ignore = make_server(merge(upstream_config(upstream.url), {"api": {"clientHistory": "ignore"}}))
    late = [
        (agent_server, [{"role": "user", "content": "hi"}, {"role": "system", "content": "x"}], 1, "system", 0),
        (
            agent_server,
            [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "hi"},
                {"role": "developer", "content": [{"type": "text", "text": "x"}]},
            ],
            2,
            "developer",
            1,
        ),
        (
            ignore,
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"},
                {"role": "system", "content": "x"},
            ],
            3,
            "system",
            2,
        ),
    ]
    for server, messages, index, role, turn in late:
        for stream in (False, True):
            r = requests.post(server.url + CHAT, json={"messages": messages, "stream": stream}, timeout=30)
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert (err["type"], err["param"], err["code"]) == (
                "invalid_request_error",
                f"messages[{index}]",
                "system_message_after_user",
            )
            assert f"messages[{index}] is a {role} message after the user message (messages[{turn}])" in err["message"]
    assert upstream.requests() == []
    # "ignore": a conversation's earlier system messages stand before the user message of the turn.
    conversation = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "c"},
    ]
    r = requests.post(ignore.url + CHAT, json={"messages": conversation}, timeout=30)
    assert r.status_code == 200, r.text
    assert sent(upstream)[0] == {"role": "system", "content": f"{DEFAULT_SYSTEM_PROMPT}\n\nBe brief."}


def test_history_refusal_says_what_was_sent_and_what_to_do(agent_server):
    conversation = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    r = requests.post(agent_server.url + CHAT, json={"messages": conversation}, timeout=30)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "messages" and err["code"] == "client_history_not_allowed"
    message = err["message"]
    assert "4 messages (1 system, 2 user, 1 assistant)" in message
    for hint in ("api.clientHistory", '"ignore"', '"use"', "session_id", "X-Session-Id"):
        assert hint in message, hint
    # A list with no user message says what it held, and does not talk of history.
    r = requests.post(
        agent_server.url + CHAT,
        json={"messages": [{"role": "system", "content": "s"}, {"role": "developer", "content": "d"}]},
    )
    err = r.json()["error"]
    assert r.status_code == 400 and "2 messages (1 system, 1 developer) but no user message" in err["message"]
    assert "clientHistory" not in err["message"]


def test_x_session_id_selects_the_session_by_default(agent_server, upstream):
    sid = uuid.uuid4().hex
    for text in ("first", "second"):
        r = requests.post(
            agent_server.url + CHAT,
            json={"messages": [{"role": "user", "content": text}]},
            headers={"X-Session-Id": sid},
            timeout=30,
        )
        assert r.status_code == 200
    assert [m["content"] for m in sent(upstream)[1:]] == ["first", "You said: first", "second"]
    assert len(stored(agent_server, sid)) == 4
    r = requests.post(
        agent_server.url + CHAT,
        json={"messages": [{"role": "user", "content": "x"}]},
        headers={"X-Session-Id": "x" * 257},
        timeout=30,
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "X-Session-Id"


# --------------------------------------------------------------------------- api.clientHistory "use"


@pytest.fixture(scope="module")
def use_server(upstream):

    server = ServerProcess(merge(upstream_config(upstream.url), {"api": {"clientHistory": "use"}}))
    yield server
    server.stop()


TOOL_CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is in the file?"},
            {"type": "file", "file": {"filename": "a.txt", "file_data": "data:;base64,eA=="}},
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}},
            {"id": "call_2", "type": "function", "function": {"name": "lookup", "arguments": "{}"}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "one", "name": "lookup"},
    {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "two"}]},
    {"role": "assistant", "content": "It holds x.", "refusal": None},
    {"role": "user", "content": "thanks"},
]


def test_use_sends_the_clients_conversation_and_keeps_no_history(use_server, upstream):
    client, sid = sdk(use_server), uuid.uuid4().hex
    upstream.clear()
    reply = client.chat.completions.create(model="scripted", messages=TOOL_CONVERSATION, extra_body={"session_id": sid})
    assert reply.choices[0].message.content == "You said: thanks"
    assert sent(upstream) == [
        {"role": "system", "content": f"{DEFAULT_SYSTEM_PROMPT}\n\nYou are terse."},
        {"role": "user", "content": "what is in the file?\n[file: a.txt]"},
        {"role": "assistant", "content": None, "tool_calls": TOOL_CONVERSATION[2]["tool_calls"]},
        {"role": "tool", "tool_call_id": "call_1", "content": "one"},
        {"role": "tool", "tool_call_id": "call_2", "content": "two"},
        {"role": "assistant", "content": "It holds x."},
        {"role": "user", "content": "thanks"},
    ]
    # Neither read nor written: a one-message request is a fresh conversation, and nothing is stored.
    stream = client.chat.completions.create(
        model="scripted", stream=True, extra_body={"session_id": sid}, messages=[{"role": "user", "content": "alone"}]
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "You said: alone"
    assert [m["role"] for m in sent(upstream)] == ["system", "user"]
    # A multipart request is a conversation of its one message.
    r = requests.post(
        use_server.url + CHAT,
        data={"message": "form", "session_id": sid},
        timeout=30,
        files={"files": ("n.txt", b"notes")},
    )
    assert r.status_code == 200 and [m["role"] for m in sent(upstream)] == ["system", "user"]
    assert stored(use_server, sid) == []


def test_use_takes_system_messages_anywhere(use_server, upstream):
    """With "use" the list is plain OpenAI: a system message may stand after the user message too."""
    messages = [
        {"role": "user", "content": "a"},
        {"role": "system", "content": "Be brief."},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "developer", "content": "No emoji."},
    ]
    reply = sdk(use_server).chat.completions.create(model="scripted", messages=messages)
    assert reply.choices[0].message.content == "You said: c"
    assert sent(upstream) == [
        {"role": "system", "content": f"{DEFAULT_SYSTEM_PROMPT}\n\nBe brief.\n\nNo emoji."},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]


@pytest.mark.parametrize(
    "messages, param, words",
    [
        (
            [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
            "messages[1]",
            "ends with a message of role assistant",
        ),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "tool", "tool_call_id": "c1", "content": "r"},
                {"role": "user", "content": "b"},
            ],
            "messages[1].tool_call_id",
            "must answer a tool call",
        ),
        (
            [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                {"role": "user", "content": "b"},
            ],
            "messages[1]",
            "c1",
        ),
        (
            [
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {"name": "f"}}]},
                {"role": "user", "content": "b"},
            ],
            "messages[0].tool_calls[0]",
            "A tool call is",
        ),
        ([{"role": "assistant"}, {"role": "user", "content": "b"}], "messages[0]", "content or tool_calls"),
        ([{"role": "function", "content": "x"}, {"role": "user", "content": "b"}], "messages[0]", "role"),
        (
            [{"role": "user", "content": [{"type": "audio"}]}, {"role": "user", "content": "b"}],
            "messages[0].content[0]",
            "text, image_url or file",
        ),
        ([{"role": "user", "content": "a"}] * 1002, "messages", "at most 1000"),
    ],
)
def test_use_refuses_malformed_conversations(use_server, upstream, messages, param, words):
    upstream.clear()
    r = requests.post(use_server.url + CHAT, json={"messages": messages}, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and words in err["message"], err
    assert upstream.requests() == []


def test_use_still_orders_turns_by_session(use_server):
    """The session scopes ordering: two turns on one session run one after the other."""

    def ask(sid: str) -> float:
        r = requests.post(
            use_server.url + CHAT,
            timeout=30,
            json={"session_id": sid, "messages": [{"role": "user", "content": "#slow:600 hi"}]},
        )
        assert r.status_code == 200
        return time.monotonic()

    for sids, at_least, below in (
        ([uuid.uuid4().hex] * 2, 1.2, None),
        ([uuid.uuid4().hex, uuid.uuid4().hex], None, 1.15),
    ):
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            took = max(pool.map(ask, sids)) - start
        if at_least:
            assert took >= at_least
        else:
            assert took < below
