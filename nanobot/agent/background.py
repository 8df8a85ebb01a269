"""Turns nobody waits on: a scheduled job's fire, a subagent's task.

A background turn takes its session's lock like any request (so it runs
between the session's other turns, in the order the lock gives), runs the
agent to the end and commits like any turn; its reply goes on the outbound
queue when the turn's channel is a platform one (Telegram, webhook). A
turn of the synthetic ``api``/``cli`` channels is only recorded.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing
from typing import Any

from nanobot.agent.loop import AgentLoop, TurnDone, TurnInput
from nanobot.agent.tools import TurnScope
from nanobot.outbound.base import Outbox
from nanobot.outbound.channels import KNOWN_CHANNELS
from nanobot.sessions.locks import SessionOrdering

log = logging.getLogger("nanobot.background")


class BackgroundTurns:
    def __init__(self, locks: SessionOrdering, outbox: Outbox) -> None:
        self._locks = locks
        self._outbox = outbox
        self.agent: AgentLoop | None = None  # set once the agent is built (its tools need this object)

    async def run(
        self,
        session_key: str,
        scope: TurnScope,
        text: str,
        agent: AgentLoop | None = None,
        instructions: str | None = None,
    ) -> str:
        """One turn of ``text`` on ``session_key``; its reply. Bound it with ``asyncio.timeout``."""
        agent = agent or self.agent
        assert agent is not None, "bound at build time"
        async with self._locks.hold(session_key):
            user = {"role": "user", "content": text}
            history = await agent.history(session_key)
            turn = TurnInput(session_key, history, user, user, scope, incremental=False, instructions=instructions)
            reply = ""
            async with aclosing(agent.run(turn)) as events:
                async for event in events:
                    if isinstance(event, TurnDone):
                        reply = event.text
            return reply

    async def record(self, session_key: str, messages: list[dict[str, Any]], wait: float | None = None) -> None:
        """Append ``messages`` to ``session_key`` as one turn, in its order with the session's turns."""
        assert self.agent is not None, "bound at build time"
        async with asyncio.timeout(wait), self._locks.hold(session_key):
            await self.agent.store.append_turn(session_key, messages)

    async def deliver(self, channel: str, chat_id: str, text: str) -> str:
        """Queue ``text`` for ``channel:chat_id`` when that is a platform; what happened, in words."""
        if channel not in KNOWN_CHANNELS:
            return "recorded in the session"
        if not text.strip():
            return "empty reply, nothing queued"
        queued = await self._outbox.enqueue(channel, chat_id, text)
        return f"queued to {channel}:{chat_id} (outbox id {queued.id}, {queued.state})"
