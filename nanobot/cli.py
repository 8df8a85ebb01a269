"""The ``nanobot`` command: serve, agent, config check, outbox, cron, db copy (``COMMANDS``).

Each command imports what it uses inside its own function, so ``nanobot
--help`` and ``nanobot agent`` start without loading the HTTP server, the
document libraries or asyncpg.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nanobot.config import Config, ConfigError, load_config


def _load(args: argparse.Namespace, tools: bool = True) -> Config:
    """The checked config; ``tools``: also check the tools' environment (the sandbox)."""
    config = load_config(args.config)
    if getattr(args, "workspace", None):
        config.agents.defaults.workspace = args.workspace
    if getattr(args, "host", None):
        config.api.host = args.host
    if getattr(args, "port", None) is not None:
        config.api.port = args.port
    config.check()
    url = config.database.url
    if url is not None and not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("database.url: expected a postgresql:// URL, or null for SQLite in the state folder")
    if tools:
        # per-command import (module docstring)
        from nanobot.tools import check_tools

        check_tools(config)
    return config


def run_event_loop(main: Any) -> Any:
    """Run ``main`` on uvloop when it is installed (less CPU per socket
    operation), else on the standard asyncio loop. NANOBOT_LOOP=asyncio forces
    the standard loop, for comparison."""
    if os.environ.get("NANOBOT_LOOP") != "asyncio":
        try:
            # per-command import (module docstring)
            import uvloop
        except ImportError:
            pass
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main)
    return asyncio.run(main)


def _serve(args: argparse.Namespace) -> int:
    # per-command import (module docstring)
    from nanobot.pipeline import Pipeline
    from nanobot.server.app import announce, listen_per_worker, serve

    config = _load(args)
    _configure_logging(config, logging.INFO if args.verbose else logging.WARNING)
    if config.api.workers == 1:
        run_event_loop(serve(config, verbose=args.verbose))
        return 0
    from nanobot.server.workers import run_workers
    from nanobot.services import lock_path
    from nanobot.sessions.locks import open_lock_file
    from nanobot.storage.private import private_dir
    from nanobot.storage.state import prepare_state

    Pipeline.from_names(config.pipeline.stages)  # config errors once, before forking
    Pipeline.for_responses(config.pipeline.stages)
    # Opened once, here: every worker, and any forked later to replace one,
    # locks this inode even if the path is deleted or replaced meanwhile.
    private_dir(config.workspace)
    prepare_state(config)  # once, before forking: a refusal is one message, exit 2
    lock_fd = open_lock_file(lock_path(config))
    shards = listen_per_worker(config, config.api.workers)

    def serve_one(index: int, ready: Callable[[], None]) -> None:
        mine = shards[index]
        for sock in {s for shard in shards for s in shard} - set(mine):
            sock.close()  # a worker holding another's socket would keep it open after that one died
        run_event_loop(serve(config, verbose=args.verbose, sockets=mine, ready=ready, lock_fd=lock_fd))

    return run_workers(
        config.api.workers,
        serve_one,
        announce=lambda: announce(config, shards[0]),
        stop_timeout=config.api.shutdown_grace + 10,
    )


def _configure_logging(config: Config, level: int) -> None:
    """Log to stderr, every record stripped of the config's secrets."""
    # per-command import (module docstring)
    from nanobot.redact import Redactor, install_log_redaction

    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction(Redactor.from_config(config))


def _agent(args: argparse.Namespace) -> int:
    # per-command import (module docstring)
    from nanobot.cli_agent import agent_main

    config = _load(args)
    _configure_logging(config, logging.WARNING)
    files = [Path(f) for f in args.file]
    return asyncio.run(agent_main(config, args.message, args.session, files))


def _config_check(args: argparse.Namespace) -> int:
    # per-command import (module docstring)
    from nanobot.config import find_config_path, to_public_dict
    from nanobot.pipeline import Pipeline
    from nanobot.redact import Redactor
    from nanobot.server.app import check_bind

    config = _load(args)
    Pipeline.from_names(config.pipeline.stages)
    Pipeline.for_responses(config.pipeline.stages)
    check_bind(config)
    path = find_config_path(args.config)
    print(f"# config: {path or 'none found, all defaults'}: OK", file=sys.stderr)
    print(f"# database: {_database_status(config)}", file=sys.stderr)
    from nanobot.tools import enabled_tool_names

    print(f"# tools: {', '.join(enabled_tool_names(config))}", file=sys.stderr)
    if config.tools.mcp_servers:
        _mcp_status(config)
    # Masked field by field; the redactor then catches a secret repeated elsewhere.
    print(Redactor.from_config(config)(json.dumps(to_public_dict(config), indent=2)))
    return 0


