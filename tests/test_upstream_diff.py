"""The server against the stock openai SDK, on the same upstream behaviours.

Every case in ``CASES`` is one upstream behaviour, replayed byte for byte by
a raw TCP server (``nanobot.testing.replay``). It is run twice, side by side:
through the stock ``openai.AsyncOpenAI`` pointed straight at that upstream,
and through a real ``nanobot serve`` pointed at it (called with the SDK).
Both must end the same way: the same text and usage, or the same class of
error. The SDK's exception class maps to the server's error ``code``:

    APIStatusError      (the upstream answered 4xx/5xx)   upstream_status
    APITimeoutError     (no answer in time)                upstream_timeout
    APIConnectionError  (no answer, or the body cut off)   upstream_unreachable, upstream_broken_stream
    APIError            (an error event inside the stream) upstream_reported
    ValueError          (JSON that is not an answer)       upstream_malformed

A status or reported error must carry the upstream's own message, once. The
server may not take much longer than the SDK either (a turn that waits for
the upstream to close after ``[DONE]`` is a defect even if it succeeds).

All cases run at once on one server process; those that span several
requests (``turns``), which depend on which pooled connection is reused,
run one after another afterwards. A new case is one line in ``CASES``.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from servers import ServerProcess, upstream_config

from nanobot.testing.raw_replies import (
    LAST_CHUNK,
    PING,
    TEXT,
    USAGE,
    chunk,
    completion,
    error_answer,
    events,
    head,
    json_answer,
    pad_headers,
    sse,
)
from nanobot.testing.replay import CLOSE, STALE, Case, ReplayServer, Trickle

pytestmark = pytest.mark.timeout(120)

S, N = True, False  # a streamed or a whole answer
BIG = ("lorem-ipsum-" * 800 + "dolor ") * 300  # 2.9 MB, in 300 pieces of 9.6 KB
PINGS = tuple(step for _ in range(120) for step in (chunk(PING), 0.25))  # 30 s of comments
INTERIM = b"HTTP/1.1 100 Continue\r\n\r\n" + head(103, "Link: </x.css>; rel=preload", reason="Early Hints")

CASES = [
    Case("sse", S, (sse(),)),
    Case("sse_length", S, (sse(framing="length"),)),
    Case("sse_crlf", S, (sse(events(eol=b"\r\n")),)),
    Case("sse_bare_cr", S, (sse(events(eol=b"\r")),)),
    Case("sse_multiline_data", S, (sse(events(multiline=True)),)),
    Case("sse_error_null", S, (sse(events(error=None)),)),
    Case("sse_comments_and_fields", S, (sse([b": hi\n\n", *(b"event: chunk\nid: 1\n" + e for e in events())]),)),
    Case("sse_no_done", S, (sse(events(done=False)),)),
    Case("sse_error_event", S, (sse(events(fail="The model is overloaded, try later")),)),
    Case("sse_garbage", S, (sse([events()[0], b"data: {not json\n\n"]),)),
    Case("sse_cut_mid_stream", S, (sse(end=False)[:-300], CLOSE)),
    Case("done_then_late_end", S, (sse(end=False), 30.0, LAST_CHUNK)),
    Case("done_then_pings", S, (sse(end=False), *PINGS, LAST_CHUNK)),
    Case("done_then_close", S, (sse(end=False), CLOSE)),
    Case("head_80k", S, (sse(None, *pad_headers(80 * 1024)),)),
    Case("sse_gzip", S, (sse(encoding="gzip"),)),
    Case("sse_tiny_writes", S, (Trickle(sse(events(text="ünï 🙂🙂 çödé — 終わり")), 7),)),
    Case("sse_chunk_extensions_trailers", S, (sse(extension=b";a=b", trailers=("X-T: 1",)),)),
    Case("sse_interim_100_103", S, (INTERIM, 0.05, sse())),
    Case("sse_429_retry_after", S, (error_answer(429, "Rate limit reached", "Retry-After: 1"),), (sse(),)),
    Case("sse_503_retry_after", S, (error_answer(503, "Overloaded", "Retry-After: 1"),), (sse(),)),
    Case("sse_429_always", S, (error_answer(429, "Rate limit reached for requests", "Retry-After: 1"),)),
    Case("sse_400", S, (error_answer(400, "Unsupported parameter: 'temperature'"),)),
    Case("sse_307", S, (head(307, "Location: /v1/chat/completions?via=307", "Content-Length: 0"),), (sse(),)),
    Case("sse_308", S, (head(308, "Location: /v1/chat/completions?via=308", "Content-Length: 0"),), (sse(),)),
    Case("sse_multi_megabyte", S, (sse(events(text=BIG)),)),
    Case("json", N, (json_answer(),)),
    Case("json_chunked", N, (json_answer(framing="chunked"),)),
    Case("json_error_null", N, (json_answer(completion(error=None)),)),
    Case("json_gzip", N, (json_answer(encoding="gzip"),)),
    Case("json_tiny_writes", N, (Trickle(json_answer(completion(text="ünï 🙂 終わり"), framing="chunked"), 3),)),
    Case("json_head_80k", N, (json_answer(None, *pad_headers(80 * 1024)),)),
    Case("json_interim_100_103", N, (INTERIM, json_answer())),
    Case("json_429_retry_after", N, (error_answer(429, "Rate limit reached", "Retry-After: 1"),), (json_answer(),)),
    Case("json_500_text", N, (json_answer(b"upstream exploded", "X-Should-Retry: false", status=500),)),
    Case("json_multi_megabyte", N, (json_answer(completion(text=BIG)),)),
    Case("json_garbage", N, (json_answer(b"[1, 2"),)),
    # Cases spanning requests: each runs alone, as the pool's reuse decides them.
    Case("connection_close", S, (sse(None, "Connection: close"), CLOSE), turns=2),
    Case("ended_by_close", S, (sse(framing="close"), CLOSE), turns=2),
    Case("http_1_0", S, (sse(framing="close", version="1.0"), CLOSE), turns=2),
    Case("json_http_1_0", N, (json_answer(version="1.0"), CLOSE), turns=2),
    Case("idle_keepalive_close", S, (sse(), 0.1, CLOSE), turns=2),
    Case("stale_pooled_socket", S, (sse(), STALE), turns=2),
    Case("done_then_pings_next_turn", S, (sse(end=False), *PINGS[:8], LAST_CHUNK), turns=2),
]

RETRIES = 2  # the SDK's default
PROVIDER_TIMEOUT = 3.0  # seconds without a byte from the upstream
TURN_TIMEOUT = 10.0  # the server's api.timeout
SLACK = 2.0  # how much longer than the SDK the server may take
TLS = ssl.create_default_context()


@dataclass
class Outcome:
    kind: str  # "ok", or the error class (see the module docstring)
    text: str = ""
    usage: tuple[int, int] | None = None
    message: str = ""  # the upstream's message (SDK) or the server's error message
    elapsed: float = 0.0


SERVER_KINDS = {
    "upstream_status": "status",
    "upstream_timeout": "timeout",
    "upstream_unreachable": "connection",
    "upstream_broken_stream": "connection",
    "upstream_reported": "reported",
    "upstream_malformed": "malformed",
}


def sdk_kind(exc: Exception) -> str:
    """The error class of an exception the stock SDK raised."""
    if isinstance(exc, openai.APIStatusError):
        return "status"
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, openai.APIError):
        return "reported"
    if isinstance(exc, (ValueError, AttributeError, TypeError)):  # JSON that is not an answer
        return "malformed"
    raise exc


def upstream_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"]
    return body if isinstance(body, str) else ""


async def ask(client: openai.AsyncOpenAI, case: Case, key: str, request_id: str | None) -> Outcome:
    """One turn of ``case`` through ``client``: its text and usage, or its error class."""
    started = time.monotonic()
    text = f"#case:{case.name}:{key}"
    kwargs: dict[str, Any] = {
        "model": "replay",
        "messages": [{"role": "user", "content": text}],
        "extra_body": {"session_id": key},
    }
    if request_id:
        kwargs["extra_headers"] = {"X-Request-ID": request_id}
    try:
        if case.stream:
            parts, usage = [], None
            stream = await client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})
            async for item in stream:
                if item.usage is not None:
                    usage = (item.usage.prompt_tokens, item.usage.completion_tokens)
                parts += [c.delta.content for c in item.choices if c.delta.content]
            outcome = Outcome("ok", "".join(parts), usage)
        else:
            answer = await client.chat.completions.create(**kwargs)
            used = answer.usage
            outcome = Outcome(
                "ok", answer.choices[0].message.content or "", used and (used.prompt_tokens, used.completion_tokens)
            )
    except Exception as exc:
        if isinstance(exc, openai.APIError) and isinstance(exc.body, dict) and exc.body.get("code"):
            code = exc.body["code"]  # the server's error
            outcome = Outcome(SERVER_KINDS.get(code, str(code)), message=exc.body.get("message") or "")
        else:
            outcome = Outcome(sdk_kind(exc), message=upstream_message(exc))
    outcome.elapsed = time.monotonic() - started
    return outcome


async def run_case(case: Case, replay: ReplayServer, to_server: openai.AsyncOpenAI) -> tuple[Outcome, Outcome]:
    """The case's last turn through the stock SDK and through the server, side by side."""
    # The SDK's default HTTP client, as AsyncOpenAI builds it, but sharing one
    # TLS context (each client would load the CA store again: 60 ms of CPU).
    http = openai.DefaultAsyncHttpxClient(verify=TLS, timeout=PROVIDER_TIMEOUT)
    direct = openai.AsyncOpenAI(
        base_url=replay.url + "/v1", api_key="test-key", max_retries=RETRIES, timeout=PROVIDER_TIMEOUT, http_client=http
    )

    async def turns(client: openai.AsyncOpenAI, key: str) -> Outcome:
        for turn in range(case.turns):
            if turn:
                await asyncio.sleep(0.3)  # an idle pooled connection, as between real turns
            outcome = await ask(client, case, key, f"{case.name}.{turn}" if client is to_server else None)
            if outcome.kind != "ok":
                break
        return outcome

    run = uuid.uuid4().hex[:8]
    try:
        return await asyncio.gather(turns(direct, f"sdk-{run}"), turns(to_server, f"srv-{run}"))
    finally:
        await direct.close()


