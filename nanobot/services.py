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

from nanobot.agent.context import WorkspaceContext
from nanobot.agent.loop import DEFAULT_SYSTEM_PROMPT, AgentLoop
from nanobot.config import Config
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
from nanobot.tools import build_registry, build_tools, workspace_of
from nanobot.tools.mcp import McpHub


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
    return config.workspace / "sessions.lock"


@dataclass
class Storage:
    """Where sessions, their ordering, stored responses and the outbound queue live."""

    sessions: SessionStore
    locks: SessionOrdering
    outbox: Outbox
    responses: ResponseStore
    start: Callable[[], Awaitable[None]]  # after the fork: pools, schema
    close: Callable[[], Awaitable[None]]
    problem: Callable[[], str | None]  # why the database cannot be used, or None


def sqlite_storage(config: Config, lock_fd: int | None = None) -> Storage:
    """The embedded default: ``<workspace>/nanobot.db``."""
    db = Database(config.workspace / "nanobot.db")
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

    async def start() -> None:
        await outbox.start()

    async def close() -> None:
        await outbox.close()
        await sessions.close()
        db.close()

    return Storage(sessions, locks, outbox, SqliteResponseStore(db), start, close, lambda: None)


def postgres_storage(config: Config) -> Storage:
    """Sessions, ordering and the queue shared by every node (``database.url``)."""
    # Imported here: only a PostgreSQL deployment loads asyncpg and these modules.
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

    return Storage(sessions, locks, outbox, PgResponseStore(db), start, close, lambda: db.problem)


def make_storage(config: Config, lock_fd: int | None = None) -> Storage:
    """SQLite in the workspace, or PostgreSQL when ``database.url`` is set."""
    return postgres_storage(config) if config.database.url else sqlite_storage(config, lock_fd)


CPU_THREADS = 4
MEDIA_DIR = Path("media") / "api"  # uploads, under the workspace


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
    mcp: McpHub  # tools.mcpServers, connected in the background

    @classmethod
    def build(cls, config: Config, lock_fd: int | None = None) -> Services:
        """``lock_fd``: with several workers, the session lock file their parent opened."""
        workspace = config.workspace
        private_dir(workspace)
        storage = make_storage(config, lock_fd)
        redact = Redactor.from_config(config)
        provider = make_provider(config, redact)
        extractor = Extractor(config.api.files.limits())
        ws = workspace_of(config)
        built = build_tools(config, outbox=storage.outbox, extractor=extractor, workspace=ws)
        tools = build_registry(config, built, redact if redact else None)
        # A configured prompt is sent as written (plus the workspace files); the
        # built-in one also tells the model about its workspace and memory.
        custom = config.agents.defaults.system_prompt
        context = WorkspaceContext(
            custom or DEFAULT_SYSTEM_PROMPT, ws, file_tools=config.tools.file.enabled and not custom
        )
        return cls(
            config=config,
            storage=storage,
            provider=provider,
            sessions=storage.sessions,
            locks=storage.locks,
            outbox=storage.outbox,
            extractor=extractor,
            agent=AgentLoop(provider, storage.sessions, tools, config.agents.defaults, context),
            metrics=Metrics(),
            redact=redact,
            cleaner=UploadCleaner(workspace / MEDIA_DIR, config.api.files.retention_days),
            responses=storage.responses,
            response_cleaner=ResponseCleaner(storage.responses, config.api.responses.retention_days),
            mcp=McpHub(config.tools.mcp_servers, tools.add, max_result_chars=config.tools.max_result_chars),
        )

    @property
    def media_dir(self) -> Path:
        return self.config.workspace / MEDIA_DIR

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

    def database_problem(self) -> str | None:
        """Why the database cannot be used now (for ``/health``), or None."""
        return self.storage.problem()

    async def close(self) -> None:
        await self.mcp.close()
        await self.agent.tools.close()
        await self.cleaner.close()
        await self.response_cleaner.close()
        await self.storage.close()
        await self.extractor.close()
        await self.provider.close()
