"""Clients people already use: the Node SDK, LangChain, the Python SDK's raw responses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import openai
import pytest

NODE_DIR = Path(__file__).parent / "node"


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_node_openai_sdk(agent_server, upstream):
    if not (NODE_DIR / "node_modules" / "openai").exists():
        pytest.skip("run `npm ci --prefix tests/node` first (.ci/run does)")
    sid = uuid.uuid4().hex
    marker = "NODE" + uuid.uuid4().hex[:6]
    env = {**os.environ, "NANOBOT_MODEL": "scripted", "NANOBOT_FILE_TEXT": f"attached {marker}"}
    p = subprocess.run(["node", "client.mjs", agent_server.base_url, sid], cwd=NODE_DIR, env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["plain"] == "You said: hello from node"
    assert out["streamed"] == "You said: stream from node" and out["chunks"] == 5
    assert out["usage"]["completion_tokens"] == 5
    assert out["uploadStatus"] == 200 and marker in out["upload"]
    # session_id passed as an extra body field reached the server: one session, three turns.
    users = [m["content"] for m in upstream.requests()[-1]["body"]["messages"] if m["role"] == "user"]
    assert users[:2] == ["hello from node", "stream from node"]


def test_langchain_chat_openai(agent_server, upstream):
    from langchain_openai import ChatOpenAI

    sid = uuid.uuid4().hex
    llm = ChatOpenAI(base_url=agent_server.base_url, api_key="unused", model="scripted", max_retries=0,
                     extra_body={"session_id": sid})
    msg = llm.invoke("hello from langchain")
    assert msg.content == "You said: hello from langchain"
    pieces = [c.content for c in llm.stream("stream from langchain")]
    assert "".join(pieces) == "You said: stream from langchain" and len([p for p in pieces if p]) >= 4
    users = [m["content"] for m in upstream.requests()[-1]["body"]["messages"] if m["role"] == "user"]
    assert users == ["hello from langchain", "stream from langchain"]


def test_python_sdk_request_id(agent_server):
    c = openai.OpenAI(base_url=agent_server.base_url, api_key="x", max_retries=0)
    raw = c.chat.completions.with_raw_response.create(model="scripted",
                                                       messages=[{"role": "user", "content": "rid"}])
    assert raw.request_id and len(raw.request_id) == 32
    assert raw.parse().choices[0].message.content == "You said: rid"
    raw = c.chat.completions.with_raw_response.create(model="scripted", messages=[{"role": "user", "content": "rid"}],
                                                       extra_headers={"X-Request-ID": "my-trace-1"})
    assert raw.request_id == "my-trace-1"