@pytest.fixture(scope="module")
def results() -> Iterator[dict[str, tuple[Outcome, Outcome]]]:
    """Every case run once, against one replaying upstream and one server."""
    cases = {case.name: case for case in CASES}
    assert len(cases) == len(CASES), "case names must be unique"
    outcomes: dict[str, tuple[Outcome, Outcome]] = {}

    async def main(server_box: list[ServerProcess]) -> None:
        async with ReplayServer(cases) as replay:
            config = upstream_config(replay.url, model="replay")
            config["providers"]["scripted"].update(maxRetries=RETRIES, timeout=PROVIDER_TIMEOUT)
            config["api"] = {"timeout": TURN_TIMEOUT}
            server = await asyncio.to_thread(ServerProcess, config)
            server_box.append(server)
            async with openai.AsyncOpenAI(
                base_url=server.base_url, api_key="none", max_retries=0, timeout=TURN_TIMEOUT + 5
            ) as to_server:
                together = [c for c in CASES if c.turns == 1]
                done = await asyncio.gather(*(run_case(c, replay, to_server) for c in together))
                outcomes.update(zip((c.name for c in together), done, strict=False))
                for case in CASES:
                    if case.turns > 1:
                        outcomes[case.name] = await run_case(case, replay, to_server)
            outcomes["_heads"] = replay.heads  # type: ignore[assignment]
            outcomes["_log"] = server.stderr_text()  # type: ignore[assignment]

    servers: list[ServerProcess] = []
    try:
        asyncio.run(main(servers))
        yield outcomes
    finally:
        for server in servers:
            server.stop()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_same_outcome_as_the_sdk(results: dict[str, tuple[Outcome, Outcome]], case: Case) -> None:
    direct, served = results[case.name]
    assert served.kind == direct.kind, f"SDK: {direct}\nserver: {served}"
    if direct.kind == "ok":
        assert (served.text, served.usage) == (direct.text, direct.usage)
    if direct.kind in ("status", "reported"):
        assert direct.message and direct.message in served.message, served.message
        assert "Error code" not in served.message, served.message
    took = f"SDK took {direct.elapsed:.2f} s, the server {served.elapsed:.2f} s"
    assert served.elapsed < direct.elapsed + SLACK, took


