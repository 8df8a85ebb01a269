"""Everything a turn needs, built once from the config and shared.

The server and ``nanobot agent`` both run turns through these same objects,
so the CLI check exercises exactly the path the API uses.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from nanobot.agent.loop import AgentLoop
from nanobot.agent.tools import MessageTool, ToolRegistry
from nanobot.config import Config
from nanobot.files.pool import Extractor
from nanobot.metrics import Metrics
from nanobot.outbound.sqlite_outbox import SqliteOutbox
from nanobot.providers.base import Provider
from nanobot.providers.echo import EchoProvider
from nanobot.providers.openai_compat import OpenAICompatProvider
from nanobot.sessions.locks import SessionLocks, SessionOrdering, SharedSessionLocks
from nanobot.sessions.store import SqliteSessionStore
from nanobot.storage.db import Database
from nanobot.tools.mcp import McpHub
from nanobot.tools.web import web_tools


def make_provider(config: Config) -> Provider:
    defaults = config.agents.defaults
    if defaults.provider == "echo":
        return EchoProvider(defaults.model)
    return OpenAICompatProvider(
        defaults.provider,
        config.providers[defaults.provider],
        defaults,
        pool_size=max(100, config.api.max_concurrent_requests),
    )


CPU_THREADS = 4


async def prestart_threads(executor: ThreadPoolExecutor, count: int) -> None:
    """Make ``executor`` start ``count`` threads (jobs that wait for each other)."""
    barrier = threading.Barrier(count)
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(loop.run_in_executor(executor, barrier.wait, 5.0) for _ in range(count)))


@dataclass
class Services:
    config: Config
    db: Database
    provider: Provider
    sessions: SqliteSessionStore
    locks: SessionOrdering
    outbox: SqliteOutbox
    extractor: Extractor
    agent: AgentLoop
    metrics: Metrics
    mcp: McpHub

    @classmethod
    def build(cls, config: Config) -> "Services":
        workspace = config.workspace
        workspace.mkdir(parents=True, exist_ok=True)
        db = Database(workspace / "nanobot.db")
        provider = make_provider(config)
        # The cache only has to cover the window sent to the LLM; 1024 recent
        # sessions of ~60 messages bound it to tens of MB.
        history = config.agents.defaults.max_history_messages
        # With several workers a turn may run in any of them: the lock is
        # shared through a file, and a cached window is trusted only while
        # its session's version there has not moved.
        shared = SharedSessionLocks(workspace / "sessions.lock") if config.api.workers > 1 else None
        sessions = SqliteSessionStore(db, cache_sessions=1024, cache_messages=max(16, history + 8), versions=shared)
        locks: SessionOrdering = shared if shared is not None else SessionLocks()
        outbox = SqliteOutbox(db, config.channels)
        tools = ToolRegistry([MessageTool(outbox), *web_tools(config)])
        return cls(
            config=config,
            db=db,
            provider=provider,
            sessions=sessions,
            locks=locks,
            outbox=outbox,
            extractor=Extractor(config.api.files.limits()),
            agent=AgentLoop(provider, sessions, tools, config.agents.defaults),
            metrics=Metrics(),
            mcp=McpHub(config.tools.mcp_servers, tools.add, max_result_chars=config.tools.max_result_chars),
        )

    @property
    def media_dir(self):
        return self.config.workspace / "media" / "api"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # asyncio.to_thread's pool (base64 of big files, joining big bodies,
        # saving uploads), with its threads started now rather than on the
        # loop in the middle of a burst of uploads (see Extractor.warm).
        executor = ThreadPoolExecutor(max_workers=CPU_THREADS, thread_name_prefix="nanobot-cpu")
        loop.set_default_executor(executor)
        await prestart_threads(executor, CPU_THREADS)
        await self.extractor.warm()
        await self.outbox.start()
        await self.mcp.start()  # in the background; after fork, so each worker has its own sessions

    async def close(self) -> None:
        await self.mcp.close()
        await self.agent.tools.close()
        await self.outbox.close()
        await self.extractor.close()
        await self.provider.close()
        await self.sessions.close()
        self.db.close()
