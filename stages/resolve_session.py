"""resolve_session: the session key, this session's turn slot, and its history.

Holding the per-session lock until the request ends makes turns on one
session run one at a time, in arrival order (with ``api.clientHistory``
"use" too: the session still scopes ordering, though its history is not
read). The wait counts against ``api.timeout`` (the handler's deadline), so
a stalled turn cannot hold a session's queue forever.

With server-side history the session's paused turn (waiting for client tool
results) is read here too, under the lock: tool results must answer exactly
its pending calls, and a user message closes it (``nanobot/client_tools.py``).
"""

from __future__ import annotations

from nanobot.client_tools import PausedTurn, check_results
from nanobot.context import RequestContext


class ResolveSession:
    name = "resolve_session"
    requires = ("session_id", "client_history", "tool_results", "services", "exit_stack")
    provides = ("session_key", "history", "paused", "client_results")
    prefix = "api"

    async def __call__(self, ctx: RequestContext) -> None:
        ctx.session_key = f"{self.prefix}:{ctx.session_id or 'default'}"
        services = ctx.services
        await ctx.exit_stack.enter_async_context(services.locks.hold(ctx.session_key))
        if ctx.client_history is not None:
            # api.clientHistory "use": the client's conversation, the stored one untouched.
            ctx.history = ctx.client_history
            return
        ctx.history = await services.agent.history(ctx.session_key)
        data = await services.agent.store.paused(ctx.session_key)
        ctx.paused = PausedTurn.from_json(data) if data is not None else None
        if ctx.tool_results is not None:
            ctx.client_results = check_results(ctx.paused, ctx.tool_results, "messages")


stage = ResolveSession()
