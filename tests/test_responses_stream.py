"""POST /v1/responses with stream: the SSE events in the SDK's own types, failures, pings, disconnects."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from typing import Any

import openai
import pytest
import requests
from common import sdk
from responses_helpers import RESPONSES, item_texts, sse_events, stream_raw, strict_response
from servers import ServerProcess, merge, upstream_config

from nanobot.testing.process import UpstreamProcess

pytestmark = pytest.mark.timeout(120)

SEQUENCE = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
TAIL = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture(scope="module")
def server(upstream):
    config = merge(upstream_config(upstream.url), {"api": {"timeout": 3, "pingInterval": 0.25}})
    with ServerProcess(config) as s:
        yield s


def test_the_event_sequence_and_the_stored_response(server):
    events = sse_events(stream_raw(server, {"input": "stream these words", "metadata": {"m": "1"}}).content)
    kinds = [e["type"] for e in events]
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert kinds == SEQUENCE + ["response.output_text.delta"] * len(deltas) + TAIL and len(deltas) >= 3
    assert "".join(d["delta"] for d in deltas) == "You said: stream these words"
    item_id = events[2]["item"]["id"]
    assert all(d["item_id"] == item_id and d["logprobs"] == [] for d in deltas)
    assert all((d["output_index"], d["content_index"]) == (0, 0) for d in deltas)
    created, completed = events[0]["response"], events[-1]["response"]
    strict_response(created)
    strict_response(completed)
    assert created["status"] == "in_progress" and created["output"] == [] and created["usage"] is None
    assert completed["status"] == "completed" and completed["id"] == created["id"]
    assert completed["output"][0]["content"][0]["text"] == "You said: stream these words"
    assert completed["usage"]["output_tokens"] > 0 and completed["metadata"] == {"m": "1"}
    # Stored before the completed event went out: GET returns that same response.
    got = requests.get(f"{server.url}{RESPONSES}/{completed['id']}", timeout=30)
    assert got.json() == completed


def test_the_sdk_stream_helper_and_stream_true(server, upstream):
    client = sdk(server)
    with client.responses.stream(model="scripted", input="helper stream") as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == final.output_text == "You said: helper stream"
    chained = client.responses.create(model="scripted", input="raw stream", previous_response_id=final.id, stream=True)
    events = list(chained)
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "You said: raw stream"
    assert [m["content"] for m in upstream.requests()[-1]["body"]["messages"][1:]] == [
        "helper stream",
        "You said: helper stream",
        "raw stream",
    ]


def test_an_empty_reply_still_has_its_message(server):
    events = sse_events(stream_raw(server, {"input": "#empty"}).content)
    assert [e["type"] for e in events] == SEQUENCE + TAIL
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""


def test_a_failure_after_the_headers_is_response_failed(server):
    r = stream_raw(server, {"input": "#die now"})
    events = sse_events(r.content)
    assert events[-1]["type"] == "response.failed" and "[DONE]" not in r.text
    failed = events[-1]["response"]
    strict_response(failed)
    assert failed["status"] == "failed" and failed["error"]["code"] == "server_error" and failed["error"]["message"]
    assert failed["id"] == events[0]["response"]["id"]
    # Nothing was stored, and the SDK's stream helper raises.
    assert requests.get(f"{server.url}{RESPONSES}/{failed['id']}", timeout=30).status_code == 404
    with pytest.raises(RuntimeError, match="response.completed"):
        with sdk(server).responses.stream(model="scripted", input="#status:500 x") as stream:
            kinds = [e.type for e in stream]
            assert kinds[-1] == "response.failed"
            stream.get_final_response()


def test_a_timeout_after_the_headers_is_response_failed(server):
    events = sse_events(stream_raw(server, {"input": "#slow:6000 late"}).content)
    assert events[-1]["type"] == "response.failed"
    assert "api.timeout" in events[-1]["response"]["error"]["message"]


def test_errors_before_the_turn_are_plain_http_errors(server):
    r = requests.post(server.url + RESPONSES, json={"input": [], "stream": True}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"


def test_pings_while_silent(server):
    raw = stream_raw(server, {"input": "#slow:1000 hello"}).content
    assert b": ping\n\n" in raw
    assert raw.index(b": ping") < raw.index(b"response.output_text.delta")
    sse_events(raw)  # pings are comments between whole frames


def test_a_client_that_leaves_cancels_the_run(make_server):
    with UpstreamProcess.start(tokens=40, interval_ms=100) as slow:
        s = make_server(upstream_config(slow.url))
        conn = socket.create_connection(("127.0.0.1", s.port))
        body = json.dumps({"input": "long one", "stream": True}).encode()
        conn.sendall(
            b"POST /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        got = b""
        while got.count(b"response.output_text.delta") < 4:
            got += conn.recv(4096)
        conn.close()
        response_id = got.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode()
        assert requests.get(s.url + "/health", timeout=5).status_code == 200
        time.sleep(4.5)  # longer than the whole answer would have taken
        assert requests.get(f"{s.url}{RESPONSES}/{response_id}", timeout=5).status_code == 404
        assert "Traceback" not in s.stderr_text()


def test_the_node_of_one_chain_is_any_node(postgres, upstream):
    """Two nodes on one PostgreSQL database serve one chain: each finds what the other stored."""
    url = postgres.new_database()
    config = merge(upstream_config(upstream.url), {"database": {"url": url}})
    with ServerProcess(config) as a, ServerProcess(config) as b:
        first = sdk(a).responses.create(model="scripted", input="on node a " + uuid.uuid4().hex[:6])
        with sdk(b).responses.stream(model="scripted", input="on node b", previous_response_id=first.id) as st:
            second = st.get_final_response()
        assert [m["role"] for m in upstream.requests()[-1]["body"]["messages"]] == [
            "system",
            "user",
            "assistant",
            "user",
        ]
        assert sdk(a).responses.retrieve(second.id).output_text == "You said: on node b"
        items = sdk(a).responses.input_items.list(second.id)
        assert item_texts(items) == ["on node b"]
        sdk(b).responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            sdk(a).responses.retrieve(first.id)


def test_turns_on_one_chain_run_in_order(server):
    """A second turn on a chain waits for the one running: it starts only once that one completed."""
    client = sdk(server)
    root = client.responses.create(model="scripted", input="root of two branches")
    first: list[Any] = []
    started = threading.Event()

    def slow_branch() -> None:
        with client.responses.stream(model="scripted", input="#slow:1500 first", previous_response_id=root.id) as st:
            for event in st:
                if event.type == "response.created":
                    started.set()  # its turn holds the chain's session now
            first.append(st.get_final_response())

    worker = threading.Thread(target=slow_branch)
    worker.start()
    assert started.wait(30)
    second = client.responses.create(model="scripted", input="second", previous_response_id=root.id)
    worker.join(30)
    # Whole seconds: the first took over one, so a second that ran beside it would start before it ended.
    assert first[0].completed_at is not None and second.created_at >= first[0].completed_at
    assert second.output_text == "You said: second"


def test_tool_events_only_when_asked(server):
    body = {"input": "#tool:list_dir {} look around"}
    plain = sse_events(stream_raw(server, body).content)
    assert not [e for e in plain if e["type"].startswith("nanobot.")]
    raw = stream_raw(server, {**body, "stream_options": {"include_tool_events": True}}).content
    events = sse_events(raw, extra=("nanobot.tool",))
    tools = [e for e in events if e["type"] == "nanobot.tool"]
    assert [(t["name"], t["status"]) for t in tools] == [("list_dir", "started"), ("list_dir", "finished")]
    assert tools[1]["ok"] is True and tools[0]["id"] == tools[1]["id"]
    assert events[-1]["type"] == "response.completed"
    # The SDK's own stream helper passes the extra event through.
    with sdk(server).responses.stream(
        model="scripted", input=body["input"], extra_body={"stream_options": {"include_tool_events": True}}
    ) as stream:
        kinds = [e.type for e in stream]
        assert stream.get_final_response().status == "completed"
    assert "nanobot.tool" in kinds