def _mcp_status(config: Config) -> None:
    """Each MCP server: connected or not (with the reason), and the tools it offers."""
    # per-command import (module docstring)
    from nanobot.redact import Redactor
    from nanobot.tools.mcp import McpHub

    redact = Redactor.from_config(config)  # a server's command line or URL may carry a token
    logging.disable(logging.WARNING)  # the report below says the same, once
    try:
        for line in asyncio.run(McpHub(config.tools.mcp_servers).report()):
            print(f"# {redact(line)}", file=sys.stderr)
    finally:
        logging.disable(logging.NOTSET)


def _database_status(config: Config) -> str:
    """Which database is in use (password masked) and whether it answers."""
    if not config.database.url:
        return f"SQLite at {config.state_dir / 'nanobot.db'} (state folder {config.state_dir})"
    # per-command import (module docstring)
    from nanobot.storage.pg import describe, masked_url, probe

    where = f"PostgreSQL at {masked_url(config.database.url)}"
    try:
        version = asyncio.run(probe(config.database.url))
    except Exception as exc:
        return f"{where}: NOT answering ({describe(exc)})"
    schema = f"schema version {version}" if version else "no tables yet (created at start)"
    return f"{where}: answers, {schema}"


def _outbox_rows(config: Config, states: tuple[str, ...] | None, limit: int) -> list[Any] | None:
    """The outbox's rows from the configured database; None when there is none yet."""
    if url := config.database.url:
        # Imported only for a PostgreSQL deployment: asyncpg is not loaded otherwise.
        from nanobot.outbound.pg_outbox import PgOutbox
        from nanobot.storage.pg import PgDatabase

        async def from_postgres() -> list[Any]:
            db = PgDatabase(url, 1)
            await db.start()
            try:
                return await PgOutbox(db, config.channels).rows(states, limit=limit)
            finally:
                await db.close()

        return asyncio.run(from_postgres())
    from nanobot.outbound.sqlite_outbox import SqliteOutbox
    from nanobot.storage.db import Database

    path = config.state_dir / "nanobot.db"
    if not path.exists():
        return None

    async def from_sqlite() -> list[Any]:
        db = Database(path)
        try:
            return await SqliteOutbox(db, config.channels).rows(states, limit=limit)
        finally:
            db.close()

    return asyncio.run(from_sqlite())


def _outbox(args: argparse.Namespace) -> int:
    # per-command import (module docstring)
    from nanobot.errors import DatabaseUnavailable
    from nanobot.redact import Redactor

    config = _load(args, tools=False)
    states = None if args.all else ("pending", "failed", "undeliverable")
    try:
        found = _outbox_rows(config, states, args.limit)
    except DatabaseUnavailable as exc:
        print(f"nanobot: {exc.message}", file=sys.stderr)
        return 1
    if found is None:
        print("outbox is empty (no database yet)")
        return 0
    redact = Redactor.from_config(config)
    if not found:
        print("outbox: nothing queued or failed" if not args.all else "outbox is empty")
        return 0
    print(
        f"{'id':>6}  {'state':<13} {'channel':<9} {'chat_id':<16} {'tries':>5}  {'updated':<19}  content / last error"
    )
    for r in found:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.updated))
        preview = r.content.replace("\n", " ")[:40]
        extra = f"  ({redact(r.last_error)})" if r.last_error else ""  # rows older versions wrote
        print(f"{r.id:>6}  {r.state:<13} {r.channel:<9} {r.chat_id:<16} {r.attempts:>5}  {when}  {preview}{extra}")
    return 0


# Every command, one line each, in the README's order: ``nanobot --help`` lists these.
COMMANDS = {
    "serve": "run the API server (--port 0 picks a free port)",
    "agent": 'one turn (-m "Hello!") or an interactive prompt, in session cli:ID',
    "config check": "validate the config; print the resolved settings, secrets masked",
    "outbox": "list queued, failed and undeliverable outbound messages",
    "cron list": "list the agent's scheduled jobs of every session, secrets masked",
    "cron remove": "delete a scheduled job by its id",
    "db copy": "copy an SQLite nanobot.db into database.url (PostgreSQL)",
}


