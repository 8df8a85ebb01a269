"""A turn's input, built one way for the API (``stages/run_agent.py``) and ``nanobot agent``.

The stages are the HTTP-side adapters: they read a request into text and
attachments; what the agent is then given is decided here.
"""

from __future__ import annotations

from typing import Any

from nanobot.agent.loop import TurnInput
from nanobot.agent.tools import TurnScope
from nanobot.client_tools import ClientTools, PausedTurn
from nanobot.context import Attachment

# The text of a turn that sends files and no words.
DEFAULT_FILE_PROMPT = "Please analyze the uploaded file(s)."


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


def user_turn(
    *,
    channel: str,
    chat_id: str,
    session_key: str,
    history: list[dict[str, Any]],
    text: str,
    attachments: list[Attachment],
    incremental: bool = True,
    instructions: str | None = None,
    remember: bool = True,
    response_format: dict[str, Any] | None = None,
    client_tools: ClientTools | None = None,
    paused: PausedTurn | None = None,
    results: dict[str, str] | None = None,
    resumes: bool = False,
) -> TurnInput:
    """One user turn on ``session_key``: the message from ``text`` and ``attachments``, the tools' scope.

    ``resumes``: no user message, the turn goes on from tool results (the
    paused turn's with ``results``, else those at the end of ``history``).
    """
    for_llm: dict[str, Any] | None = None
    for_history: dict[str, Any] | None = None
    if not resumes:
        for_llm, for_history = user_messages(text, attachments)
    return TurnInput(
        session_key=session_key,
        history=history,
        user_for_llm=for_llm,
        user_for_history=for_history,
        scope=TurnScope(channel=channel, chat_id=chat_id, session_key=session_key),
        incremental=incremental,
        instructions=instructions,
        remember=remember,
        response_format=response_format,
        client_tools=client_tools,
        paused=paused,
        results=results,
    )
