"""What the model is asked for: response_format reaches it, what a turn cannot give is refused.

Real processes: the openai SDK and LangChain against a nanobot server that
talks to the scripted upstream (which answers a response_format with JSON
and records what it was sent).
"""

from __future__ import annotations

import json
import sqlite3
import uuid

import openai
import pydantic
import pytest
import requests
from common import CHAT, HI, MIB, ask, sdk
from langchain_openai import ChatOpenAI
from servers import upstream_config

from nanobot.sessions.budget import MIN_CUT


class City(pydantic.BaseModel):
    name: str
    population: int
    coastal: bool


SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "city", "strict": True, "schema": City.model_json_schema()},
}


def sent_bodies(upstream):
    return [r["body"] for r in upstream.requests()]


def test_sdk_response_format_reaches_the_model(agent_server, upstream):
    client = sdk(agent_server)
    for stream in (False, True):
        upstream.clear()
        if stream:
            chunks = client.chat.completions.create(
                model="scripted",
                messages=[{"role": "user", "content": "Lisbon"}],
                response_format=SCHEMA_FORMAT,
                stream=True,
            )
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            reply = client.chat.completions.create(
                model="scripted", messages=[{"role": "user", "content": "Lisbon"}], response_format=SCHEMA_FORMAT
            )
            text = reply.choices[0].message.content or ""
        assert City.model_validate_json(text) == City(name="Lisbon", population=0, coastal=False)
        (body,) = sent_bodies(upstream)
        assert body["response_format"] == SCHEMA_FORMAT
    upstream.clear()
    reply = client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "x"}], response_format={"type": "json_object"}
    )
    assert json.loads(reply.choices[0].message.content or "") == {"you_said": "x"}
    assert sent_bodies(upstream)[0]["response_format"] == {"type": "json_object"}
    upstream.clear()
    client.chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "x"}], response_format={"type": "text"}
    )
    assert "response_format" not in sent_bodies(upstream)[0]  # text is the default: nothing to send


def test_response_format_on_every_call_of_a_tool_turn(agent_server, upstream):
    upstream.clear()
    r = ask(agent_server, '#tool:message {"content":"note"} go', uuid.uuid4().hex, response_format=SCHEMA_FORMAT)
    assert r.status_code == 200, r.text
    bodies = sent_bodies(upstream)
    assert len(bodies) == 2 and all(b["response_format"] == SCHEMA_FORMAT for b in bodies)


def test_langchain_with_structured_output(agent_server, upstream):
    upstream.clear()
    llm = ChatOpenAI(base_url=agent_server.base_url, api_key="unused", model="scripted", max_retries=0)
    city = llm.with_structured_output(City).invoke("Porto")
    assert city == City(name="Porto", population=0, coastal=False)
    (body,) = sent_bodies(upstream)
    assert body["response_format"]["type"] == "json_schema"  # LangChain's default method
    assert body["response_format"]["json_schema"]["name"] == "City"


def assert_400(r: requests.Response, param: str) -> str:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    return str(error["message"])


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"response_format": "json"}, "response_format"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}},
            "response_format.json_schema.name",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": []}}},
            "response_format.json_schema.schema",
        ),
        ({"n": 2}, "n"),
        ({"n": True}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
    ],
)
def test_refused_fields(agent_server, upstream, fields, param):
    upstream.clear()
    message = assert_400(requests.post(agent_server.url + CHAT, json={**HI, **fields}, timeout=30), param)
    assert param.split(".")[0] in message
    assert upstream.requests() == []


def test_n_above_one_says_why(agent_server):
    with pytest.raises(openai.BadRequestError) as err:
        sdk(agent_server).chat.completions.create(model="scripted", messages=[{"role": "user", "content": "x"}], n=2)
    assert err.value.body["param"] == "n" and "once" in err.value.body["message"]


def test_default_values_of_client_libraries_are_accepted(agent_server, upstream):
    upstream.clear()
    fields = {
        "n": 1,
        "logprobs": False,
        "top_logprobs": None,
        "audio": None,
        "modalities": ["text"],
        "user": "u",
        "temperature": 1.5,
        "seed": 3,
        "max_tokens": 5,
        "max_completion_tokens": 5,
        "presence_penalty": 0,
        "stream_options": None,
    }
    r = requests.post(agent_server.url + CHAT, json={**HI, **fields}, timeout=30)
    assert r.status_code == 200, r.text
    (body,) = sent_bodies(upstream)
    for name in ("n", "logprobs", "top_logprobs", "audio", "modalities", "user", "seed", "max_completion_tokens"):
        assert name not in body
    assert body["temperature"] == 0.1 and body["max_tokens"] == 4096


def test_echo_refuses_structured_output(echo_server):
    for fmt in (SCHEMA_FORMAT, {"type": "json_object"}):
        for stream in (False, True):
            r = requests.post(echo_server.url + CHAT, json={**HI, "response_format": fmt, "stream": stream}, timeout=30)
            assert "echo provider cannot produce structured output" in assert_400(r, "response_format")
    r = requests.post(echo_server.url + CHAT, json={**HI, "response_format": {"type": "text"}}, timeout=30)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "hi"


def test_form_refuses_response_format(echo_server):
    files = {"message": (None, "hi"), "response_format": (None, '{"type":"json_object"}')}
    assert "JSON body" in assert_400(requests.post(echo_server.url + CHAT, files=files, timeout=30), "response_format")


def test_history_sent_is_bounded_by_size(make_server, upstream):
    server = make_server(upstream_config(upstream.url))  # the default maxHistoryChars, 200000
    budget = 200_000
    sid = uuid.uuid4().hex
    huge = "#empty " + "big words " * (5 * MIB // 10)  # 5 MB; #empty: a short reply
    assert ask(server, huge, sid, timeout=120).status_code == 200
    for i in range(3):
        upstream.clear()
        assert ask(server, f"small {i}", sid).status_code == 200
        (body,) = sent_bodies(upstream)
        earlier = body["messages"][1:-1]
        sent = sum(len(m.get("content") or "") for m in earlier)
        assert budget - MIN_CUT < sent <= budget + 100, sent  # the huge message, cut to what is left
        assert len(json.dumps(body)) < budget + 20_000
        cut = next(m for m in earlier if m["role"] == "user" and m["content"].startswith("#empty"))
        assert "characters cut ...]" in cut["content"]
        assert body["messages"][-1]["content"] == f"small {i}"
    db = sqlite3.connect(server.database)
    try:
        stored = [
            json.loads(row[0]) for row in db.execute("SELECT data FROM messages WHERE session = ?", (f"api:{sid}",))
        ]
    finally:
        db.close()
    assert stored[0] == {"role": "user", "content": huge}  # what is kept is whole
    assert len(stored) == 8
