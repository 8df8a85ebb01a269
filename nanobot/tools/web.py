"""The web tools the config enables: ``web_fetch`` and ``web_search``."""

from __future__ import annotations

from nanobot.agent.tools import Tool
from nanobot.config import Config
from nanobot.tools.ssrf import parse_whitelist
from nanobot.tools.web_fetch import WebFetchTool


def web_tools(config: Config) -> list[Tool]:
    """The enabled web tools; ``ValueError`` for a bad ``tools.ssrfWhitelist`` entry."""
    tools = config.tools
    out: list[Tool] = []
    if tools.web.fetch.enabled:
        out.append(WebFetchTool(tools.web.fetch, parse_whitelist(tools.ssrf_whitelist), tools.max_result_chars))
    return out
