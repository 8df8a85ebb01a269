"""The bytes a load generator client sends: built once per client, sent many times.

Hand-written HTTP/1.1 requests (keep-alive, exact Content-Length): JSON chat
completions or Responses API turns (streamed or not, each client with its own `session_id`), a
multipart upload with one file, or a plain GET for the /health probe.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

import orjson


class RequestSpec(Protocol):
    """The fields of `bench.loadgen.Spec` that shape a request."""

    kind: str
    path: str
    stream: bool
    model: str | None
    text: str
    session_prefix: str
    send_session: bool
    api_key: str | None
    file: str | None
    tools: list[dict[str, Any]] | None
    api: str


def build_request(spec: RequestSpec, host: str, index: int) -> tuple[bytes, bytes]:
    """The head and body one client sends each time (its own session id)."""
    session = f"{spec.session_prefix}c{index}"
    auth = f"Authorization: Bearer {spec.api_key}\r\n" if spec.api_key else ""
    if spec.kind == "probe":
        return f"GET {spec.path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n".encode(), b""
    if spec.kind == "upload":
        assert spec.file, "an upload spec needs `file`"
        with open(spec.file, "rb") as fh:
            data = fh.read()
        boundary = uuid.uuid4().hex
        parts = [("message", spec.text)]
        if spec.send_session:
            parts.append(("session_id", session))
        if spec.model:
            parts.append(("model", spec.model))
        pre = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in parts
        )
        pre += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="bench.pdf"\r\n'
            "Content-Type: application/pdf\r\n\r\n"
        ).encode()
        body = pre + data + f"\r\n--{boundary}--\r\n".encode()
        ctype = f"multipart/form-data; boundary={boundary}"
    else:
        payload: dict[str, Any]
        if spec.api == "responses":  # DESIGN section 11: `input` text, no stream_options
            payload = {"input": f"{spec.text} {index}"}
        else:
            payload = {"messages": [{"role": "user", "content": f"{spec.text} {index}"}]}
        if spec.model:
            payload["model"] = spec.model
        if spec.send_session:
            payload["session_id"] = session
        if spec.tools:
            payload["tools"] = spec.tools
        if spec.stream:
            payload["stream"] = True
            if spec.api != "responses":
                payload["stream_options"] = {"include_usage": True}
        body = orjson.dumps(payload)
        ctype = "application/json"
    head = (
        f"POST {spec.path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body
