"""Fuzzing, bounded: schemathesis against /openapi.json, hypothesis on decode/validate and files.

Every run is bounded in examples and time, talks only to 127.0.0.1, and ends
by checking the server still answers /health and logged no traceback.
The issues fuzzing found in the server (wrong methods with a body, 405
without Allow, GET bodies parsed as forms, a nameless files part) are fixed
and pinned by the tests at the bottom.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import subprocess
import sys
import uuid
from types import SimpleNamespace

import orjson
import pytest
import requests
from common import CHAT
from fault_helpers import OpenApiDoc, raw_http, status_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import TESTS_DIR, ServerProcess
from tornado.httputil import HTTPHeaders
from urllib3 import encode_multipart_formdata

from nanobot.config import Config
from nanobot.context import RequestContext
from nanobot.errors import ApiError
from nanobot.files.detect import detect
from nanobot.files.incoming import decode_base64
from nanobot.server.openapi import document
from stages.decode import Decode
from stages.validate import Validate

KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SEED = int(os.environ.get("NANOBOT_FUZZ_SEED", "20261126"))
BAD_LOG_LINES = ("Traceback", "Uncaught exception", "Unhandled error")


def assert_healthy(server: ServerProcess) -> None:
    assert server.proc.poll() is None, "the server died"
    assert requests.get(server.url + "/health", timeout=5).json() == {"status": "ok"}
    log = server.stderr_text()
    assert not any(bad in log for bad in BAD_LOG_LINES), log[-4000:]


@pytest.fixture(scope="module")
def fuzz_server():
    server = ServerProcess({"api": {"apiKey": KEY, "maxFileBytes": 65536}})
    yield server
    server.stop()


# ------------------------------------------------------------------------------------ schemathesis

SCHEMATHESIS_CONFIG = """
# The bytes of a file decide its type, which no schema can say: a schema-valid upload may be 415/422.
# 403 is the preflight's answer to an Origin that is not allowed.
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "403", "415", "422"]

# A made-up previous_response_id or response id names nothing stored: 400 previous_response_not_found, 404.
[[operations]]
include-path = "/v1/responses"
generation.max-examples = 30
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "403", "415", "422"]

[[operations]]
include-path-regex = "^/v1/responses/"
generation.max-examples = 20
checks.positive_data_acceptance.expected-statuses = ["2xx", "403", "404"]

"""
# A CORS preflight is answered whether or not the resource exists (browsers send it before the DELETE
# too), and schemathesis checks the preflight that follows a DELETE for a 404 whatever an operation's
# settings say; GET after DELETE is a 404 in test_responses_api.py instead.
EXCLUDED_CHECKS = "use_after_free"


def test_schemathesis_finds_nothing(fuzz_server, tmp_path):
    """Every documented operation, positive and negative data, every schemathesis check."""
    (tmp_path / "schemathesis.toml").write_text(SCHEMATHESIS_CONFIG)
    env = dict(
        os.environ,
        NO_COLOR="1",
        PYTHONPATH=os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
        SCHEMATHESIS_HOOKS="fuzz_hooks",  # the rules a schema cannot state
    )
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(tmp_path / "schemathesis.toml"),
        "run",
        fuzz_server.url + "/openapi.json",
        "-H",
        f"Authorization: Bearer {KEY}",
        "--checks",
        "all",
        "--exclude-checks",
        EXCLUDED_CHECKS,
        "--max-examples",
        "60",
        "--seed",
        str(SEED),
        "--request-timeout",
        "10",
        "--no-color",
        "--workers",
        "1",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    report = out.stdout[-12000:] + out.stderr[-2000:]
    assert out.returncode == 0, report
    assert "No issues found" in out.stdout, report
    assert_healthy(fuzz_server)


# ------------------------------------------------------------------------- decode/validate, in process


def _context(config: Config, content_type: str | None, body: bytes) -> RequestContext:
    headers = HTTPHeaders()
    if content_type is not None:
        headers["Content-Type"] = content_type
    values: dict = dict(  # a SimpleNamespace stands in for Services
        services=SimpleNamespace(
            config=config, agent=SimpleNamespace(tools=SimpleNamespace(names=["read_file", "message"]))
        ),
        method="POST",
        path=CHAT,
        headers=headers,
        body=body,
        response=None,
        request_id="fuzz",
        started=0.0,
        deadline=0.0,
    )
    names = {f.name for f in dataclasses.fields(RequestContext)}
    return RequestContext(**{k: v for k, v in values.items() if k in names})


def run_front_stages(config: Config, content_type: str | None, body: bytes) -> tuple[RequestContext, ApiError | None]:
    """decode + validate + the base64 step of extract_files; an ApiError is the request's outcome."""
    ctx = _context(config, content_type, body)

    async def go() -> None:
        await Decode()(ctx)
        await Validate()(ctx)
        for f in ctx.files:
            if f.base64 is not None and not decode_base64(f.base64, f.param):
                raise ApiError("empty", status=400)
            if f.chunks is not None and not any(f.chunks):
                raise ApiError("empty", status=400)

    try:
        asyncio.run(go())
    except ApiError as err:
        return ctx, err
    return ctx, None


