"""The hot path's shortcuts stay taken: counted in a profile of a real server (NANOBOT_PROFILE).

Call counts are exact where times are not, so each test names what a turn or
a streamed token must not do, and counts it in the server's own profile.
"""

from __future__ import annotations

import asyncio
import gc
import pstats
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import requests
from common import CHAT
from servers import ServerProcess, upstream_config

from nanobot.config import AgentDefaults, ProviderConfig
from nanobot.providers.openai_compat import OpenAICompatProvider
from nanobot.server.measure import PROFILE_ENV
from nanobot.testing.process import UpstreamProcess

TOKENS = 60


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[UpstreamProcess]:
    """Words a few milliseconds apart: the client keeps up, so no frame ever has to queue."""
    up = UpstreamProcess.start(tokens=TOKENS, interval_ms=3, record=False)
    yield up
    up.stop()


def calls(profile: Path, filename_end: str, name: str) -> int:
    stats: dict[Any, Any] = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    return sum(
        entry[1] for (filename, _, func), entry in stats.items() if filename.endswith(filename_end) and func == name
    )


def profiled_turns(
    tmp_path: Path, make_server: Callable[..., ServerProcess], up: UpstreamProcess, *bodies: dict[str, Any]
) -> Path:
    profile = tmp_path / "loop.prof"
    srv = make_server(upstream_config(up.url), env={PROFILE_ENV: str(profile)})
    for body in bodies:
        reply = requests.post(srv.url + CHAT, json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        if body.get("stream"):
            assert reply.text.count('"content":"') >= TOKENS and reply.text.rstrip().endswith("data: [DONE]")
    assert srv.stop() == 0
    return profile


def test_streamed_frames_go_straight_to_the_socket(
    tmp_path: Path, slow_upstream: UpstreamProcess, make_server: Callable[..., ServerProcess]
) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True, "session_id": "frames"}
    profile = profiled_turns(tmp_path, make_server, slow_upstream, body, body)
    frames = 2 * TOKENS
    # Each frame is one send_frame on the request's exchange, one transport write.
    assert calls(profile, "nanobot/server/chat.py", "send_frame") >= frames
    assert calls(profile, "nanobot/server/exchange.py", "send_frame") >= frames
    # RequestHandler's write path only for the headers with the role chunk and
    # the last frames of each of the two streams, never once per token.
    assert (
        calls(profile, "nanobot/server/exchange.py", "write")
        + calls(profile, "nanobot/server/exchange.py", "write_headers")
        < 10
        < frames
    )
    # a frame's write and its backpressure check are one call on the connection
    assert calls(profile, "nanobot/server/connection.py", "write_frame") >= frames
    assert calls(profile, "nanobot/server/connection.py", "transport_write") < 10
    # where a stream's frames go is looked up once per stream, not per frame
    assert calls(profile, "nanobot/server/tornado_private.py", "frame_sink") < 10
    # Tornado's connection layer is not on the path at all.
    assert calls(profile, "tornado/iostream.py", "write") == 0
    # An upstream chunk is read with the connection's own method: no body
    # wrapper's frame and no separate wait frame per token.
    assert calls(profile, "nanobot/providers/connection.py", "next_chunk") >= frames
    assert calls(profile, "nanobot/providers/transport.py", "read_some") == 0
    assert calls(profile, "nanobot/providers/connection.py", "_wait") < 10


TURNS = 10


@pytest.fixture(scope="module")
def plain_turns_profile(tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamProcess) -> Iterator[Path]:
    """The profile of a server that answered TURNS plain turns on one session, and nothing else."""
    profile = tmp_path_factory.mktemp("plain") / "loop.prof"
    with ServerProcess(upstream_config(upstream.url), env={PROFILE_ENV: str(profile)}) as srv:
        for _ in range(TURNS):
            body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "session_id": "plain"}
            reply = requests.post(srv.url + CHAT, json=body, timeout=60)
            assert reply.status_code == 200, reply.text
    yield profile


def test_an_unchanged_workspace_costs_its_prompt_no_path_work(plain_turns_profile: Path) -> None:
    # The system prompt's cache is found by the session key; the session's
    # folder name (a sha256 and a regex) is worked out only to look at files.
    assert calls(plain_turns_profile, "nanobot/tools/paths.py", "safe_name") < TURNS


def test_a_turn_goes_through_no_tornado_connection_layer(plain_turns_profile: Path) -> None:
    # The server connection parses with httptools and drives the application
    # itself: no IOStream, HTTP1Connection or gen.with_timeout per request.
    for module, name in [
        ("tornado/iostream.py", "read_until_regex"),
        ("tornado/iostream.py", "write"),
        ("tornado/http1connection.py", "_read_message"),
        ("tornado/http1connection.py", "write_headers"),
        ("tornado/gen.py", "with_timeout"),
        ("tornado/httputil.py", "parse"),
    ]:
        assert calls(plain_turns_profile, module, name) == 0, (module, name)
    # One header block handed over per request, and the head parsed once.
    assert calls(plain_turns_profile, "nanobot/server/connection.py", "on_headers_complete") == TURNS
    assert calls(plain_turns_profile, "nanobot/server/exchange.py", "write_headers") == TURNS


def test_request_metrics_find_their_series_once(plain_turns_profile: Path) -> None:
    # labels() builds a key and takes a lock: once per (route, status), not per request.
    assert calls(plain_turns_profile, "prometheus_client/metrics.py", "labels") <= 2
    assert calls(plain_turns_profile, "nanobot/server/handlers.py", "on_finish") >= TURNS


def test_an_open_stream_does_not_keep_the_prompt_it_sent(slow_upstream: UpstreamProcess) -> None:
    # The response keeps its request while the stream is open; the request
    # kept the body (the whole prompt, the tools' schemas), a few KB a stream.
    marker = "prompt-marker-" + "x" * 2000

    async def run() -> tuple[int, int]:
        provider = OpenAICompatProvider(
            "up", ProviderConfig(api_key="k", api_base=f"{slow_upstream.url}/v1"), AgentDefaults()
        )
        events = provider.stream([{"role": "user", "content": marker}], None, incremental=True)
        try:
            first = await anext(events)
            assert isinstance(first, str)
            held = sum(
                1
                for obj in gc.get_objects()
                if isinstance(obj, httpx2.Request) and marker.encode() in (getattr(obj, "_content", None) or b"")
            )
            rest = [e async for e in events]
            return held, len(rest)
        finally:
            await events.aclose()
            await provider.close()

    held, rest = asyncio.run(run())
    assert rest >= TOKENS - 1  # the stream went on to its end
    assert held == 0
