"""The request pipeline: an ordered list of stage objects.

A stage is any object with a ``name`` and ``async def __call__(ctx)``. Stages
are named in ``pipeline.stages``: a built-in name (a module of ``stages/``) or
``module:attribute`` for a custom one, which may be an object or a class
called with no arguments. Resolution happens at start-up, so a typo is a
config error, never a request-time surprise.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, cast

from nanobot.config import DEFAULT_STAGES, ConfigError
from nanobot.context import RequestContext


class Stage(Protocol):
    name: str

    async def __call__(self, ctx: RequestContext) -> None: ...


def load_stage(entry: str) -> Stage:
    if ":" in entry:
        module_name, _, attr = entry.partition(":")
    elif entry in DEFAULT_STAGES:
        module_name, attr = f"stages.{entry}", "stage"
    else:
        raise ConfigError(
            f"pipeline.stages: unknown stage {entry!r} (built-in: {', '.join(DEFAULT_STAGES)}; or module:attribute)"
        )
    try:
        obj: Any = getattr(importlib.import_module(module_name), attr)
    except Exception as exc:
        raise ConfigError(f"pipeline.stages: cannot load {entry!r}: {type(exc).__name__}: {exc}") from None
    if isinstance(obj, type):
        try:
            obj = obj()
        except Exception as exc:
            raise ConfigError(f"pipeline.stages: cannot create {entry!r}: {exc}") from None
    if not callable(obj):
        raise ConfigError(f"pipeline.stages: {entry!r} is not a stage (not callable)")
    if not getattr(obj, "name", None):
        try:
            obj.name = entry
        except AttributeError:
            pass
    return cast(Stage, obj)


class Pipeline:
    def __init__(self, stages: list[Stage]) -> None:
        self.stages = tuple(stages)

    @classmethod
    def from_names(cls, names: list[str]) -> Pipeline:
        return cls([load_stage(n) for n in names])

    async def __call__(self, ctx: RequestContext) -> None:
        for stage in self.stages:
            await stage(ctx)