CONFIG = Config()
DOC = OpenApiDoc(document(CONFIG))
# NANOBOT_FUZZ_RANDOM=1 explores new examples on each run (CI stays reproducible without it).
RANDOM = bool(os.environ.get("NANOBOT_FUZZ_RANDOM"))
FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=not RANDOM,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
texts = st.sampled_from(["hi", " ", "", "\n\t", "a\x00b", "\u00a0", "x" * 3]) | st.text(max_size=12)
b64 = st.sampled_from(["aGk=", "", "@@", "aGk", "a Gk=", "aG\nk=", "AAAA" * 3]) | st.text("ab+/=\n ", max_size=8)
data_urls = (
    st.builds(
        lambda scheme, mime, marker, payload: f"{scheme}:{mime}{marker},{payload}",
        st.sampled_from(["data", "DATA", "http", "file", "ftp"]),
        st.sampled_from(["", "image/png", "text/plain;x=1"]),
        st.sampled_from([";base64", ";BASE64", "", ";base6"]),
        b64,
    )
    | texts
)
parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": texts}),
    st.fixed_dictionaries(
        {"type": st.just("image_url"), "image_url": data_urls | st.fixed_dictionaries({"url": data_urls}) | json_values}
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("file"),
            "file": st.fixed_dictionaries(
                {"file_data": data_urls}, optional={"filename": st.none() | texts | st.integers()}
            )
            | json_values,
        }
    ),
    json_values,
)
# Mostly well-formed, so that both outcomes are common (repeating a branch of one_of weighs it).
good_b64 = st.binary(min_size=1, max_size=12).map(lambda b: __import__("base64").b64encode(b).decode())
data_urls = st.one_of(data_urls, st.builds("data:text/plain;base64,{}".format, good_b64))
content = st.one_of(texts, texts, st.lists(parts, max_size=3), st.lists(parts, min_size=1, max_size=2), json_values)
messages = st.fixed_dictionaries(
    {"role": st.sampled_from(["user"] * 6 + ["assistant", "system", 3])},
    optional={"name": texts},
).flatmap(
    lambda m: st.one_of(
        st.just(m), st.builds(lambda c: {**m, "content": c}, content), st.builds(lambda c: {**m, "content": c}, content)
    )
)
session_ids = (
    st.none() | st.sampled_from(["", "s", "x" * 256, "x" * 257, "a\x1fb", "a\x7f", "\u2028"]) | st.text(max_size=10)
)
optional_fields = dict(
    model=st.sampled_from([None, "", "echo", "echo", "gpt-4o", 5]),
    session_id=session_ids | json_values,
    stream=st.sampled_from([None, True, False, "true", 1, 0]),
    stream_options=st.none() | st.fixed_dictionaries({}, optional={"include_usage": json_values}) | json_values,
    temperature=json_values,
)
# One user message with some content: the shape most requests have.
near_valid = st.builds(
    lambda c, extra: {"messages": [{"role": "user", "content": c}], **extra},
    content,
    st.fixed_dictionaries({}, optional=optional_fields),
)
requests_bodies = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(messages, min_size=1, max_size=1), st.lists(messages, max_size=2), json_values)},
    optional={**optional_fields, "tools": json_values},
)


@FUZZ
@given(body=st.one_of(near_valid, near_valid, requests_bodies, json_values))
def test_validate_agrees_with_the_document(body):
    """decode+validate accept a JSON body exactly when the OpenAPI document calls it valid."""

    raw = orjson.dumps(body)
    ctx, err = run_front_stages(CONFIG, "application/json", raw)
    problems = DOC.request_body_errors("post", CHAT, "application/json", body)
    if err is None:
        assert problems == [], f"accepted, but the document says: {problems}"
        assert ctx.text.strip() and ctx.model == "echo"
    else:
        assert err.status == 400 and err.type == "invalid_request_error", err
        assert problems, f"refused ({err.message}, param {err.param}), but the document calls it valid"


@FUZZ
@given(
    body=st.binary(max_size=300),
    media=st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "multipart/form-data",
            "multipart/form-data; boundary=b",
            'multipart/form-data; boundary="b"',
            "text/plain",
            "",
            None,
            "APPLICATION/JSON",
        ]
    ),
)
def test_arbitrary_bytes_never_escape_as_other_errors(body, media):
    """Any bytes with any Content-Type: accepted, or a 400/415, never another exception."""
    _, err = run_front_stages(CONFIG, media, body)
    assert err is None or err.status in (400, 415), err


boundaries = st.text("abcXYZ0123-_'()+,./:=?", min_size=1, max_size=30)
field_names = st.sampled_from(
    ["message", "session_id", "model", "stream", "files", "file", "files[]", "upload", "x"]
) | st.text(max_size=6)
field_values = st.text(max_size=20) | st.binary(max_size=20)


