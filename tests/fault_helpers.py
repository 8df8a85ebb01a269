"""Helpers for the OpenAPI, fuzz, fault and abuse tests.

- :class:`OpenApiDoc` checks live responses (and request bodies) against the
  server's OpenAPI document with ``jsonschema``.
- Raw-socket, ``/proc`` and SQLite helpers look at a server process from the
  outside: its connections, its memory, its database file.
"""

from __future__ import annotations

import socket
import sqlite3
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

DOC_URI = "urn:nanobot:openapi"


# --------------------------------------------------------------------------------------- waiting


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# ------------------------------------------------------------------------------------- the document


class OpenApiDoc:
    """An OpenAPI 3.1 document, able to judge live responses and request bodies."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self._validators: dict[str, Draft202012Validator] = {}

    # -- plumbing

    def resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node and node["$ref"].startswith("#/"):
            target: Any = self.doc
            for part in node["$ref"][2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node = target
        return node

    def validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        """A validator for a schema of this document (its ``#/...`` refs resolve here)."""
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()
        if key not in self._validators:
            # Placed inside (a shallow copy of) the document, so its "#/components/..." refs resolve.
            resource = dict(self.doc)
            resource["__check"] = schema
            registry = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(resource))
            self._validators[key] = Draft202012Validator({"$ref": DOC_URI + "#/__check"}, registry=registry)
        return self._validators[key]

    def errors(self, schema: dict[str, Any], instance: Any) -> list[str]:
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}"
            for e in self.validator(schema).iter_errors(instance)
        ]

    def schema(self, name: str) -> dict[str, Any]:
        return {"$ref": "#/components/schemas/" + name}

    # -- operations

    def operation(self, method: str, path: str) -> dict[str, Any] | None:
        item = self.doc["paths"].get(path)
        return None if item is None else item.get(method.lower())

    def response_spec(self, method: str, path: str, status: int) -> tuple[dict[str, Any] | None, str]:
        """The documented response for this status, and where it was found."""
        item = self.doc["paths"].get(path)
        if item is None:
            return (
                self.resolve(self.doc["components"]["responses"]["NotFound"]) if status == 404 else None,
                "unknown route",
            )
        op = item.get(method.lower())
        if op is None:
            return (
                self.resolve(self.doc["components"]["responses"]["MethodNotAllowed"]) if status == 405 else None,
                "undocumented method",
            )
        responses = op["responses"]
        spec = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX") or responses.get("default")
        return (self.resolve(spec) if spec is not None else None), f"{method} {path}"

    def request_body_errors(self, method: str, path: str, media_type: str, instance: Any) -> list[str]:
        op = self.operation(method, path)
        assert op is not None and "requestBody" in op, (method, path)
        content = op["requestBody"]["content"]
        assert media_type in content, f"{media_type} is not a documented request type of {method} {path}"
        return self.errors(content[media_type]["schema"], instance)

    def check_response(self, method: str, path: str, response: Any) -> list[str]:
        """Everything about ``response`` (a ``requests`` response) that the document does not allow."""
        where = f"{method} {path} -> {response.status_code}"
        spec, found = self.response_spec(method, path, response.status_code)
        if spec is None:
            return [f"{where}: status not documented ({found})"]
        problems: list[str] = []
        for name, header in (spec.get("headers") or {}).items():
            header = self.resolve(header)
            value = response.headers.get(name)
            if value is None:
                if header.get("required"):
                    problems.append(f"{where}: required header {name} missing")
                continue
            problems += [f"{where}: header {name}: {e}" for e in self.errors(header["schema"], value)]
        content = spec.get("content")
        body = response.content
        if not content:
            if body:
                problems.append(f"{where}: a body where none is documented: {body[:200]!r}")
            return problems
        media = (response.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        key = next((k for k in (media, media.split("/")[0] + "/*", "*/*") if k in content), None)
        if key is None:
            return problems + [f"{where}: Content-Type {media!r} not documented (have {sorted(content)})"]
        schema = content[key].get("schema")
        if media == "application/json":
            try:
                data = orjson.loads(body)
            except orjson.JSONDecodeError:
                return problems + [f"{where}: body is not JSON: {body[:200]!r}"]
            problems += [f"{where}: {e}" for e in self.errors(schema, data)]
        elif media == "text/event-stream":
            # Each stream's frames have their own schema of the decoded payload.
            payload_schema = self.schema(STREAM_PAYLOADS[schema["$ref"].rsplit("/", 1)[1]])
            for i, event in enumerate(sse_events(body)):
                problems += [f"{where}: event {i}: {e}" for e in self.errors(schema, event)]
                payload = event["data"] if event["data"] == "[DONE]" else orjson.loads(event["data"])
                problems += [f"{where}: event {i} data: {e}" for e in self.errors(payload_schema, payload)]
        elif schema is not None and schema.get("type") == "string":
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                problems.append(f"{where}: a text body that is not UTF-8")
        return problems


# The SSE schema of a route -> the schema of one frame's decoded ``data``.
STREAM_PAYLOADS = {"ServerSentEvent": "StreamEvent", "ResponseServerSentEvent": "ResponseStreamEvent"}


def sse_events(body: bytes) -> list[dict[str, str]]:
    """Server-sent events as ``{"event", "data"}`` (comments such as ``: ping`` skipped)."""
    events = []
    for block in body.decode("utf-8").split("\n\n"):
        lines = block.split("\n")
        data = [line[5:].removeprefix(" ") for line in lines if line.startswith("data:")]
        kind = next((line[6:].removeprefix(" ") for line in lines if line.startswith("event:")), "message")
        if data:
            events.append({"event": kind, "data": "\n".join(data)})
    return events


# ------------------------------------------------------------------------------------------- files


def png_1x1() -> bytes:
    """A valid 1x1 RGB PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


# ---------------------------------------------------------------------------------------- sockets


def raw_http(port: int, head: bytes, body: bytes = b"", timeout: float = 10.0) -> bytes:
    """Send ``head`` + ``body`` on a fresh connection; return everything read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(head + body)
        except OSError:
            pass
        return recv_all(s, timeout)


def recv_all(s: socket.socket, timeout: float) -> bytes:
    s.settimeout(timeout)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def status_of(raw: bytes) -> int | None:
    if not raw.startswith(b"HTTP/1."):
        return None
    return int(raw.split(b" ", 2)[1])


# ------------------------------------------------------------------------------------------ /proc


def proc_status_kb(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def established_to(pid: int, remote_port: int) -> int:
    """How many ESTABLISHED TCP connections of process ``pid`` go to 127.0.0.1:``remote_port``."""
    inodes = _socket_inodes(pid)
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        if state == "01" and inode in inodes and int(remote.split(":")[1], 16) == remote_port:
            count += 1
    return count


# ----------------------------------------------------------------------------------------- SQLite


def read_db(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Run one query on a read-only connection (safe while a server uses the file: WAL)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def history_problems(messages: list[dict[str, Any]]) -> list[str]:
    """Why this session history is not a sequence of whole turns (empty list: it is).

    A whole turn is: user, then any number of (assistant with tool_calls, one tool result per
    call), then a final assistant message without tool calls.
    """
    problems = []
    i = 0
    n = len(messages)
    while i < n:
        if messages[i].get("role") != "user":
            problems.append(f"message {i} should start a turn (role user), is {messages[i].get('role')}")
            return problems
        i += 1
        while True:
            if i >= n:
                problems.append("the last turn has no final assistant message (half a turn)")
                return problems
            m = messages[i]
            if m.get("role") != "assistant":
                problems.append(f"message {i} should be an assistant message, is {m.get('role')}")
                return problems
            i += 1
            calls = m.get("tool_calls") or []
            if not calls:
                break
            for call in calls:
                if i >= n or messages[i].get("role") != "tool" or messages[i].get("tool_call_id") != call["id"]:
                    problems.append(f"tool call {call['id']} has no result right after it")
                    return problems
                i += 1
    return problems
