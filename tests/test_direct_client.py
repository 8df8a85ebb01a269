"""DirectAsyncClient answers as httpx's own client does, over real loopback sockets."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx2
import pytest
from test_transport import Upstream, aio, response

from nanobot.providers.direct_client import DirectAsyncClient
from nanobot.providers.transport import PooledTransport

pytestmark = pytest.mark.timeout(20)

ROUTES = {
    b"/plain": response(b"plain body", "X-Kind: plain"),
    b"/missing": response(b'{"error":"no"}', "Content-Type: application/json", status="404 Not Found"),
    b"/moved": response(b"", "Location: /plain", status="307 Temporary Redirect"),
    b"/loop": response(b"", "Location: /loop", status="302 Found"),
    # A redirect whose promised body never comes.
    b"/stalls": b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /plain\r\nContent-Length: 9\r\n\r\n",
}


async def routed(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
    """Answers by the request's path (ROUTES); keeps the connection open."""
    while (got := await up.read_request(reader)) is not None:
        path = got[0].split(b" ", 2)[1]
        writer.write(ROUTES[path])
        await writer.drain()


def make(cls: type[httpx2.AsyncClient], pool: int = 4, **kwargs: Any) -> httpx2.AsyncClient:
    return cls(transport=PooledTransport(pool), timeout=5.0, trust_env=False, **kwargs)


async def outcome(client: httpx2.AsyncClient, url: str, timeout: Any = None, **send: Any) -> tuple[Any, ...]:
    """What a caller can see of one POST: the answer, its history and where it points next."""
    request = client.build_request(
        "POST",
        url,
        content=b'{"q":1}',
        headers={"Content-Type": "application/json"},
        **({"timeout": timeout} if timeout else {}),
    )
    response = await client.send(request, stream=True, **send)
    try:
        body = await response.aread()
    finally:
        await response.aclose()
    next_url = str(response.next_request.url) if response.next_request else None
    return (
        response.status_code,
        body,
        sorted(response.headers.multi_items()),
        str(response.url),
        [r.status_code for r in response.history],
        next_url,
        response.request.content,
    )


@pytest.mark.parametrize("path", ["/plain", "/missing", "/moved"])
@pytest.mark.parametrize("follow", [True, False])
@aio
async def test_answers_are_httpx_own(path: str, follow: bool) -> None:
    async with Upstream(routed) as up:
        direct, stock = (
            make(DirectAsyncClient, follow_redirects=follow),
            make(httpx2.AsyncClient, follow_redirects=follow),
        )
        async with direct, stock:
            mine = await outcome(direct, up.url + path)
            theirs = await outcome(stock, up.url + path)
    assert mine == theirs
    if path == "/moved":
        # Followed: the final answer, the redirect in its history. Not: the redirect, saying where.
        assert mine[0] == 200 and mine[4] == [307] if follow else mine[0] == 307 and mine[5].endswith("/plain")
    # Both clients sent the same requests, byte for byte.
    heads = [head for head, _ in up.requests]
    assert heads[: len(heads) // 2] == heads[len(heads) // 2 :]


@aio
async def test_a_redirect_loop_still_ends_in_too_many_redirects() -> None:
    async with Upstream(routed) as up:
        async with make(DirectAsyncClient, pool=1, follow_redirects=True, max_redirects=3) as direct:
            with pytest.raises(httpx2.TooManyRedirects):
                await outcome(direct, up.url + "/loop")
            assert len(up.requests) == 4  # the first request and three redirects
            # Nothing left holding the one connection slot: the next request gets it at once.
            assert (await outcome(direct, up.url + "/plain", timeout=httpx2.Timeout(5, pool=0.01)))[0] == 200


@aio
async def test_a_redirect_that_fails_to_read_gives_its_connection_back() -> None:
    async with Upstream(routed) as up:
        async with make(DirectAsyncClient, pool=1, follow_redirects=True) as direct:
            with pytest.raises(httpx2.ReadTimeout):
                await outcome(direct, up.url + "/stalls", timeout=httpx2.Timeout(5, read=0.2))
            assert (await outcome(direct, up.url + "/plain", timeout=httpx2.Timeout(5, pool=0.01)))[0] == 200


@aio
async def test_auth_and_hooks_still_apply() -> None:
    """Whatever httpx's own layers would do is still done: basic auth, URL credentials, hooks."""
    seen: list[str] = []

    async def hook(request: httpx2.Request) -> None:
        seen.append(request.url.path)

    async with Upstream(routed) as up:
        async with make(DirectAsyncClient, auth=("ann", "pw")) as with_auth:
            await outcome(with_auth, up.url + "/plain")
        async with make(DirectAsyncClient) as plain:
            await outcome(plain, up.url.replace("http://", "http://bob:pw@") + "/plain")
            await outcome(plain, up.url + "/plain", auth=("cy", "pw"))
        async with make(DirectAsyncClient, event_hooks={"request": [hook]}) as hooked:
            await outcome(hooked, up.url + "/plain")
    sent = [head for head, _ in up.requests]
    for head, user in zip(sent, ["ann", "bob", "cy"], strict=False):
        assert b"\r\nAuthorization: Basic " + base64.b64encode(f"{user}:pw".encode()) + b"\r\n" in head
    assert seen == ["/plain"]


@aio
async def test_a_plain_request_skips_the_auth_and_redirect_layers() -> None:
    """The point of the class: no auth flow, no redirect loop, unless there is work for them."""
    calls: list[str] = []
    async with Upstream(routed) as up:
        async with make(DirectAsyncClient, follow_redirects=True) as direct:
            original = direct._send_handling_auth

            async def counted(*args: Any, **kwargs: Any) -> httpx2.Response:
                calls.append("auth")
                return await original(*args, **kwargs)

            direct._send_handling_auth = counted  # type: ignore[method-assign]
            await outcome(direct, up.url + "/plain")
            await outcome(direct, up.url + "/moved")
            assert calls == []
            await outcome(direct, up.url + "/plain", auth=("ann", "pw"))
            assert calls == ["auth"]
