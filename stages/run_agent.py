"""run_agent: start the turn; ``ctx.events`` is the agent's event stream.

The turn itself runs as ``encode`` drains the events; the stream is closed
when the request ends, whatever happened, so no provider call outlives it.
"""

from __future__ import annotations

from typing import Any

from nanobot.agent.loop import TurnInput
from nanobot.agent.tools import TurnScope
from nanobot.context import Attachment, RequestContext


def user_messages(text: str, attachments: list[Attachment]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The user message for the LLM (with image data) and for history (placeholders)."""
    blocks = [text]
    for a in attachments:
        if a.kind != "image":
            blocks.append(f"[file: {a.name}]\n{a.text}\n[/file]")
    body = "\n\n".join(blocks)
    images = [a for a in attachments if a.kind == "image"]
    if not images:
        msg = {"role": "user", "content": body}
        return msg, msg
    placeholders = "\n".join(f"[image: {a.name}]" for a in images)
    parts: list[dict[str, Any]] = [{"type": "text", "text": body}]
    for a in images:
        parts.append({"type": "text", "text": f"[image: {a.name}]"})
        parts.append({"type": "image_url", "image_url": {"url": a.data_url}})
    return {"role": "user", "content": parts}, {"role": "user", "content": f"{body}\n\n{placeholders}"}


class RunAgent:
    name = "run_agent"
    channel = "api"

    async def __call__(self, ctx: RequestContext) -> None:
        for_llm, for_history = user_messages(ctx.text, ctx.attachments)
        turn = TurnInput(
            session_key=ctx.session_key,
            history=ctx.history,
            user_for_llm=for_llm,
            user_for_history=for_history,
            scope=TurnScope(channel=self.channel, chat_id=ctx.session_id or "default", session_key=ctx.session_key),
            incremental=ctx.stream,
            instructions=ctx.instructions,
            remember=ctx.client_history is None,
            response_format=ctx.response_format,
        )
        events = ctx.services.agent.run(turn)
        ctx.exit_stack.push_async_callback(events.aclose)
        ctx.events = events


stage = RunAgent()
