"""The chat request's ending policy and the stream heartbeat, in process (no server)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from nanobot.errors import ApiError, ClientDisconnected, InvalidRequest, UpstreamError
from nanobot.idle_clock import Deadline, IdleClock
from nanobot.server.lifecycle import Ending, ending
from stages.encode import Heartbeat


def end(exc: BaseException, *, shutting_down: bool = False, client_gone: bool = False) -> Ending | None:
    return ending(exc, timeout=30.0, shutting_down=shutting_down, client_gone=client_gone)


def test_a_stage_error_is_sent_as_it_is():
    err = UpstreamError("upstream said no", code="upstream_status")
    assert end(err) == Ending(error=err)
    # Even with the client gone or the server stopping: the stage decided first.
    assert end(err, client_gone=True, shutting_down=True) == Ending(error=err)


def test_the_deadline_is_a_504_naming_the_limit():
    result = end(TimeoutError())
    assert result is not None and result.error is not None
    assert (result.error.status, result.error.code) == (504, "timeout")
    assert "api.timeout (30 s)" in result.error.message
    assert not result.client_left and not result.consumed_cancel


def test_shutdown_cancels_into_a_503_and_consumes_the_cancellation():
    result = end(asyncio.CancelledError(), shutting_down=True, client_gone=True)
    assert result is not None and result.error is not None
    assert (result.error.status, result.error.code) == (503, "shutting_down")
    assert result.consumed_cancel


def test_a_client_that_left_gets_nothing():
    assert end(asyncio.CancelledError(), client_gone=True) == Ending(client_left=True, consumed_cancel=True)
    # A write that found the socket closed: no cancellation to consume.
    assert end(ClientDisconnected(), client_gone=True) == Ending(client_left=True)
    # Shutdown only turns a cancellation into a 503; a dead socket stays a 499.
    assert end(ClientDisconnected(), client_gone=True, shutting_down=True) == Ending(client_left=True)


@pytest.mark.parametrize("exc", [asyncio.CancelledError(), ClientDisconnected(), KeyboardInterrupt(), SystemExit(1)])
def test_what_is_not_the_requests_own_propagates(exc: BaseException):
    assert end(exc) is None


def test_an_unexpected_exception_is_a_bare_500_and_logged():
    result = end(KeyError("secret detail"))
    assert result is not None and result.error is not None and result.unexpected
    assert result.error.status == 500
    assert "secret" not in result.error.message


def test_an_api_error_subclass_keeps_its_status():
    result = end(InvalidRequest("bad", param="messages"))
    assert isinstance(result, Ending) and isinstance(result.error, ApiError)
    assert (result.error.status, result.error.param) == (400, "messages")


class GoneResponse:
    """A response whose client has left: every frame raises."""

    def __init__(self) -> None:
        self.attempts = 0

    def send_frame(self, frame: bytes) -> None:
        self.attempts += 1
        raise ClientDisconnected()


def test_a_heartbeat_to_a_client_that_left_raises_nothing_into_the_loop():
    async def main() -> tuple[list[dict[str, Any]], int]:
        loop = asyncio.get_running_loop()
        leaked: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: leaked.append(context))
        response = GoneResponse()
        heartbeat = Heartbeat(SimpleNamespace(response=response), 0.01)  # type: ignore[arg-type]
        try:
            await asyncio.sleep(0.1)
        finally:
            heartbeat.stop()
        return leaked, response.attempts

    leaked, attempts = asyncio.run(main())
    assert attempts == 1  # it stopped at the first failed ping
    assert leaked == []


class RecordingResponse:
    """A response that keeps the loop time of every frame it is sent."""

    def __init__(self) -> None:
        self.sent: list[float] = []

    def send_frame(self, frame: bytes) -> None:
        assert frame == b": ping\n\n"
        self.sent.append(asyncio.get_running_loop().time())


def _live_timers(loop: asyncio.AbstractEventLoop) -> int:
    scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
    return len([handle for handle in scheduled if not handle.cancelled()])


def test_every_stream_of_a_loop_shares_one_heartbeat_timer():
    interval = 0.05

    async def main() -> tuple[list[RecordingResponse], list[RecordingResponse], list[float], int, int]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        silent = [RecordingResponse() for _ in range(20)]
        busy = [RecordingResponse() for _ in range(20)]
        beats = [Heartbeat(SimpleNamespace(response=r), interval) for r in silent + busy]  # type: ignore[arg-type]
        timers_while_open = _live_timers(loop)
        for _ in range(30):  # the busy half sends a frame every 10 ms
            await asyncio.sleep(0.01)
            for beat in beats[20:]:
                beat.touch()
        late = Heartbeat(SimpleNamespace(response=RecordingResponse()), interval)  # type: ignore[arg-type]
        assert IdleClock.of(loop, interval) is IdleClock.of(loop, interval)
        assert len(IdleClock.of(loop, interval)) == 41
        for beat in [*beats, late]:
            beat.stop()
        ended = loop.time()
        assert len(IdleClock.of(loop, interval)) == 0
        await asyncio.sleep(interval * 2)  # its timer fires once more, finds no stream, and stops
        return silent, busy, [started, ended], timers_while_open, _live_timers(loop)

    silent, busy, (started, ended), timers_while_open, timers_after = asyncio.run(main())
    assert timers_while_open == 1  # one for all 40 streams
    assert timers_after == 0  # and none once they all ended
    assert all(not r.sent for r in busy)  # never silent for an interval: no ping
    for r in silent:
        # Pinged about every interval of silence, the first one no sooner than that.
        assert 2 <= len(r.sent) <= (ended - started) / interval + 1, r.sent
        assert r.sent[0] - started >= interval * 0.999
        assert all(b - a >= interval * 0.999 for a, b in zip(r.sent, r.sent[1:], strict=False))


def test_a_stream_that_left_stops_being_pinged_while_the_others_go_on():
    async def main() -> tuple[int, list[float]]:
        gone, here = GoneResponse(), RecordingResponse()
        beats = [Heartbeat(SimpleNamespace(response=r), 0.02) for r in (gone, here)]  # type: ignore[arg-type]
        await asyncio.sleep(0.15)
        for beat in beats:
            beat.stop()
        return gone.attempts, here.sent

    attempts, sent = asyncio.run(main())
    assert attempts == 1
    assert len(sent) >= 3


def test_a_deadline_on_the_shared_clock_ends_its_scope_as_asyncio_timeout_does():
    async def main() -> tuple[list[str], int]:
        loop = asyncio.get_running_loop()
        outcomes: list[str] = []

        async def request(seconds: float, work: float) -> None:
            started = loop.time()
            try:
                async with asyncio.timeout(None) as scope:
                    deadline = Deadline(scope, started, seconds)
                    try:
                        await asyncio.sleep(work)
                    finally:
                        deadline.stop()
                outcomes.append("done")
            except TimeoutError:
                assert loop.time() - started >= seconds * 0.999  # never before its deadline
                outcomes.append("timed out")

        # Three requests under one limit share its clock; two outlive it.
        runs = [asyncio.ensure_future(request(0.1, work)) for work in (0.02, 0.5, 0.5)]
        await asyncio.sleep(0)
        watched = len(IdleClock.of(loop, 0.1))
        await asyncio.gather(*runs)
        return outcomes, watched

    outcomes, watched = asyncio.run(main())
    assert watched == 3
    assert sorted(outcomes) == ["done", "timed out", "timed out"]
