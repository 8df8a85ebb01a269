"""Each pipeline stage in process, on real services (SQLite file, extraction pool, echo provider).

The real-process tests drive the same paths over HTTP; these name the stage
that decides, and run in milliseconds.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from builders import make_docx, make_pdf
from common import CHAT_MODEL, data_url, free_port
from fault_helpers import png_1x1, sse_events
from servers import upstream_config

from nanobot.errors import ApiError, ClientDisconnected, error_body
from nanobot.pipeline import Pipeline
from nanobot.services import Services
from nanobot.testing.context import make_ctx, recorded, running_services
from stages.decode import stage as decode
from stages.encode import stage as encode
from stages.extract_files import stage as extract_files
from stages.resolve_session import stage as resolve_session
from stages.run_agent import stage as run_agent
from stages.validate import stage as validate


@pytest.fixture(scope="module")
def services(runner: asyncio.Runner, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    workspace = tmp_path_factory.mktemp("stages")
    config = {"api": {"maxFileBytes": 64 * 1024}}
    context = running_services(workspace, config)
    started = runner.run(context.__aenter__())
    yield started
    runner.run(context.__aexit__(None, None, None))


def user(content: Any, **body: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **body}


def fails(runner: asyncio.Runner, call: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        runner.run(call)
    return caught.value


async def through(services: Services, body: dict[str, Any], *stages: Any, **kwargs: Any) -> Any:
    ctx = make_ctx(services, body, **kwargs)
    for stage in stages:
        await stage(ctx)
    return ctx


# --- decode --------------------------------------------------------------------------------------


def test_decode_parses_a_json_object(runner, services):
    ctx = runner.run(through(services, user("hi"), decode))
    assert ctx.payload == user("hi")
    assert ctx.body == b""  # the raw bytes are let go once parsed


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "invalid_json"),
        (b"[1, 2]", "application/json", 400, "invalid_json"),
        (b"[" * 20_000 + b"]" * 20_000, "application/json", 400, "invalid_json"),
        (b"message=hi", "application/x-www-form-urlencoded", 415, "unsupported_content_type"),
        (b"hi", "text/plain", 415, "unsupported_content_type"),
        (b"{}", "", 415, "unsupported_content_type"),
    ],
)
def test_decode_refuses(runner, services, body, content_type, status, code):
    err = fails(runner, decode(make_ctx(services, body, content_type=content_type)))
    assert (err.status, err.code) == (status, code)


def test_decode_reads_a_multipart_body_built_by_hand(runner, services):
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="message"\r\n\r\nhello form\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\nfile words\r\n--{boundary}--\r\n"
    ).encode()
    ctx = make_ctx(services, body, content_type=f"multipart/form-data; boundary={boundary}")
    runner.run(decode(ctx))
    assert ctx.form is not None and ctx.form["message"] == ["hello form"]
    assert [f.filename for f in ctx.files] == ["a.txt"]


# --- validate ------------------------------------------------------------------------------------


def test_validate_fills_the_turn(runner, services):
    body = user("hello", model=CHAT_MODEL, stream=True, session_id="s-1", stream_options={"include_usage": True})
    ctx = runner.run(through(services, body, decode, validate))
    assert (ctx.text, ctx.model, ctx.stream, ctx.include_usage, ctx.session_id) == (
        "hello",
        CHAT_MODEL,
        True,
        True,
        "s-1",
    )


def test_validate_takes_the_session_header_unless_the_body_names_one(runner, services):
    ctx = runner.run(through(services, user("x"), decode, validate, headers={"X-Session-Id": "from-header"}))
    assert ctx.session_id == "from-header"
    ctx = runner.run(
        through(services, user("x", session_id="body"), decode, validate, headers={"X-Session-Id": "from-header"})
    )
    assert ctx.session_id == "body"


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (user("x", model="gpt-other"), "model", "model_not_found"),
        (user("x", model=3), "model", None),
        (user("x", session_id="a\x07b"), "session_id", "invalid_session_id"),
        (user("x", session_id="s" * 257), "session_id", "invalid_session_id"),
        (user("x", stream="yes"), "stream", None),
        (user("x", stream_options=[]), "stream_options", None),
        (user("   "), "messages[0].content", None),
        (user(42), "messages[0].content", None),
        (user([{"type": "audio"}]), "messages[0].content[0].type", None),
        (user([{"type": "text", "text": 5}]), "messages[0].content[0].text", None),
        (
            user([{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]),
            "messages[0].content[0].image_url.url",
            "remote_url_not_supported",
        ),
        (user([{"type": "file", "file": {"file_id": "f-1"}}]), "messages[0].content[0].file.file_data", None),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "developer", "content": "late"}]},
            "messages[1]",
            "system_message_after_user",
        ),
    ],
)
def test_validate_names_the_offending_field(runner, services, body, param, code):
    ctx = make_ctx(services, body)
    runner.run(decode(ctx))
    err = fails(runner, validate(ctx))
    assert (err.status, err.param, err.code) == (400, param, code)


def test_validate_checks_the_session_header_even_when_the_body_wins(runner, services):
    ctx = make_ctx(services, user("x", session_id="ok"), headers={"X-Session-Id": "bad\x01"})
    runner.run(decode(ctx))
    err = fails(runner, validate(ctx))
    assert (err.param, err.code) == ("X-Session-Id", "invalid_session_id")


# --- extract_files -------------------------------------------------------------------------------


def file_part(url: str, name: str | None = None) -> dict[str, Any]:
    spec = {"file_data": url} | ({"filename": name} if name else {})
    return {"type": "file", "file": spec}


def test_extract_files_reads_documents_and_images(runner, services):
    body = user(
        [
            {"type": "text", "text": "look"},
            file_part(data_url(make_docx("DOCXMARK"), "application/octet-stream"), "report.docx"),
            {"type": "image_url", "image_url": {"url": data_url(png_1x1(), "image/png")}},
        ]
    )
    ctx = runner.run(through(services, body, decode, validate, extract_files))
    kinds = [(a.name, a.kind) for a in ctx.attachments]
    assert kinds == [("report.docx", "docx"), ("image", "image")]
    assert "DOCXMARK" in (ctx.attachments[0].text or "")
    assert (ctx.attachments[1].data_url or "").startswith("data:image/png;base64,")


@pytest.mark.parametrize(
    ("url", "status", "code"),
    [
        ("data:text/plain;base64,!!!!", 400, "invalid_base64"),
        (data_url(b"\x00\x01\x02\xff" * 64, "application/octet-stream"), 415, "unsupported_file_type"),
        (data_url(b"a" * (64 * 1024 + 1), "text/plain"), 413, "file_too_large"),
    ],
)
def test_extract_files_refuses(runner, services, url, status, code):
    ctx = runner.run(through(services, user([file_part(url, "f.bin")]), decode, validate))
    err = fails(runner, extract_files(ctx))
    assert (err.status, err.code, err.param) == (status, code, "messages[0].content[0].file.file_data")


def test_a_failed_request_takes_its_saved_uploads_with_it(runner, services):
    ok = file_part(data_url(b"kept only while the request lives", "text/plain"), "a.txt")
    bad = file_part("data:text/plain;base64,!!!!", "b.txt")

    async def run() -> tuple[list[str], bool]:
        ctx = make_ctx(services, user([ok, bad]))
        try:
            async with ctx.exit_stack:
                for stage in (decode, validate, extract_files):
                    await stage(ctx)
        except ApiError:
            pass
        paths = [a.path for a in ctx.attachments if a.path]
        return paths, any(os.path.exists(p) for p in paths)

    paths, left = runner.run(run())
    assert paths and not left


# --- resolve_session, run_agent, encode ----------------------------------------------------------


def test_resolve_session_orders_turns_and_reads_the_history(runner, services):
    pipeline = Pipeline.from_names(services.config.pipeline.stages)

    async def turn(text: str) -> Any:
        ctx = make_ctx(services, user(text, session_id="stage-hist"))
        async with ctx.exit_stack:
            await pipeline(ctx)
        return ctx

    runner.run(turn("first words"))
    ctx = runner.run(through(services, user("second", session_id="stage-hist"), decode, validate, resolve_session))
    runner.run(ctx.exit_stack.aclose())
    assert ctx.session_key == "api:stage-hist"
    assert [m["content"] for m in ctx.history] == ["first words", "first words"]


def test_the_whole_pipeline_answers_json(runner, services):
    async def run() -> Any:
        ctx = make_ctx(services, user("echo me"))
        async with ctx.exit_stack:
            await Pipeline.from_names(services.config.pipeline.stages)(ctx)
        return ctx

    ctx = runner.run(run())
    response = recorded(ctx)
    assert response.headers["Content-Type"] == "application/json"
    doc = response.json()
    assert doc["object"] == "chat.completion"
    assert doc["choices"][0]["message"]["content"] == "echo me"


def chunks(raw: bytes) -> list[Any]:
    return [orjson.loads(e["data"]) for e in sse_events(raw) if e["data"] != "[DONE]"]


def test_encode_streams_sse_frames_ending_with_done(runner, services):
    async def run() -> Any:
        ctx = make_ctx(services, user("stream these words", stream=True))
        async with ctx.exit_stack:
            for stage in (decode, validate, extract_files, resolve_session, run_agent, encode):
                await stage(ctx)
        return ctx

    ctx = runner.run(run())
    response = recorded(ctx)
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert ctx.headers_sent and response.flushes == 1
    raw = response.body()
    assert raw.endswith(b"data: [DONE]\n\n")
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in chunks(raw) if e["choices"])
    assert text == "stream these words"


def test_encode_stops_when_the_client_is_gone(runner, services):
    async def run() -> Any:
        ctx = make_ctx(services, user("one two three four five six", stream=True))
        async with ctx.exit_stack:
            for stage in (decode, validate, extract_files, resolve_session, run_agent):
                await stage(ctx)
            recorded(ctx).gone = True
            await encode(ctx)

    with pytest.raises(ClientDisconnected):
        runner.run(run())


# --- what the client reads -----------------------------------------------------------------------


def test_a_stage_error_is_an_openai_error_document(runner, services):
    ctx = runner.run(through(services, user("x", model="gpt-4o"), decode))
    doc = error_body(fails(runner, validate(ctx)))
    assert set(doc) == {"error"} and set(doc["error"]) == {"message", "type", "param", "code"}
    err = doc["error"]
    assert (err["type"], err["param"], err["code"]) == ("invalid_request_error", "model", "model_not_found")
    assert "gpt-4o" in err["message"] and "Traceback" not in err["message"]


FILE_DATA = "messages[0].content[1].file.file_data"
CORRUPT_PDF = make_pdf(["x"])[:60] + b"garbage" * 50


@pytest.mark.parametrize(
    ("part", "status", "code", "param", "named"),
    [
        (
            file_part(data_url(b"a" * (64 * 1024 + 1), "text/plain"), "big.txt"),
            413,
            "file_too_large",
            FILE_DATA,
            "big.txt",
        ),
        (
            {"type": "image_url", "image_url": {"url": data_url(make_pdf(["x"]), "image/png")}},
            415,
            "unsupported_file_type",
            "messages[0].content[1].image_url.url",
            "application/pdf",
        ),
        (
            file_part(data_url(make_pdf(["x"])[:60] + b"garbage" * 50), "broken.pdf"),
            422,
            "unreadable_file",
            None,
            "broken.pdf",
        ),
        (file_part(data_url(make_docx("m")[:-200]), "cut.docx"), 422, "unreadable_file", None, "cut.docx"),
    ],
)
def test_extract_files_says_which_file_and_why(runner, services, part, status, code, param, named):
    ctx = runner.run(through(services, user([{"type": "text", "text": "x"}, part]), decode, validate))
    err = fails(runner, extract_files(ctx))
    assert (err.status, err.code, err.param) == (status, code, param)
    assert named in err.message, err.message


@pytest.fixture(scope="module")
def unreachable(runner: asyncio.Runner, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """Services whose provider points at a port nothing listens on."""
    context = running_services(
        tmp_path_factory.mktemp("unreachable"), upstream_config(f"http://127.0.0.1:{free_port()}")
    )
    started = runner.run(context.__aenter__())
    yield started
    runner.run(context.__aexit__(None, None, None))


@pytest.mark.parametrize("stream", [False, True])
def test_an_unreachable_provider_is_a_502_from_encode(runner, unreachable, stream):
    async def run() -> Any:
        ctx = make_ctx(unreachable, user("hello?", stream=stream))
        async with ctx.exit_stack:
            for stage in (decode, validate, extract_files, resolve_session, run_agent):
                await stage(ctx)
            with pytest.raises(ApiError) as caught:
                await encode(ctx)
        return ctx, caught.value

    t0 = time.monotonic()
    ctx, err = runner.run(run())
    assert (err.status, err.type) == (502, "upstream_error")
    assert "unreachable" in err.message and time.monotonic() - t0 < 5
    # Streaming: the headers went out before the turn began, so the handler ends the stream with an error frame.
    assert ctx.headers_sent is stream
