"""The agent's tools, built once at startup from ``config.tools``.

:data:`BUILTIN_TOOLS` is the one list of built-in tools, in the order they
are offered to the model; each class says whether the config enables it,
checks its environment at startup and builds itself (:mod:`nanobot.tools.base`).
:func:`build_registry` wraps the built tools with the limits of ``tools.*``.
Tools that appear later (servers that connect in the background) go in
through ``ToolRegistry.add``.
"""

from __future__ import annotations

from collections.abc import Callable

from nanobot.agent.tools import Tool, ToolLimits, ToolRegistry
from nanobot.config import Config
from nanobot.cron.store import CronStore
from nanobot.files.pool import Extractor
from nanobot.outbound.base import Outbox
from nanobot.tools.base import BuiltinTool, ToolDeps
from nanobot.tools.cron import CronTool
from nanobot.tools.exec import ExecTool
from nanobot.tools.files import EditFileTool, ListDirTool, ReadFileTool, WriteFileTool
from nanobot.tools.message import MessageTool
from nanobot.tools.paths import Workspace
from nanobot.tools.spawn import SpawnTool, Subagents
from nanobot.tools.web_fetch import WebFetchTool
from nanobot.tools.web_search import WebSearchTool

# One line per tool; the order is the order the model sees them in.
BUILTIN_TOOLS: tuple[type[BuiltinTool], ...] = (
    ReadFileTool,
    WriteFileTool,
    EditFileTool,
    ListDirTool,
    ExecTool,
    WebFetchTool,
    WebSearchTool,
    MessageTool,
    CronTool,
    SpawnTool,
)


def workspace_of(config: Config) -> Workspace:
    tools = config.tools
    return Workspace(
        config.workspace,
        tools.workspace_scope,
        tools.restrict_to_workspace,
        tools.workspace_quota_mb * 1024 * 1024,
        context_writable=tools.file.context_writable,
    )


def build_tools(
    config: Config,
    *,
    outbox: Outbox,
    extractor: Extractor,
    workspace: Workspace | None = None,
    cron: CronStore | None = None,
    subagents: Subagents | None = None,
) -> list[Tool]:
    """The enabled tools, in the order they are offered to the model."""
    deps = ToolDeps(config, workspace or workspace_of(config), outbox, extractor, cron, subagents)
    return [spec.build(deps) for spec in BUILTIN_TOOLS if spec.enabled(config)]


def enabled_tool_names(config: Config) -> list[str]:
    """The names :func:`build_tools` would offer (nothing is built or started)."""
    return [spec.name for spec in BUILTIN_TOOLS if spec.enabled(config)]


def check_tools(config: Config) -> None:
    """Startup checks of the tools' environment; raises ConfigError (exit 2)."""
    for spec in BUILTIN_TOOLS:
        spec.check(config)


def build_registry(config: Config, tools: list[Tool], redact: Callable[[str], str] | None = None) -> ToolRegistry:
    limits = ToolLimits(timeout=config.tools.timeout, max_result_chars=config.tools.max_result_chars)
    return ToolRegistry(tools, limits, redact, config.tools.require_user_request)
