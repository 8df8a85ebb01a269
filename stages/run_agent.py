"""run_agent: start the turn; ``ctx.events`` is the agent's event stream.

The turn itself runs as ``encode`` drains the events; the stream is closed
when the request ends, whatever happened, so no provider call outlives it.
"""

from __future__ import annotations

from nanobot.context import RequestContext
from nanobot.turn import user_turn


class RunAgent:
    name = "run_agent"
    requires = (
        "session_key",
        "session_id",
        "history",
        "text",
        "attachments",
        "stream",
        "instructions",
        "client_history",
        "response_format",
        "client_tools",
        "resumes",
        "paused",
        "client_results",
        "services",
        "exit_stack",
    )
    provides = ("events",)
    channel = "api"

    async def __call__(self, ctx: RequestContext) -> None:
        turn = user_turn(
            channel=self.channel,
            chat_id=ctx.session_id or "default",
            session_key=ctx.session_key,
            history=ctx.history,
            text=ctx.text,
            attachments=ctx.attachments,
            incremental=ctx.stream,
            instructions=ctx.instructions,
            remember=ctx.client_history is None,
            response_format=ctx.response_format,
            client_tools=ctx.client_tools,
            paused=ctx.paused,
            results=ctx.client_results,
            resumes=ctx.resumes,
        )
        events = ctx.services.agent.run(turn)
        ctx.exit_stack.push_async_callback(events.aclose)
        ctx.events = events


stage = RunAgent()
