"""The agent's tools, built once at startup from ``config.tools``.

:func:`build_tools` returns the enabled tools; :func:`build_registry` wraps
them with the limits of ``tools.*``. Tools that appear later (servers that
connect in the background) go in through ``ToolRegistry.add``.
"""

from __future__ import annotations

from collections.abc import Callable

from nanobot.agent.tools import Tool, ToolLimits, ToolRegistry
from nanobot.config import Config
from nanobot.cron.store import CronStore
from nanobot.files.pool import Extractor
from nanobot.outbound.base import Outbox
from nanobot.tools.cron import CronTool
from nanobot.tools.exec import ExecTool, check_exec
from nanobot.tools.files import FileToolLimits, file_tools
from nanobot.tools.message import MessageTool
from nanobot.tools.paths import Workspace
from nanobot.tools.spawn import SpawnTool, Subagents
from nanobot.tools.web import web_tools


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
    ws = workspace or workspace_of(config)
    tools: list[Tool] = []
    if config.tools.file.enabled:
        limits = FileToolLimits(
            max_chars=config.tools.max_result_chars,
            max_document_bytes=config.api.max_file_bytes,
        )
        tools.extend(file_tools(ws, limits, extractor))
    if config.tools.exec.enabled:
        tools.append(ExecTool(ws, config.tools.exec, config.tools.max_result_chars))
    tools.extend(web_tools(config))
    tools.append(MessageTool(outbox, config.channels))
    if config.tools.cron.enabled:
        tools.append(CronTool(cron, config.tools.cron, config.channels))  # type: ignore[arg-type]  # None: names only
    if config.tools.spawn.enabled:
        tools.append(SpawnTool(subagents))  # type: ignore[arg-type]
    return tools


def enabled_tool_names(config: Config) -> list[str]:
    """The names :func:`build_tools` would offer (nothing is started)."""
    tools = build_tools(config, outbox=None, extractor=Extractor(config.api.files.limits()))  # type: ignore[arg-type]
    return [t.name for t in tools]


def check_tools(config: Config) -> None:
    """Startup checks of the tools' environment; raises ConfigError (exit 2)."""
    check_exec(config)


def build_registry(config: Config, tools: list[Tool], redact: Callable[[str], str] | None = None) -> ToolRegistry:
    limits = ToolLimits(timeout=config.tools.timeout, max_result_chars=config.tools.max_result_chars)
    return ToolRegistry(tools, limits, redact, config.tools.require_user_request)
