"""What a built-in tool class gives the registry in :mod:`nanobot.tools`.

Each tool owns its name, its schema, whether the config enables it, a
startup check of its environment, and how it is built from :class:`ToolDeps`.
:data:`nanobot.tools.BUILTIN_TOOLS` lists the classes in the order they are
offered; adding a tool is one module and one line there. Tools that are not
known at startup (MCP servers' tools) go in through ``ToolRegistry.add``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nanobot.agent.tools import Tool
    from nanobot.config import Config
    from nanobot.cron.store import CronStore
    from nanobot.files.pool import Extractor
    from nanobot.outbound.base import Outbox
    from nanobot.tools.paths import Workspace


@dataclass(frozen=True)
class ToolDeps:
    """What a tool may need to be built: one object, so a new need is one field here."""

    config: Config
    workspace: Workspace
    outbox: Outbox
    extractor: Extractor
    cron: CronStore | None = None  # the server's (None where no scheduler runs)
    subagents: object | None = None  # a nanobot.tools.spawn.Subagents (which imports this module)


class BuiltinTool:
    """A tool class the registry lists; subclasses set ``name`` and ``schema`` and implement ``build``.

    The defaults: always enabled, nothing to check at startup.
    """

    name: str
    schema: dict[str, Any]

    @classmethod
    def enabled(cls, config: Config) -> bool:
        """The config offers this tool (nothing is built or started)."""
        return True

    @classmethod
    def check(cls, config: Config) -> None:
        """Startup check of what the tool needs (a sandbox, a binary); raises ConfigError (exit 2)."""

    @classmethod
    def build(cls, deps: ToolDeps) -> Tool:
        raise NotImplementedError