@FUZZ
@given(
    boundary=boundaries,
    fields=st.lists(st.tuples(field_names, field_values), max_size=5),
    files=st.lists(st.tuples(field_names, st.text(max_size=10), st.binary(max_size=40)), max_size=3),
    cut=st.integers(min_value=0, max_value=400) | st.none(),
)
def test_arbitrary_multipart_bodies(boundary, fields, files, cut):
    """Well-formed and cut-off multipart bodies with any names and bytes: accepted or 400/413/415."""
    parts = [(name, value) for name, value in fields] + [(name, (fname, data)) for name, fname, data in files]
    try:
        body, content_type = encode_multipart_formdata(parts, boundary=boundary)
    except (TypeError, ValueError, UnicodeError):
        return
    if cut is not None:
        body = body[:cut]
    ctx, err = run_front_stages(CONFIG, content_type, body)
    if err is None:
        assert ctx.text.strip()
    else:
        assert err.status in (400, 413, 415), err


@settings(max_examples=400, deadline=None, database=None, derandomize=not RANDOM)
@given(
    data=st.binary(max_size=600)
    | st.builds(
        lambda head, tail: head + tail,
        st.sampled_from(
            [
                b"%PDF-1.4\n",
                b"PK\x03\x04",
                b"\x89PNG\r\n\x1a\n",
                b"\xff\xd8\xff",
                b"GIF89a",
                b"RIFF\x00\x00\x00\x00WEBP",
                b"\xef\xbb\xbf",
                b"\x00",
            ]
        ),
        st.binary(max_size=300),
    )
)
def test_detect_any_bytes(data):
    """The type detector takes any bytes: a supported type or a 415, nothing else."""
    try:
        found = detect(data)
    except ApiError as err:
        assert err.status == 415
    else:
        assert found.kind in {"image", "pdf", "docx", "xlsx", "pptx", "text"}


file_bytes = st.binary(min_size=1, max_size=2048) | st.builds(
    lambda head, tail: head + tail,
    st.sampled_from(
        [
            b"%PDF-1.7\n",
            b"PK\x03\x04\x14\x00\x00\x00\x08\x00",
            b"\x89PNG\r\n\x1a\n",
            b"GIF87a",
            b"\xff\xd8\xff\xe0",
            b"\xef\xbb\xbf",
            b'{"json": ',
            b"\xd0\xcf\x11\xe0",
        ]
    ),
    st.binary(max_size=2048),
)


@settings(max_examples=40, deadline=None, database=None, derandomize=not RANDOM)
@given(data=file_bytes, as_image=st.booleans())
def test_arbitrary_bytes_as_files_through_the_server(fuzz_server, data, as_image):
    """Any bytes uploaded as a file (multipart) or as an image part: 200, 413, 415 or 422, never 500."""
    if as_image:
        body = {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is it?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64," + base64.b64encode(data).decode()},
                        },
                    ],
                }
            ],
            "session_id": uuid.uuid4().hex,
        }
        r = requests.post(fuzz_server.url + CHAT, json=body, headers=AUTH, timeout=30)
    else:
        r = requests.post(
            fuzz_server.url + CHAT,
            headers=AUTH,
            timeout=30,
            files=[("message", (None, "what is it?")), ("files", ("upload.bin", data))],
        )
    assert r.status_code in (200, 413, 415, 422), r.text[:300]
    if r.status_code != 200:
        assert r.json()["error"]["type"] in ("request_too_large", "unsupported_media_type", "unprocessable_file")


def test_server_healthy_after_fuzzing(fuzz_server):
    """Runs after the fuzzing above (file order): the server still answers and logged no traceback."""
    assert_healthy(fuzz_server)


# ------------------------------------------------------------------------ issues found by fuzzing


def test_405_carries_allow_header(fuzz_server):
    for method, path, allowed in (
        ("PUT", "/v1/models", {"GET", "OPTIONS"}),
        ("GET", CHAT, {"POST", "OPTIONS"}),
        ("TRACE", "/health", {"GET", "OPTIONS"}),
    ):
        r = requests.request(method, fuzz_server.url + path, headers=AUTH, timeout=10)
        assert r.status_code == 405
        assert {m.strip() for m in r.headers.get("Allow", "").split(",")} >= allowed, (method, path)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_wrong_method_with_body_is_405(fuzz_server, method):
    head = (
        f"{method} {CHAT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
    ).encode()
    raw = raw_http(fuzz_server.port, head, b"{}", timeout=5)
    assert status_of(raw) == 405, raw[:200]
    assert b'"invalid_request_error"' in raw


def test_files_text_field_is_refused(fuzz_server):
    r = requests.post(
        fuzz_server.url + CHAT,
        headers=AUTH,
        timeout=10,
        files=[("message", (None, "summarise")), ("files", (None, "report.pdf"))],
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "files"


@pytest.mark.parametrize("path", ["/health", "/v1/models"])
def test_get_routes_ignore_request_bodies(fuzz_server, path):
    r = requests.get(fuzz_server.url + path, headers={**AUTH, "Content-Type": "multipart/form-data"}, timeout=10)
    assert r.status_code == 200, r.text
