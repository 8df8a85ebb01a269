"""Everything a turn needs, built once from the config and shared.

The server and ``nanobot agent`` both run turns through these same objects,
so the CLI check exercises exactly the path the API uses.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from nanobot.agent.background import BackgroundTurns
from nanobot.agent.context import WorkspaceContext
from nanobot.agent.loop import DEFAULT_SYSTEM_PROMPT, AgentLoop
from nanobot.config import Config
from nanobot.cron.scheduler import Scheduler
from nanobot.cron.sqlite_store import SqliteCronStore
from nanobot.cron.store import CronStore
from nanobot.files.pool import Extractor
from nanobot.files.retention import UploadCleaner
from nanobot.metrics import Metrics
from nanobot.outbound.base import Outbox
from nanobot.outbound.sqlite_outbox import SqliteOutbox
from nanobot.providers.base import Provider
from nanobot.providers.echo import EchoProvider
from nanobot.providers.openai_compat import OpenAICompatProvider
from nanobot.redact import Redactor
from nanobot.responses.store import ResponseCleaner, ResponseStore, SqliteResponseStore
from nanobot.sessions.locks import SessionLocks, SessionOrdering, SharedSessionLocks
from nanobot.sessions.store import SessionStore, SqliteSessionStore
from nanobot.storage.db import Database
from nanobot.storage.private import private_dir
from nanobot.storage.safedir import SafeDir
from nanobot.storage.state import database_path, media, prepare_state
from nanobot.tools import build_registry, build_tools, workspace_of
from nanobot.tools.mcp_hub import McpTools, mcp_hub
from nanobot.tools.spawn import HiddenTools, Subagents


def make_provider(config: Config, redact: Redactor | None = None) -> Provider:
    defaults = config.agents.defaults
    if defaults.provider == "echo":
        return EchoProvider(defaults.model)
    return OpenAICompatProvider(
        defaults.provider,
        config.providers[defaults.provider],
        defaults,
        pool_size=max(100, config.api.max_concurrent_requests),
        redact=redact,
    )


def lock_path(config: Config) -> Path:
    """Where the workers of one server share their session locks."""
    return config.state_dir / "sessions.lock"


@dataclass
class Storage:
    """Where sessions, their ordering, stored responses, the outbound queue and the scheduled jobs live."""

    sessions: SessionStore
    locks: SessionOrdering
    outbox: Outbox
    cron: CronStore
    responses: ResponseStore
    start: Callable[[], Awaitable[None]]  # after the fork: pools, schema
    close: Callable[[], Awaitable[None]]
    problem: Callable[[], str | None]  # why the database cannot be used, or None


def sqlite_storage(config: Config, lock_fd: int | None = None) -> Storage:
    """The embedded default: ``<stateDir>/nanobot.db``, checked as it opens."""
    db = Database(database_path(config), verify=True)
    # The cache only has to cover the window sent to the LLM, and is
    # bounded in bytes (api.historyCacheBytes), not sessions.
    history = config.agents.defaults.max_history_messages
    # With several workers a turn may run in any of them: the lock is
    # shared through a file, and a cached window is trusted only while
    # its session's version there has not moved.
    shared = None
    if config.api.workers > 1:
        shared = SharedSessionLocks(lock_fd if lock_fd is not None else lock_path(config))
    sessions = SqliteSessionStore(
        db, cache_bytes=config.api.history_cache_bytes, cache_messages=max(16, history + 8), versions=shared
    )
    locks: SessionOrdering = shared if shared is not None else SessionLocks()
    outbox = SqliteOutbox(db, config.channels)
    cron = SqliteCronStore(db)

    async def start() -> None:
        await outbox.start()

    async def close() -> None:
        await outbox.close()
        await sessions.close()
        db.close()

    return Storage(sessions, locks, outbox, cron, SqliteResponseStore(db), start, close, lambda: None)


def postgres_storage(config: Config) -> Storage:
    """Sessions, ordering and the queue shared by every node (``database.url``)."""
    # Imported here: only a PostgreSQL deployment loads asyncpg and these modules.
    from nanobot.cron.pg_store import CHANNEL as CRON_CHANNEL
    from nanobot.cron.pg_store import PgCronStore
    from nanobot.outbound.pg_outbox import CHANNEL, PgOutbox
    from nanobot.responses.pg_store import PgResponseStore
    from nanobot.sessions.pg_locks import PgSessionOrdering
    from nanobot.sessions.pg_store import PgSessionStore
    from nanobot.storage.pg import PgDatabase

    url = config.database.url
    assert url, "called only when database.url is set"
    db = PgDatabase(url, config.database.pool_size)
    locks = PgSessionOrdering(db)
    history = config.agents.defaults.max_history_messages
    sessions = PgSessionStore(
        db, fence=locks, cache_bytes=config.api.history_cache_bytes, cache_messages=max(16, history + 8)
    )
    outbox = PgOutbox(db, config.channels)
    locks.connection.listen(CHANNEL, outbox.notified)
    db.on_up(outbox.wake)  # rows queued during an outage go out at once

    async def start() -> None:
        await db.start()
        locks.connection.ensure()
        await outbox.start()

    async def close() -> None:
        await outbox.close()
        await locks.close()
        await sessions.close()
        await db.close()

    cron = PgCronStore(db)
    locks.connection.listen(CRON_CHANNEL, cron.notified)
    db.on_up(cron.notified)  # due times passed during an outage fire at once
    return Storage(sessions, locks, outbox, cron, PgResponseStore(db), start, close, lambda: db.problem)


def make_storage(config: Config, lock_fd: int | None = None) -> Storage:
    """SQLite in the state folder, or PostgreSQL when ``database.url`` is set."""
    return postgres_storage(config) if config.database.url else sqlite_storage(config, lock_fd)


CPU_THREADS = 4


async def prestart_threads(executor: ThreadPoolExecutor, count: int) -> None:
    """Make ``executor`` start ``count`` threads (jobs that wait for each other)."""
    barrier = threading.Barrier(count)
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(loop.run_in_executor(executor, barrier.wait, 5.0) for _ in range(count)))


@dataclass
class Services:
    config: Config
    storage: Storage
    provider: Provider
    sessions: SessionStore
    locks: SessionOrdering
    outbox: Outbox
    extractor: Extractor
    agent: AgentLoop
    metrics: Metrics
    redact: Redactor  # every configured secret out of client-visible text
    cleaner: UploadCleaner
    responses: ResponseStore  # stored /v1/responses, in the same store as sessions
    response_cleaner: ResponseCleaner
    mcp: McpTools  # tools.mcpServers, connected in the background
    scheduler: Scheduler  # fires cron jobs; started by the server only (start_background)
    subagents: Subagents

    @classmethod
    def build(cls, config: Config, lock_fd: int | None = None) -> Services:
        """``lock_fd``: with several workers, the session lock file their parent opened."""
        private_dir(config.workspace)
        prepare_state(config)  # before anything opens a file there
        storage = make_storage(config, lock_fd)
        redact = Redactor.from_config(config)
        provider = make_provider(config, redact)
        extractor = Extractor(config.api.files.limits())
        ws = workspace_of(config)
        metrics = Metrics()
        # Jobs and subagents run turns of the agent whose tools start them: bound below.
        turns = BackgroundTurns(storage.locks, storage.outbox)
        scheduler = Scheduler(storage.cron, turns, metrics, config.api.timeout)
        storage.cron.watch(scheduler.wake)
        subagents = Subagents(config.tools.spawn, turns, metrics)
        built = build_tools(
            config, outbox=storage.outbox, extractor=extractor, workspace=ws, cron=storage.cron, subagents=subagents
        )
        tools = build_registry(config, built, redact if redact else None)
        # A configured prompt is sent as written (plus the workspace files); the
        # built-in one also tells the model about its workspace and memory.
        custom = config.agents.defaults.system_prompt
        context = WorkspaceContext(
            custom or DEFAULT_SYSTEM_PROMPT, ws, file_tools=config.tools.file.enabled and not custom
        )
        agent = AgentLoop(provider, storage.sessions, tools, config.agents.defaults, context)
        turns.agent = agent
        subagents.agent = AgentLoop(provider, storage.sessions, HiddenTools(tools), config.agents.defaults, context)
        return cls(
            config=config,
            storage=storage,
            provider=provider,
            sessions=storage.sessions,
            locks=storage.locks,
            outbox=storage.outbox,
            extractor=extractor,
            agent=agent,
            metrics=metrics,
            redact=redact,
            cleaner=UploadCleaner(media(config), config.api.files.retention_days),
            responses=storage.responses,
            response_cleaner=ResponseCleaner(storage.responses, config.api.responses.retention_days),
            mcp=mcp_hub(config.tools.mcp_servers, tools.add, max_result_chars=config.tools.max_result_chars),
            scheduler=scheduler,
            subagents=subagents,
        )

    @property
    def media_dir(self) -> SafeDir:
        """Uploads: in the state folder, never reachable by the agent's tools."""
        return media(self.config)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # asyncio.to_thread's pool (base64 of big files, joining big bodies,
        # saving uploads), with its threads started now rather than on the
        # loop in the middle of a burst of uploads (see Extractor.warm).
        executor = ThreadPoolExecutor(max_workers=CPU_THREADS, thread_name_prefix="nanobot-cpu")
        loop.set_default_executor(executor)
        await prestart_threads(executor, CPU_THREADS)
        await self.extractor.warm()
        await self.storage.start()
        self.cleaner.start()
        self.response_cleaner.start()
        await self.mcp.start()  # in the background; after the fork, so each worker has its own sessions

    async def start_background(self) -> None:
        """Fire scheduled jobs from this process (the server; ``nanobot agent`` does not, it
        would cut short the fires it claimed when it exits)."""
        await self.scheduler.start()

    def database_problem(self) -> str | None:
        """Why the database cannot be used now (for ``/health``), or None."""
        return self.storage.problem()

    async def close(self) -> None:
        # First, while the store and queue are open: cut-short fires and subagents record that.
        await self.scheduler.close()
        await self.subagents.close()
        await self.mcp.close()
        await self.agent.tools.close()
        await self.cleaner.close()
        await self.response_cleaner.close()
        await self.storage.close()
        await self.extractor.close()
        await self.provider.close()