def _version() -> str:
    try:
        return importlib.metadata.version("nanobot-ai")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (the nanobot-ai package is not installed)"


def _command_list() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    return "\n".join(["commands:", *lines, "", "`nanobot COMMAND --help` shows a command's options."])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nanobot",
        usage="nanobot [-h] [--version] COMMAND ...",
        description="A local AI agent behind an OpenAI-compatible API.",
        epilog=_command_list(),
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the list keeps one line per command
    )
    parser.add_argument("--version", action="version", version=f"nanobot {_version()}", help="print the version")
    # The commands are listed by the epilog, not by argparse (which wraps lines and names only "config", "db").
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help=argparse.SUPPRESS, prog="nanobot"
    )

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="PATH", help="config file (JSON, or YAML for .yaml/.yml)")
        p.add_argument("--workspace", metavar="DIR", help="override agents.defaults.workspace")

    serve = sub.add_parser("serve", description=COMMANDS["serve"])
    common(serve)
    serve.add_argument("--host", help="override api.host")
    serve.add_argument("--port", type=int, help="override api.port (0: any free port)")
    serve.add_argument("--verbose", action="store_true", help="log every request and debug details")
    serve.set_defaults(func=_serve)

    agent = sub.add_parser("agent", description=COMMANDS["agent"])
    common(agent)
    agent.add_argument("-m", "--message", help="send this message, print the reply as it streams, and exit")
    agent.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="PATH",
        help="attach a file (repeatable); read exactly as the API reads uploads",
    )
    agent.add_argument("--session", default="default", help="session id, stored as cli:ID (default: default)")
    agent.set_defaults(func=_agent)

    config = sub.add_parser("config", description="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help=COMMANDS["config check"], description=COMMANDS["config check"])
    common(check)
    check.set_defaults(func=_config_check)

    outbox = sub.add_parser("outbox", description=COMMANDS["outbox"])
    common(outbox)
    outbox.add_argument("--all", action="store_true", help="include delivered messages")
    outbox.add_argument("--limit", type=int, default=100)
    outbox.set_defaults(func=_outbox)
    cron = sub.add_parser("cron", description="the agent's scheduled jobs")
    cron_sub = cron.add_subparsers(dest="cron_command", required=True)
    cron_list = cron_sub.add_parser("list", help=COMMANDS["cron list"], description=COMMANDS["cron list"])
    common(cron_list)
    cron_list.set_defaults(func=_cron)
    cron_remove = cron_sub.add_parser("remove", help=COMMANDS["cron remove"], description=COMMANDS["cron remove"])
    common(cron_remove)
    cron_remove.add_argument("job_id", metavar="JOB_ID")
    cron_remove.set_defaults(func=_cron)
    db = sub.add_parser("db", description="database tools")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    copy = db_sub.add_parser("copy", help=COMMANDS["db copy"], description=COMMANDS["db copy"])
    common(copy)
    copy.add_argument("--from", dest="source", required=True, metavar="PATH", help="the nanobot.db to copy")
    copy.set_defaults(func=_db_copy)
    return parser


def _cron(args: argparse.Namespace) -> int:
    # per-command import (module docstring)
    from nanobot.cron.admin import list_jobs, remove_job

    config = _load(args, tools=False)
    if args.cron_command == "list":
        return int(asyncio.run(list_jobs(config)))
    return int(asyncio.run(remove_job(config, args.job_id)))


def _db_copy(args: argparse.Namespace) -> int:
    # per-command import (module docstring)
    from nanobot.storage.pg import describe, is_unavailable, masked_url
    from nanobot.storage.pg_copy import copy_database

    config = _load(args)
    if not config.database.url:
        raise ConfigError("database.url is not set: nothing to copy into (set it to a postgresql:// URL)")

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        result = asyncio.run(copy_database(Path(args.source), config.database.url, progress))
    except ValueError as exc:
        print(f"nanobot: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        print(f"nanobot: database {masked_url(config.database.url)} unavailable: {describe(exc)}", file=sys.stderr)
        return 1
    print(
        f"copied {result.sessions} sessions ({result.messages} messages), {result.outbox} outbound rows"
        f" and {result.cron} cron jobs"
        f" into {masked_url(config.database.url)}"
        + (f"; {result.skipped} sessions were there already" if result.skipped else "")
        + (f"; {result.responses} stored responses copied" if result.responses else "")
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(f"nanobot: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
