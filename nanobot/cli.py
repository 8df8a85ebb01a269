"""The ``nanobot`` command: serve, agent, outbox."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
import time

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


def _serve(args: argparse.Namespace) -> int:
    from nanobot.server.app import serve

    config = _load(args)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(config, verbose=args.verbose))
    return 0


async def _agent_turn(config: Config, message: str, session: str) -> int:
    from nanobot.agent.loop import TurnDone, TurnInput
    from nanobot.agent.tools import TurnScope
    from nanobot.errors import ApiError
    from nanobot.services import Services

    services = Services.build(config)
    try:
        await services.start()
        key = f"cli:{session}"
        async with services.locks.hold(key):
            history = await services.agent.history(key)
            user = {"role": "user", "content": message}
            turn = TurnInput(key, history, user, user, TurnScope(channel="cli", chat_id=session))
            try:
                async with asyncio.timeout(config.api.timeout):
                    async for event in services.agent.run(turn):
                        if type(event) is str:
                            sys.stdout.write(event)
                            sys.stdout.flush()
                        elif isinstance(event, TurnDone) and not event.text.endswith("\n"):
                            sys.stdout.write("\n")
            except ApiError as err:
                print(f"\nerror: {err.message}", file=sys.stderr)
                return 1
            except TimeoutError:
                print(f"\nerror: the turn took longer than api.timeout ({config.api.timeout:g} s)", file=sys.stderr)
                return 1
        return 0
    finally:
        await services.close()


def _agent(args: argparse.Namespace) -> int:
    config = _load(args)
    return asyncio.run(_agent_turn(config, args.message, args.session))


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

    agent = sub.add_parser("agent", help="run one turn through the agent and print the reply")
    common(agent)
    agent.add_argument("-m", "--message", required=True, help="the user message")
    agent.add_argument("--session", default="default", help="session id (stored as cli:ID)")
    agent.set_defaults(func=_agent)

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
