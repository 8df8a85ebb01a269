"""web_search against fake Brave and SearXNG endpoints served locally."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from common import SCOPE

from nanobot.config import SearchProvider, WebSearchConfig, parse_config
from nanobot.testing.website import Site
from nanobot.tools import enabled_tool_names
from nanobot.tools.web_search import WebSearchTool


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with Site(big_bytes=10_000) as s:
        yield s


def search(
    site: Site,
    provider: SearchProvider,
    args: dict,
    *,
    key: str = "brave-key",
    base: str | None = None,
    max_results: int = 5,
    timeout: float = 5.0,
) -> str:
    base = base or f"{site.url}/{provider}" + ("/search" if provider == "brave" else "")
    tool = WebSearchTool(
        WebSearchConfig(provider=provider, api_key=key, api_base=base, max_results=max_results), timeout=timeout
    )

    async def go() -> str:
        try:
            return await tool.run(args, SCOPE)
        finally:
            await tool.close()

    return asyncio.run(go())


@pytest.mark.parametrize("provider", ["brave", "searxng"])
def test_title_url_snippet_per_hit(site: Site, provider: SearchProvider) -> None:
    out = search(site, provider, {"query": "tomatoes"})
    assert out.splitlines()[:4] == [
        "Results for 'tomatoes':",
        "1. tomatoes hit 1 & more",
        "   https://example.org/1",
        "   About tomatoes, part 1.",
    ]
    assert "5. tomatoes hit 5" in out and "6. " not in out  # maxResults


def test_count_capped_by_max_results(site: Site) -> None:
    out = search(site, "brave", {"query": "q", "count": 2})
    assert "2. q hit 2" in out and "3. " not in out
    assert site.searches[-1][1]["count"] == [b"2"]
    out = search(site, "searxng", {"query": "q", "count": 50}, max_results=7)
    assert "7. q hit 7" in out and "8. " not in out
    assert search(site, "brave", {"query": "q", "count": "many"}) == "Error: 'count' must be a number."
    assert search(site, "brave", {"query": " "}) == "Error: 'query' must be a non-empty string."


def test_brave_sends_its_key_and_searxng_asks_for_json(site: Site) -> None:
    out = search(site, "brave", {"query": "q"}, key="wrong")
    assert out.startswith("Error: the search provider (brave) failed: HTTP 401") and "bad token" in out
    search(site, "searxng", {"query": "q"}, base=f"{site.url}/searxng")
    assert site.searches[-1][1]["format"] == [b"json"]


def test_no_results(site: Site) -> None:
    assert search(site, "brave", {"query": "nothing"}) == "No results for 'nothing'."
    assert search(site, "searxng", {"query": "nothing"}) == "No results for 'nothing'."


@pytest.mark.parametrize("provider", ["brave", "searxng"])
@pytest.mark.parametrize("query, expect", [("garbage", "not JSON"), ("shape", "not a list")])
def test_garbage_answers_are_errors(site: Site, provider: SearchProvider, query: str, expect: str) -> None:
    out = search(site, provider, {"query": query})
    assert out.startswith(f"Error: the search provider ({provider}) failed: ") and expect in out, out


def test_provider_down_or_slow(site: Site) -> None:
    out = search(site, "searxng", {"query": "q"}, base="http://127.0.0.1:1")
    assert out.startswith("Error: the search provider (searxng) failed: could not reach http://127.0.0.1:1/search")
    started = time.monotonic()
    out = search(site, "brave", {"query": "slow"}, timeout=0.5)
    assert out.startswith("Error: the search provider (brave) failed: could not reach") and "Timeout" in out
    assert time.monotonic() - started < 3


def test_offered_only_when_configured() -> None:
    def web(config) -> list[str]:
        return [n for n in enabled_tool_names(config) if n.startswith("web_")]

    def names(search: dict) -> list[str]:
        return web(parse_config({"tools": {"web": {"search": search}}}))

    assert names({}) == ["web_fetch"]
    assert names({"provider": "brave"}) == ["web_fetch"]  # no apiKey
    assert names({"provider": "searxng"}) == ["web_fetch"]  # no apiBase
    assert names({"provider": "brave", "apiKey": "k"}) == ["web_fetch", "web_search"]
    assert names({"provider": "searxng", "apiBase": "http://searx.local"}) == ["web_fetch", "web_search"]
    config = parse_config({"tools": {"web": {"fetch": {"enabled": False}}}})
    assert web(config) == []
