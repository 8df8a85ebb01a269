"""The ``nanobot`` command: serve, agent, outbox."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from nanobot.config import Config, ConfigError, load_config


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    if getattr(args, "workspace", None):
        config.agents.defaults.workspace = args.workspace
    if getattr(args, "host", None):
        config.api.host = args.host
    if getattr(args, "port", None) is not None:
        config.api.port = args.port
    config.check()
    return config


def run_event_loop(main: Any) -> Any:
    """Run ``main`` on uvloop when it is installed (less CPU per socket
    operation), else on the standard asyncio loop. NANOBOT_LOOP=asyncio forces
    the standard loop, for comparison."""
    if os.environ.get("NANOBOT_LOOP") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main)
    return asyncio.run(main)


def _serve(args: argparse.Namespace) -> int:
    from nanobot.pipeline import Pipeline
    from nanobot.server.app import announce, listen_per_worker, serve

    config = _load(args)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if config.api.workers == 1:
        run_event_loop(serve(config, verbose=args.verbose))
        return 0
    from nanobot.server.workers import run_workers

    Pipeline.from_names(config.pipeline.stages)  # config errors once, before forking
    shards = listen_per_worker(config, config.api.workers)

    def serve_one(index: int, ready: Callable[[], None]) -> None:
        mine = shards[index]
        for sock in {s for shard in shards for s in shard} - set(mine):
            sock.close()  # a worker holding another's socket would keep it open after that one died
        run_event_loop(serve(config, verbose=args.verbose, sockets=mine, ready=ready))

    return run_workers(
        config.api.workers,
        serve_one,
        announce=lambda: announce(config, shards[0]),
        stop_timeout=config.api.shutdown_grace + 10,
    )


def _agent(args: argparse.Namespace) -> int:
    from nanobot.cli_agent import agent_main

    config = _load(args)
    files = [Path(f) for f in args.file]
    return asyncio.run(agent_main(config, args.message, args.session, files))


def _config_check(args: argparse.Namespace) -> int:
    from nanobot.config import find_config_path, to_public_dict
    from nanobot.pipeline import Pipeline
    from nanobot.server.app import check_bind

    config = _load(args)
    Pipeline.from_names(config.pipeline.stages)
    check_bind(config)
    path = find_config_path(args.config)
    print(f"# config: {path or 'none found, all defaults'}: OK", file=sys.stderr)
    print(json.dumps(to_public_dict(config), indent=2))
    if config.tools.mcp_servers:
        from nanobot.tools.mcp import McpHub

        logging.disable(logging.WARNING)  # the report below says the same, once
        for line in asyncio.run(McpHub(config.tools.mcp_servers).report()):
            print(f"# {line}", file=sys.stderr)
    return 0


def _outbox(args: argparse.Namespace) -> int:
    from nanobot.outbound.sqlite_outbox import SqliteOutbox
    from nanobot.storage.db import Database

    config = _load(args)
    path = config.workspace / "nanobot.db"
    if not path.exists():
        print("outbox is empty (no database yet)")
        return 0

    async def rows():
        db = Database(path)
        try:
            outbox = SqliteOutbox(db, config.channels)
            states = None if args.all else ("pending", "failed", "undeliverable")
            return await outbox.rows(states, limit=args.limit)
        finally:
            db.close()

    found = asyncio.run(rows())
    if not found:
        print("outbox: nothing queued or failed" if not args.all else "outbox is empty")
        return 0
    print(f"{'id':>6}  {'state':<13} {'channel':<9} {'chat_id':<16} {'tries':>5}  {'updated':<19}  content / last error")
    for r in found:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.updated))
        preview = r.content.replace("\n", " ")[:40]
        extra = f"  ({r.last_error})" if r.last_error else ""
        print(f"{r.id:>6}  {r.state:<13} {r.channel:<9} {r.chat_id:<16} {r.attempts:>5}  {when}  {preview}{extra}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nanobot", description="A local AI agent behind an OpenAI-compatible API.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="PATH", help="config file (JSON, or YAML for .yaml/.yml)")
        p.add_argument("--workspace", metavar="DIR", help="override agents.defaults.workspace")

    serve = sub.add_parser("serve", help="run the HTTP API server")
    common(serve)
    serve.add_argument("--host", help="override api.host")
    serve.add_argument("--port", type=int, help="override api.port (0: any free port)")
    serve.add_argument("--verbose", action="store_true", help="log every request and debug details")
    serve.set_defaults(func=_serve)

    agent = sub.add_parser(
        "agent", help="chat with the agent in the terminal (one turn with -m, else an interactive prompt)"
    )
    common(agent)
    agent.add_argument("-m", "--message", help="send this message, print the reply as it streams, and exit")
    agent.add_argument("--file", action="append", default=[], metavar="PATH",
                       help="attach a file (repeatable); read exactly as the API reads uploads")
    agent.add_argument("--session", default="default", help="session id, stored as cli:ID (default: default)")
    agent.set_defaults(func=_agent)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate the config and print the resolved settings, secrets masked")
    common(check)
    check.set_defaults(func=_config_check)

    outbox = sub.add_parser("outbox", help="list queued, failed and undeliverable outbound messages")
    common(outbox)
    outbox.add_argument("--all", action="store_true", help="include delivered messages")
    outbox.add_argument("--limit", type=int, default=100)
    outbox.set_defaults(func=_outbox)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"nanobot: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
