"""RequestExitStack: the stock AsyncExitStack's behaviour, with less held per request."""

from __future__ import annotations

import asyncio
import sys
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

import pytest

from nanobot.context import RequestContext, RequestExitStack


async def _script(stack: AsyncExitStack, fail: type[BaseException] | None, suppress: bool) -> list[str]:
    """Every kind of push, then an exit (by ``fail`` if given); what ran, in order."""
    seen: list[str] = []

    @contextmanager
    def sync_cm(name: str) -> Any:
        seen.append(f"enter {name}")
        try:
            yield name
        finally:
            seen.append(f"exit {name}")

    @asynccontextmanager
    async def async_cm(name: str) -> Any:
        seen.append(f"enter {name}")
        await asyncio.sleep(0)
        try:
            yield name
        finally:
            seen.append(f"exit {name}")

    def exit_cb(kind: Any, exc: Any, tb: Any) -> bool:
        seen.append(f"exit_cb {kind.__name__ if kind else None}")
        return suppress

    async def async_cb(tag: str) -> None:
        seen.append(f"async_cb {tag}")

    try:
        async with stack:
            seen.append(stack.enter_context(sync_cm("a")))
            seen.append(await stack.enter_async_context(async_cm("b")))
            stack.callback(seen.append, "callback c")
            stack.push(exit_cb)
            stack.push_async_callback(async_cb, "d")
            moved = stack.pop_all()  # everything so far now belongs to ``moved``
            stack.callback(seen.append, "callback e")
            async with moved:
                stack.push_async_callback(async_cb, "f")
                if fail is not None:
                    raise fail("boom")
    except BaseException as exc:  # noqa: BLE001 - the test records what escaped
        seen.append(f"raised {type(exc).__name__}")
    return seen


@pytest.mark.parametrize("fail", [None, ValueError, asyncio.CancelledError])
@pytest.mark.parametrize("suppress", [False, True])
def test_it_unwinds_exactly_as_the_stock_stack(fail: type[BaseException] | None, suppress: bool) -> None:
    expected = asyncio.run(_script(AsyncExitStack(), fail, suppress))
    assert asyncio.run(_script(RequestExitStack(), fail, suppress)) == expected
    assert "callback e" in expected and "exit a" in expected  # the script did run to its exits


def test_an_empty_stack_holds_less_than_the_stock_one() -> None:
    ours, stock = RequestExitStack(), AsyncExitStack()
    held = sys.getsizeof(ours._exit_callbacks)  # type: ignore[attr-defined]
    assert held < sys.getsizeof(stock._exit_callbacks) / 4  # type: ignore[attr-defined]


def test_every_request_gets_one_of_its_own() -> None:
    def make() -> RequestContext:
        return RequestContext(
            services=None,  # type: ignore[arg-type]
            method="POST",
            path="/",
            headers={},
            body=b"",
            response=None,  # type: ignore[arg-type]
            request_id="r",
            started=0.0,
            deadline=1.0,
        )

    first, second = make(), make()
    assert type(first.exit_stack) is RequestExitStack
    assert first.exit_stack is not second.exit_stack
