"""GET /metrics: Prometheus text, behind the key, counting what happened."""

from __future__ import annotations

import re
import uuid

import requests
from builders import make_docx
from common import CHAT
from servers import merge, upstream_config


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-z_:]+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = ",".join(sorted((m.group(2) or "").split(","))) if m.group(2) else ""
        if got == want:
            return float(m.group(3))
    return 0.0


def test_metrics(make_server, upstream):
    server = make_server(
        merge(
            upstream_config(upstream.url),
            {"api": {"apiKey": "mk"}, "channels": {"webhook": {"enabled": False, "allowedChatIds": ["1"]}}},
        )
    )
    auth = {"Authorization": "Bearer mk"}
    assert requests.get(server.url + "/metrics").status_code == 401
    body = {"messages": [{"role": "user", "content": "hello metrics"}], "session_id": uuid.uuid4().hex}
    assert requests.post(server.url + CHAT, json=body, headers=auth).status_code == 200
    assert requests.post(server.url + CHAT, json={**body, "stream": True}, headers=auth).status_code == 200
    r = requests.post(
        server.url + CHAT, json={**body, "messages": [{"role": "user", "content": "#status:500"}]}, headers=auth
    )
    assert r.status_code == 502
    requests.post(
        server.url + CHAT, headers=auth, data={"message": "doc"}, files={"files": ("m.docx", make_docx("zz"))}
    )
    tool = '#tool:message {"content":"x","channel":"webhook","chat_id":"1"} go'
    requests.post(server.url + CHAT, json={**body, "messages": [{"role": "user", "content": tool}]}, headers=auth)
    r = requests.get(server.url + "/metrics", headers=auth)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    text = r.text
    assert sample(text, "nanobot_http_requests_total", route="/v1/chat/completions", status="200") == 4
    assert sample(text, "nanobot_http_requests_total", route="/v1/chat/completions", status="502") == 1
    assert sample(text, "nanobot_upstream_errors_total", kind="upstream_status") == 1
    assert sample(text, "nanobot_streamed_deltas_total") >= 3
    # "You said: hello metrics": the one stream's completion tokens, as the upstream counted them.
    assert sample(text, "nanobot_completion_tokens_total") == 4
    assert sample(text, "nanobot_time_to_first_token_seconds_count") == 1
    assert sample(text, "nanobot_extraction_seconds_count", kind="docx") == 1
    assert sample(text, "nanobot_outbox_rows", channel="webhook", state="undeliverable") == 1
    assert sample(text, "nanobot_requests_in_flight") == 0
    assert sample(text, "nanobot_open_streams") == 0
    assert sample(text, "nanobot_asyncio_tasks") >= 1
    assert sample(text, "nanobot_request_seconds_count", route="/v1/chat/completions") == 5


def test_channels_the_model_invents_share_one_series(make_server, upstream):
    """A made-up ``message`` channel stores no row, so it never becomes a series of its own."""
    server = make_server(merge(upstream_config(upstream.url), {"channels": {"webhook": {"allowedChatIds": ["1"]}}}))
    calls = " ".join(
        f'#tool:message {{"content":"x","channel":"made-up-{uuid.uuid4().hex}","chat_id":"1"}}' for _ in range(30)
    )
    calls += ' #tool:message {"content":"x","channel":"webhook","chat_id":"1"}'
    body = {"messages": [{"role": "user", "content": calls}], "session_id": uuid.uuid4().hex}
    assert requests.post(server.url + CHAT, json=body, timeout=30).status_code == 200
    text = requests.get(server.url + "/metrics", timeout=10).text
    assert "made-up" not in text
    assert sample(text, "nanobot_outbox_rows", channel="webhook", state="undeliverable") == 1
    series = [line for line in text.splitlines() if line.startswith("nanobot_outbox_rows{")]
    assert len(series) == 1, series
