"""A probe stage the fault tests load through ``pipeline.stages`` (``fault_stages:TaskCount``).

It lets a test see inside the server process without any debug route: a chat
request carrying ``X-Count-Tasks: 1`` is answered at once with the number of
asyncio tasks alive on the server's loop (``X-Task-Count``), before any other
stage runs. Requests without the header pass through untouched.
"""

from __future__ import annotations

import asyncio

from nanobot.errors import ApiError


class TaskCount:
    name = "task_count"

    async def __call__(self, ctx) -> None:
        if ctx.headers.get("X-Count-Tasks"):
            # The probe's own request task is counted too: the same +1 every time.
            count = len(asyncio.all_tasks())
            raise ApiError("task count probe", status=418, code="task_count", headers={"X-Task-Count": str(count)})
