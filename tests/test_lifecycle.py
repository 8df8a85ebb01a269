"""The chat request's ending policy and the stream heartbeat, in process (no server)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from nanobot.errors import ApiError, ClientDisconnected, InvalidRequest, UpstreamError
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
