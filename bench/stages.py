"""A custom pipeline stage that does nothing, for the `noop-stage` scenario.

Added through config (`"pipeline": {"stages": [..., "bench.stages:NoOp", ...]}`)
exactly as a user's own stage would be, so the scenario measures what one
extra stage costs the pipeline per request.
"""

from __future__ import annotations

from typing import Any


class NoOp:
    """A stage with a name and an awaitable call that leaves the context alone."""

    name = "noop"

    async def __call__(self, ctx: Any) -> None:
        return None