def test_corpus_answers_are_what_the_cases_say(results: dict[str, tuple[Outcome, Outcome]]) -> None:
    """The corpus itself: the SDK reads the well-formed cases as the standard answer."""
    for name in ("sse", "sse_bare_cr", "sse_multiline_data", "done_then_pings", "json", "stale_pooled_socket"):
        direct, _ = results[name]
        assert (direct.kind, direct.text, direct.usage) == ("ok", TEXT, USAGE), name


def test_same_request_headers_as_the_sdk(results: dict[str, Any]) -> None:
    """The upstream sees the SDK's own User-Agent and header names from the server."""
    heads = results["_heads"]
    sdk = next(h[0] for k, h in heads.items() if k.startswith("#case:sse:sdk-"))
    srv = next(h[0] for k, h in heads.items() if k.startswith("#case:sse:srv-"))

    def headers(head: bytes) -> dict[str, str]:
        lines = head.decode("latin-1").split("\r\n")[1:]
        return {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines if line)}

    mine, theirs = headers(srv), headers(sdk)
    assert mine["user-agent"] == theirs["user-agent"] == f"AsyncOpenAI/Python {openai.__version__}"
    assert set(mine) == set(theirs)


def test_each_failed_turn_is_logged_once(results: dict[str, Any]) -> None:
    """A 502 or 504 is one warning line (request id, status, kind, provider, message), with no secret in it."""
    log: str = results["_log"]
    failed = {case.name: results[case.name][1] for case in CASES if results[case.name][1].kind != "ok"}
    assert failed  # the corpus has failing upstreams
    for name, outcome in failed.items():
        case = next(c for c in CASES if c.name == name)
        request_id = f"{name}.{case.turns - 1}"
        lines = [line for line in log.splitlines() if f"request {request_id} failed" in line]
        assert len(lines) == 1, (name, lines)
        assert "WARNING" in lines[0] and "HTTP 502 upstream_" in lines[0] and "provider scripted" in lines[0]
        assert outcome.message in lines[0]
    assert "test-key" not in log
