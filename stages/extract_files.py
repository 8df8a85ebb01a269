"""extract_files: every incoming file checked, typed from its bytes, and read.

Images become data URLs for this turn's LLM call; documents become text
(``nanobot.files.incoming``, shared with ``nanobot agent --file``). Each
upload is kept under ``<stateDir>/media/api/``, but only when its request
succeeds: a request that fails (a later file refused, the provider down, the
client gone) keeps none of its files.
"""

from __future__ import annotations

from nanobot.context import RequestContext
from nanobot.files.incoming import read_file
from nanobot.files.storage import remove_uploads


class ExtractFiles:
    name = "extract_files"
    requires = ("files", "services", "exit_stack")
    provides = ("attachments",)

    async def __call__(self, ctx: RequestContext) -> None:
        if ctx.files:
            ctx.exit_stack.push(lambda kind, exc, tb: _drop_on_failure(ctx, kind))
        for f in ctx.files:
            ctx.attachments.append(await read_file(ctx.services, f))


def _drop_on_failure(ctx: RequestContext, failure: type[BaseException] | None) -> None:
    """The request's exit: if it failed, the files it saved go too (never suppresses)."""
    if failure is not None:
        remove_uploads([a.path for a in ctx.attachments if a.path])


stage = ExtractFiles()
