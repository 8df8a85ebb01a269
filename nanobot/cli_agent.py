"""``nanobot agent``: turns through the same agent, services and file reading as the API.

One message with ``-m`` (the CLI check before debugging the API), or an
interactive prompt without it. The reply is printed as it streams.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TextIO

from nanobot.agent.loop import ToolProgress, TurnDone
from nanobot.config import Config
from nanobot.context import IncomingFile
from nanobot.errors import ApiError
from nanobot.files.incoming import read_file
from nanobot.services import Services
from nanobot.turn import DEFAULT_FILE_PROMPT, user_turn

PROMPT = "you> "


def tool_line(event: ToolProgress) -> str:
    """How a tool call shows on stderr: started, done, or failed."""
    if event.status != "finished":
        return f"[tool] {event.name} ..."
    return f"[tool] {event.name} {'done' if event.ok is not False else 'failed'}"


async def run_turn(
    services: Services, session: str, message: str, files: list[Path], out: TextIO, progress: TextIO | None = None
) -> None:
    """One turn on ``cli:<session>``; raises ApiError or TimeoutError on failure.

    The reply goes to ``out`` as it streams; tool calls are shown on ``progress``
    (stderr), one line each, so the reply on stdout stays clean.
    """
    progress = progress or sys.stderr
    config = services.config
    key = f"cli:{session}"
    async with asyncio.timeout(config.api.timeout):
        attachments = []
        for i, path in enumerate(files):
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ApiError(f"cannot read {path}: {exc.strerror}", status=400) from None
            attachments.append(
                await read_file(services, IncomingFile(param=f"--file[{i}]", filename=path.name, data=data))
            )
        text = message if message.strip() else DEFAULT_FILE_PROMPT
        async with services.locks.hold(key):
            history = await services.agent.history(key)
            turn = user_turn(
                channel="cli", chat_id=session, session_key=key, history=history, text=text, attachments=attachments
            )
            events = services.agent.run(turn)
            try:
                async for event in events:
                    if type(event) is str:
                        out.write(event)
                        out.flush()
                    elif type(event) is ToolProgress:
                        progress.write(tool_line(event) + "\n")
                        progress.flush()
                    elif isinstance(event, TurnDone) and not event.text.endswith("\n"):
                        out.write("\n")
            finally:
                await events.aclose()


def _report(exc: BaseException, config: Config) -> None:
    if isinstance(exc, ApiError):
        print(f"\nerror: {exc.message}", file=sys.stderr)
    else:
        print(f"\nerror: the turn took longer than api.timeout ({config.api.timeout:g} s)", file=sys.stderr)


async def agent_main(config: Config, message: str | None, session: str, files: list[Path]) -> int:
    services = Services.build(config)
    try:
        await services.start()
        await services.mcp.wait()  # one turn from the terminal: offer the MCP tools from the start
        services.subagents.on_report = lambda text: print(f"\n{text}", flush=True)
        if message is not None or files:
            try:
                await run_turn(services, session, message or "", files, sys.stdout)
            except (ApiError, TimeoutError) as exc:
                _report(exc, config)
                return 1
            if len(services.subagents):  # spawned in this turn: their results are the rest of the answer
                print(f"[waiting for {len(services.subagents)} subagent(s); Ctrl-C stops them]", file=sys.stderr)
                await services.subagents.wait()
            return 0
        return await _interactive(services, session)
    finally:
        await services.close()


async def _interactive(services: Services, session: str) -> int:
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"nanobot agent, session cli:{session}. Ctrl-D or /exit to leave.")
    loop = asyncio.get_running_loop()
    while True:
        if interactive:
            sys.stdout.write(PROMPT)
            sys.stdout.flush()
        # input() blocks; the outbox worker keeps running on the loop meanwhile.
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return 0
        line = line.strip()
        if line in ("/exit", "/quit"):
            return 0
        if not line:
            continue
        try:
            await run_turn(services, session, line, [], sys.stdout)
        except (ApiError, TimeoutError) as exc:
            _report(exc, services.config)
