"""POST /v1/responses (JSON) and the stored responses, with the real openai SDK against the scripted upstream."""

from __future__ import annotations

import uuid
from typing import Any, cast

import openai
import pytest
import requests
from builders import make_pdf
from common import MIB, data_url, run_nanobot, sdk
from fault_helpers import png_1x1
from responses_helpers import RESPONSES, item_texts, post, strict_response
from servers import ServerProcess, merge, upstream_config

pytestmark = pytest.mark.timeout(120)


def user_texts(record: dict) -> list[str]:
    """The text of every non-system message the upstream was sent, in order (role: text)."""
    out = []
    for m in record["body"]["messages"][1:]:
        content = m.get("content")
        if isinstance(content, list):
            content = " ".join(p.get("text", "") for p in content if p.get("type") == "text")
        out.append(f"{m['role']}: {content}")
    return out


@pytest.fixture(scope="module")
def server(upstream):
    with ServerProcess(upstream_config(upstream.url)) as s:
        yield s


# --- 1. one response ------------------------------------------------------------------------------


def test_plain_text_with_the_sdk(server, upstream):
    client = sdk(server)
    r = client.responses.create(model="scripted", input="hello responses", metadata={"team": "a"})
    assert r.output_text == "You said: hello responses"
    assert r.object == "response" and r.status == "completed" and r.id.startswith("resp_")
    assert r.model == "scripted" and r.metadata == {"team": "a"} and r.previous_response_id is None
    message = r.output[0]
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert r.usage is not None and r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens > 0
    raw = post(server, {"input": "raw"}).json()
    strict_response(raw)
    assert raw["error"] is None and raw["incomplete_details"] is None and raw["store"] is True
    assert raw["text"]["format"] == {"type": "text"} and raw["tools"] == [] and raw["tool_choice"] == "auto"
    assert raw["output"][0]["content"] == [
        {"type": "output_text", "text": "You said: raw", "annotations": [], "logprobs": []}
    ]


def test_instructions_are_for_this_turn_only(server, upstream):
    client = sdk(server)
    first = client.responses.create(model="scripted", input="one", instructions="Answer in French.")
    assert first.instructions == "Answer in French."
    system = upstream.requests()[-1]["body"]["messages"][0]
    assert system["role"] == "system" and system["content"].endswith("\n\nAnswer in French.")
    client.responses.create(model="scripted", input="two", previous_response_id=first.id)
    assert "Answer in French." not in upstream.requests()[-1]["body"]["messages"][0]["content"]


def test_an_item_list_with_developer_and_earlier_items(server, upstream):
    client = sdk(server)
    conversation: list[Any] = [
        {"role": "developer", "content": "Be terse."},
        {"role": "user", "content": "earlier question"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "earlier answer"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "now"}]},
    ]
    r = client.responses.create(model="scripted", input=conversation)
    assert r.output_text == "You said: now"
    record = upstream.requests()[-1]
    assert record["body"]["messages"][0]["content"].endswith("\n\nBe terse.")
    assert user_texts(record) == ["user: earlier question", "assistant: earlier answer", "user: now"]
    items = client.responses.input_items.list(r.id, order="asc")
    assert [(i.type, i.model_dump()["role"]) for i in items.data] == [
        ("message", "developer"),
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
    ]


def test_an_image_and_a_pdf_go_through_file_extraction(server, upstream):
    marker = "PDF" + uuid.uuid4().hex[:8]
    client = sdk(server)
    r = client.responses.create(
        model="scripted",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": data_url(png_1x1(), "image/png"), "detail": "auto"},
                    {"type": "input_file", "filename": "a.pdf", "file_data": data_url(make_pdf([marker]))},
                ],
            }
        ],
    )
    assert r.status == "completed"
    user = upstream.requests()[-1]["body"]["messages"][-1]
    kinds = [p["type"] for p in user["content"]]
    assert "image_url" in kinds and user["content"][0]["text"].startswith("look\n\n[file: a.pdf]\n")
    assert marker in user["content"][0]["text"]
    # The chain keeps the document's text and an image placeholder, never the image's bytes.
    client.responses.create(model="scripted", input="and?", previous_response_id=r.id)
    earlier = upstream.requests()[-1]["body"]["messages"][1]
    assert (
        isinstance(earlier["content"], str) and marker in earlier["content"] and "[image: image]" in earlier["content"]
    )


