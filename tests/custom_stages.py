"""Custom stages, loaded by the server purely through ``pipeline.stages``."""

from __future__ import annotations

from nanobot.errors import PermissionDenied


class RejectFlagged:
    """A class entry: the server calls it with no arguments to make the stage."""

    name = "reject_flagged"

    async def __call__(self, ctx) -> None:
        if ctx.headers.get("X-Block-Me"):
            raise PermissionDenied("Blocked by the reject_flagged stage.", code="blocked")


class StampHeader:
    name = "stamp"
    requires = ("session_key",)  # resolve_session must come first
    provides = ("response_headers",)

    async def __call__(self, ctx) -> None:
        ctx.response_headers["X-Stamped-By"] = f"stamp:{ctx.session_key}"


stamp = StampHeader()  # an object entry


class NoOp:
    name = "noop"

    async def __call__(self, ctx) -> None:
        return None


class Broken:
    def __init__(self) -> None:
        raise RuntimeError("cannot build")
