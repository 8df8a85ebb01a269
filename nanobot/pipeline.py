"""The request pipeline: an ordered list of stage objects.

A stage is any object with a ``name`` and ``async def __call__(ctx)``. Stages
are named in ``pipeline.stages``: a built-in name (a module of ``stages/``) or
``module:attribute`` for a custom one, which may be an object or a class
called with no arguments. Resolution happens at start-up, so a typo is a
config error, never a request-time surprise.

A stage may declare its contract: ``requires``, the context fields it reads,
and ``provides``, those it writes (tuples of ``RequestContext`` field names).
At start-up every required field must come from the handler
(``START_FIELDS``) or an earlier stage, so a misplaced stage is a config
error too. A stage without declarations reads and writes nothing checked.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Protocol, cast

from nanobot.config import DEFAULT_STAGES, ConfigError
from nanobot.context import START_FIELDS, RequestContext


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


CONTEXT_FIELDS = frozenset(f.name for f in dataclasses.fields(RequestContext))


def contract(stage: Stage, kind: str) -> tuple[str, ...]:
    """``stage``'s declared ``requires`` or ``provides`` (none: ``()``), each a context field."""
    declared = getattr(stage, kind, ())
    if isinstance(declared, str) or not isinstance(declared, (tuple, list, frozenset, set)):
        raise ConfigError(f"pipeline.stages: stage {stage.name!r}: {kind} must be a tuple of context field names")
    for name in declared:
        if name not in CONTEXT_FIELDS:
            raise ConfigError(f"pipeline.stages: stage {stage.name!r} {kind} {name!r}, which is not a context field")
    return tuple(declared)


def check_order(stages: list[Stage]) -> None:
    """Raise ConfigError if a stage reads a field that neither the handler nor an earlier stage writes."""
    written = set(START_FIELDS)
    for index, stage in enumerate(stages):
        for name in contract(stage, "requires"):
            if name not in written:
                later = [s.name for s in stages[index + 1 :] if name in contract(s, "provides")]
                hint = f"{' and '.join(later)} writes it" if later else "no stage in the list writes it"
                raise ConfigError(
                    f"pipeline.stages: stage {stage.name!r} reads {name!r}, which no earlier stage writes ({hint})"
                )
        written.update(contract(stage, "provides"))


# The Responses API (/v1/responses) runs the configured pipeline with its own
# wire format: these built-in stages swapped, every other stage (custom ones
# included) the same objects in the same places.
RESPONSES_STAGES = {"validate": "stages.responses_validate:stage", "encode": "stages.responses_encode:stage"}


def responses_stage_names(names: list[str]) -> list[str]:
    """``pipeline.stages`` for the Responses route."""
    return [RESPONSES_STAGES.get(n, n) for n in names]


class Pipeline:
    def __init__(self, stages: list[Stage]) -> None:
        check_order(stages)
        self.stages = tuple(stages)

    @classmethod
    def from_names(cls, names: list[str]) -> Pipeline:
        return cls([load_stage(n) for n in names])

    @classmethod
    def for_responses(cls, names: list[str]) -> Pipeline:
        try:
            return cls.from_names(responses_stage_names(names))
        except ConfigError as exc:
            raise ConfigError(
                f"{exc} [in the /v1/responses pipeline: pipeline.stages with validate and encode "
                "replaced by responses_validate and responses_encode]"
            ) from None

    async def __call__(self, ctx: RequestContext) -> None:
        for stage in self.stages:
            await stage(ctx)