def test_accepted_fields_never_cause_an_error_nor_reach_the_model(server, upstream):
    r = post(
        server,
        {
            "input": "fields",
            "temperature": 1.7,
            "top_p": 0.3,
            "max_output_tokens": 7,
            "reasoning": {"effort": "low"},
            "text": {"format": {"type": "text"}, "verbosity": "low"},
            "truncation": "auto",
            "user": "u-1",
            "parallel_tool_calls": False,
            "include": ["message.output_text.logprobs"],
            "tools": [],
            "tool_choice": "auto",
            "store": True,
            "prompt_cache_key": "k",
            "safety_identifier": "s",
            "service_tier": "auto",
            "stream_options": None,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    strict_response(body)
    assert body["user"] == "u-1" and body["parallel_tool_calls"] is False and body["truncation"] == "auto"
    sent = upstream.requests()[-1]["body"]
    assert sent["temperature"] == 0.1 and sent["max_tokens"] == 4096  # the configured ones


BAD = [
    ({}, "input", None),
    ({"input": ""}, "input", None),
    ({"input": []}, "input", None),
    ({"input": 5}, "input", None),
    ({"input": [7]}, "input[0]", None),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role", None),
    ({"input": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}, "input[1]", None),
    ({"input": [{"role": "developer", "content": "only instructions"}]}, "input", None),
    ({"input": [{"role": "user", "content": [{"type": "audio"}]}]}, "input[0].content[0].type", None),
    ({"input": [{"role": "user", "content": []}]}, "input[0].content", None),
    ({"input": [{"role": "user", "content": [{"type": "input_text", "text": " "}]}]}, "input[0].content", None),
    (
        {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x.example/a.png"}]}]},
        "input[0].content[0].image_url",
        "remote_url_not_supported",
    ),
    (
        {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
        "input[0].content[0].file_id",
        None,
    ),
    (
        {"input": [{"role": "user", "content": [{"type": "input_file", "file_data": "data:text/plain,hi"}]}]},
        "input[0].content[0].file_data",
        "invalid_data_url",
    ),
    ({"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]}, "input", "unknown_tool_call_id"),
    ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type", None),
    ({"input": "x", "model": "gpt-4o"}, "model", "model_not_found"),
    ({"input": "x", "stream": "yes"}, "stream", None),
    ({"input": "x", "store": "no"}, "store", None),
    ({"input": "x", "instructions": 5}, "instructions", None),
    ({"input": "x", "metadata": {"k": 1}}, "metadata.k", None),
    ({"input": "x", "metadata": []}, "metadata", None),
    ({"input": "x", "previous_response_id": 5}, "previous_response_id", None),
    ({"input": "x", "previous_response_id": "resp_nope"}, "previous_response_id", "previous_response_not_found"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type", None),
    ({"input": "x", "tools": [{"type": "function", "name": "read_file", "parameters": {}}]}, "tools", None),
    ({"input": "x", "tools": [{"type": "function", "name": "bad name", "parameters": {}}]}, "tools", None),
    (
        {"input": "x", "tools": [{"type": "function", "name": "f"}], "tool_choice": {"type": "function", "name": "g"}},
        "tool_choice",
        "unknown_tool",
    ),
    ({"input": "x", "tools": {}}, "tools", None),
    ({"input": "x", "tool_choice": "sometimes"}, "tool_choice", None),
    ({"input": "x", "background": True}, "background", None),
    ({"input": "x", "truncation": "middle"}, "truncation", None),
    ({"input": "x", "text": {"format": {"type": "xml"}}}, "text.format", None),
    ({"input": "x", "session_id": ""}, "session_id", "invalid_session_id"),
]


@pytest.mark.parametrize(("body", "param", "code"), BAD, ids=[b[1] + ":" + str(i) for i, b in enumerate(BAD)])
def test_bad_input_is_a_400_naming_the_field(server, body, param, code):
    r = post(server, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]
    if code is not None:
        assert error["code"] == code


def test_bodies_that_are_not_json_and_too_large(server):
    url = server.url + RESPONSES
    assert requests.post(url, data=b"input=x", headers={"Content-Type": "text/plain"}, timeout=30).status_code == 415
    multipart = requests.post(url, files={"files": ("a.txt", b"x")}, data={"message": "m"}, timeout=30)
    assert multipart.status_code == 415 and multipart.json()["error"]["code"] == "unsupported_content_type"
    assert requests.post(url, data=b"{", headers={"Content-Type": "application/json"}, timeout=30).status_code == 400
    big = requests.post(url, json={"input": "x" * (33 * MIB)}, timeout=60)
    assert big.status_code == 413 and big.json()["error"]["type"] == "request_too_large"


def test_the_sdk_raises_on_errors(server):
    client = sdk(server)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="scripted", input="x", previous_response_id="resp_missing")
    assert info.value.code == "previous_response_not_found"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_missing")


def test_an_upstream_failure_is_a_502_and_stores_nothing(server, upstream):
    r = post(server, {"input": "#status:500 fail"})
    assert r.status_code == 502 and r.json()["error"]["type"] == "upstream_error"


# --- 2. stored responses and chains -------------------------------------------------------------


def test_chains_and_branches(server, upstream):
    client = sdk(server)
    first = client.responses.create(model="scripted", input="root")
    second = client.responses.create(model="scripted", input="child", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert user_texts(upstream.requests()[-1]) == ["user: root", "assistant: You said: root", "user: child"]
    third = client.responses.create(model="scripted", input="grandchild", previous_response_id=second.id)
    assert user_texts(upstream.requests()[-1]) == [
        "user: root",
        "assistant: You said: root",
        "user: child",
        "assistant: You said: child",
        "user: grandchild",
    ]
    assert third.output_text == "You said: grandchild"
    # A branch from the first response sees neither the second nor the third.
    client.responses.create(model="scripted", input="branch", previous_response_id=first.id)
    assert user_texts(upstream.requests()[-1]) == ["user: root", "assistant: You said: root", "user: branch"]


def test_retrieve_returns_what_create_answered(server):
    created = post(server, {"input": "keep me", "metadata": {"n": "1"}}).json()
    got = requests.get(f"{server.url}{RESPONSES}/{created['id']}", timeout=30)
    assert got.status_code == 200 and got.json() == created
    assert sdk(server).responses.retrieve(created["id"]).output_text == "You said: keep me"


def test_input_items_order_limit_after(server):
    client = sdk(server)
    input_items: list[Any] = [{"role": "user", "content": f"m{i}"} for i in range(4)]
    input_items[1] = {"role": "assistant", "content": "a1"}
    r = client.responses.create(model="scripted", input=input_items)
    asc = client.responses.input_items.list(r.id, order="asc")
    assert item_texts(asc) == ["m0", "a1", "m2", "m3"] and not asc.has_more
    desc = client.responses.input_items.list(r.id)
    assert item_texts(desc) == ["m3", "m2", "a1", "m0"]
    page = client.responses.input_items.list(r.id, order="asc", limit=2)
    last_id = cast(Any, page).last_id  # in the body, not in the SDK's page type
    assert len(page.data) == 2 and page.has_more and last_id == asc.data[1].id
    rest = client.responses.input_items.list(r.id, order="asc", limit=2, after=last_id)
    assert item_texts(rest) == ["m2", "m3"] and not rest.has_more
    every = [i.id for i in client.responses.input_items.list(r.id, order="asc", limit=1)]  # the SDK pages on
    assert every == [i.id for i in asc.data]
    url = f"{server.url}{RESPONSES}/{r.id}/input_items"
    assert requests.get(f"{url}?after=unknown", timeout=30).json()["data"] == []
    for query, param in [("order=up", "order"), ("limit=0", "limit"), ("limit=101", "limit"), ("limit=x", "limit")]:
        bad = requests.get(f"{url}?{query}", timeout=30)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == param


def test_delete_then_nothing_finds_it(server):
    client = sdk(server)
    r = client.responses.create(model="scripted", input="doomed")
    gone = requests.delete(f"{server.url}{RESPONSES}/{r.id}", timeout=30)
    assert gone.status_code == 200 and gone.json() == {"id": r.id, "object": "response", "deleted": True}
    for method, path in [("GET", r.id), ("DELETE", r.id), ("GET", r.id + "/input_items")]:
        again = requests.request(method, f"{server.url}{RESPONSES}/{path}", timeout=30)
        assert again.status_code == 404 and again.json()["error"]["type"] == "not_found_error"
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="scripted", input="x", previous_response_id=r.id)
    assert info.value.param == "previous_response_id"
    other = client.responses.create(model="scripted", input="deleted by the sdk")
    client.responses.delete(other.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(other.id)


def test_store_false_is_neither_retrievable_nor_chainable(server):
    client = sdk(server)
    r = client.responses.create(model="scripted", input="ephemeral", store=False)
    assert r.output_text == "You said: ephemeral" and cast(Any, r).store is False  # not in the SDK's type
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="scripted", input="x", previous_response_id=r.id)
    assert info.value.code == "previous_response_not_found"
    # Continuing a stored chain without storing the new turn.
    kept = client.responses.create(model="scripted", input="kept")
    client.responses.create(model="scripted", input="not kept", previous_response_id=kept.id, store=False)
    assert client.responses.retrieve(kept.id).output_text == "You said: kept"


def test_a_chain_belongs_to_its_session(server, upstream):
    client = sdk(server)
    sid = uuid.uuid4().hex
    r = client.responses.create(model="scripted", input="mine", extra_headers={"X-Session-Id": sid})
    follow = client.responses.create(model="scripted", input="go on", previous_response_id=r.id)
    assert follow.output_text == "You said: go on"  # no header: the chain's session
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(
            model="scripted", input="x", previous_response_id=r.id, extra_headers={"X-Session-Id": "another"}
        )
    assert info.value.code == "session_mismatch"


def test_the_chain_window_is_max_history_messages(upstream):
    config = merge(upstream_config(upstream.url), {"agents": {"defaults": {"maxHistoryMessages": 3}}})
    with ServerProcess(config) as s:
        client = sdk(s)
        previous = None
        for word in ("w1", "w2", "w3"):
            previous = client.responses.create(model="scripted", input=word, previous_response_id=previous).id
        # Four earlier messages in the chain: the last three of them.
        assert user_texts(upstream.requests()[-1]) == [
            "assistant: You said: w1",
            "user: w2",
            "assistant: You said: w2",
            "user: w3",
        ]


def test_a_chain_survives_a_restart(upstream, tmp_path):
    config = upstream_config(upstream.url)
    with ServerProcess(config, workspace=tmp_path / "ws") as s:
        first = sdk(s).responses.create(model="scripted", input="before restart")
    with ServerProcess(config, workspace=tmp_path / "ws") as s:
        client = sdk(s)
        assert client.responses.retrieve(first.id).output_text == "You said: before restart"
        client.responses.create(model="scripted", input="after restart", previous_response_id=first.id)
        assert user_texts(upstream.requests()[-1])[:2] == [
            "user: before restart",
            "assistant: You said: before restart",
        ]


def test_expired_responses_are_gone(upstream):
    # A retention of about a millisecond: every response has expired by the time it is asked for.
    config = merge(upstream_config(upstream.url), {"api": {"responses": {"retentionDays": 1e-8}}})
    with ServerProcess(config) as s:
        client = sdk(s)
        r = client.responses.create(model="scripted", input="short-lived")
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(r.id)
        with pytest.raises(openai.BadRequestError):
            client.responses.create(model="scripted", input="x", previous_response_id=r.id)


def test_the_retention_key_is_checked(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"api": {"responses": {"retentionDays": -1}}}')
    bad = run_nanobot("config", "check", "--config", str(config))
    assert bad.returncode == 2 and "api.responses.retentionDays" in bad.stderr
    config.write_text('{"api": {"responses": {"retentionDays": 0, "other": 1}}}')
    unknown = run_nanobot("config", "check", "--config", str(config))
    assert unknown.returncode == 2 and "api.responses.other" in unknown.stderr
