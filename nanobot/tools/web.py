"""The web tools the config enables: ``web_fetch`` and ``web_search``."""

from __future__ import annotations

import logging

from nanobot.agent.tools import Tool
from nanobot.config import Config
from nanobot.tools.ssrf import parse_whitelist
from nanobot.tools.web_fetch import WebFetchTool
from nanobot.tools.web_search import WebSearchTool, search_endpoint

log = logging.getLogger(__name__)


def web_tools(config: Config) -> list[Tool]:
    """The enabled web tools; ``ValueError`` for a bad ``tools.ssrfWhitelist`` entry."""
    tools = config.tools
    out: list[Tool] = []
    if tools.web.fetch.enabled:
        out.append(WebFetchTool(tools.web.fetch, parse_whitelist(tools.ssrf_whitelist), tools.max_result_chars))
    search = tools.web.search
    if search_endpoint(search) is not None:
        out.append(WebSearchTool(search))
    elif search.provider:
        needs = "apiKey" if search.provider == "brave" else "apiBase"
        log.warning("web_search is off: tools.web.search.provider is %r but %s is empty", search.provider, needs)
    return out
