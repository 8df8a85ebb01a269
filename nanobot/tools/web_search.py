"""``web_search``: title, URL and snippet per hit, from Brave Search or a SearXNG instance.

The endpoint is the operator's (``tools.web.search.apiBase``), so it is
trusted and not SSRF-checked. Every failure (unreachable, slow, an error
status, an answer that is not the provider's JSON) is an ``Error:`` result.
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.simple_httpclient import SimpleAsyncHTTPClient

from nanobot.agent.tools import Tool, TurnScope, fail, function_schema
from nanobot.config import Config, WebSearchConfig
from nanobot.tools.base import BuiltinTool, ToolDeps

log = logging.getLogger(__name__)

BRAVE_URL = "https://api.search.brave.com/res/v1/web/search"
SEARCH_TIMEOUT = 20.0
MAX_ANSWER_BYTES = 2 * 1024 * 1024
_TAG = re.compile(r"<[^>]{0,200}>")


@dataclass(frozen=True)
class Hit:
    title: str
    url: str
    snippet: str


class SearchError(Exception):
    pass


def search_endpoint(config: WebSearchConfig) -> str | None:
    """The URL searched, or None when the provider is not fully configured."""
    if config.provider == "brave":
        return (config.api_base or BRAVE_URL) if config.api_key else None
    if config.provider == "searxng" and config.api_base:
        base = config.api_base.rstrip("/")
        return base if base.endswith("/search") else base + "/search"
    return None


def _clean(value: Any, limit: int) -> str:
    """Provider text as plain text: tags (Brave marks matches with <strong>) and entities undone."""
    text = html.unescape(_TAG.sub("", value)) if isinstance(value, str) else ""
    return " ".join(text.split())[:limit]


def parse_hits(provider: str, answer: Any) -> list[Hit]:
    """The hits of a provider's JSON answer; ``SearchError`` when it is not that provider's shape."""
    try:
        items = answer["web"]["results"] if provider == "brave" else answer["results"]
    except (KeyError, TypeError):
        if provider == "brave" and isinstance(answer, dict) and "web" not in answer and "type" in answer:
            return []  # Brave leaves out "web" when nothing matched
        raise SearchError("an answer without the expected results list") from None
    if not isinstance(items, list):
        raise SearchError("an answer whose results are not a list")
    snippet_key = "description" if provider == "brave" else "content"
    hits = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("url"), str):
            hits.append(Hit(_clean(item.get("title"), 300), item["url"][:2000], _clean(item.get(snippet_key), 600)))
    return hits


class WebSearchTool(BuiltinTool):
    """The ``web_search`` tool; offered only when :func:`search_endpoint` is set."""

    name = "web_search"

    def __init__(self, config: WebSearchConfig, timeout: float = SEARCH_TIMEOUT) -> None:
        endpoint = search_endpoint(config)
        if endpoint is None:
            raise ValueError("tools.web.search is not configured")
        self._config, self._endpoint, self._timeout = config, endpoint, timeout
        self._client: SimpleAsyncHTTPClient | None = None
        count = {
            "type": "integer",
            "minimum": 1,
            "maximum": config.max_results,
            "description": f"How many hits (at most {config.max_results}).",
        }
        self.schema = function_schema(
            self.name,
            "Search the web. Returns the title, URL and a snippet of each hit.",
            {"query": {"type": "string", "description": "What to search for."}, "count": count},
            ["query"],
        )

    @classmethod
    def enabled(cls, config: Config) -> bool:
        search = config.tools.web.search
        if search_endpoint(search) is not None:
            return True
        if search.provider:  # logged whenever the tool list is made: at startup and by ``config check``
            needs = "apiKey" if search.provider == "brave" else "apiBase"
            log.warning("web_search is off: tools.web.search.provider is %r but %s is empty", search.provider, needs)
        return False

    @classmethod
    def build(cls, deps: ToolDeps) -> Tool:
        return cls(deps.config.tools.web.search)

    async def run(self, args: dict[str, Any], scope: TurnScope) -> str:
        query, count = args.get("query"), args.get("count", self._config.max_results)
        if not isinstance(query, str) or not query.strip():
            return fail("Error: 'query' must be a non-empty string.")
        if isinstance(count, bool) or not isinstance(count, (int, float)):
            return fail("Error: 'count' must be a number.")
        count = max(1, min(int(count), self._config.max_results))
        provider = self._config.provider
        try:
            hits = parse_hits(provider, await self._ask(query.strip()[:1000], count))[:count]
        except SearchError as exc:
            return fail(f"Error: the search provider ({provider}) failed: {exc}.")
        if not hits:
            return f"No results for {query!r}."
        lines = [f"Results for {query!r}:"]
        for n, hit in enumerate(hits, 1):
            lines += [f"{n}. {hit.title or hit.url}", f"   {hit.url}"] + ([f"   {hit.snippet}"] if hit.snippet else [])
        return "\n".join(lines)

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()

    async def _ask(self, query: str, count: int) -> Any:
        if self._config.provider == "brave":
            params = {"q": query, "count": count}
            headers = {"Accept": "application/json", "X-Subscription-Token": self._config.api_key}
        else:
            params = {"q": query, "format": "json"}
            headers = {"Accept": "application/json"}
            if self._config.api_key:
                headers["Authorization"] = f"Bearer {self._config.api_key}"
        request = HTTPRequest(
            f"{self._endpoint}?{urlencode(params)}",
            headers=headers,
            connect_timeout=self._timeout,
            request_timeout=self._timeout,
        )
        if self._client is None:
            self._client = SimpleAsyncHTTPClient(force_instance=True, max_body_size=MAX_ANSWER_BYTES)
        try:
            response = await self._client.fetch(request, raise_error=False)
        except (HTTPClientError, OSError) as exc:
            raise SearchError(f"could not reach {self._endpoint}: {exc}") from None
        if response.code == 599:
            raise SearchError(f"could not reach {self._endpoint}: {response.error}")
        if response.code != 200:
            raise SearchError(f"HTTP {response.code} {_clean(response.body.decode('utf-8', 'replace'), 200)}".rstrip())
        try:
            return orjson.loads(response.body)
        except orjson.JSONDecodeError:
            raise SearchError("an answer that is not JSON") from None
