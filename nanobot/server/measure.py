"""Opt-in measuring for the benchmark: per-phase timers and a profiler.

Both are switched on by the environment, read once at start-up
(``NANOBOT_PHASES=FILE``, ``NANOBOT_PROFILE=FILE``, ``NANOBOT_PROFILE_CLOCK=cpu``). Off, nothing here is
installed: the pipeline keeps its own stage objects and no timer is read on
the hot path. On, the totals are written to FILE (JSON, or a cProfile dump)
when the server stops; ``{pid}`` in FILE is replaced by the process id (for
``api.workers`` > 1).

Phases, summed over every request of both routes: ``decode_validate``
(decode, validate or responses_validate, extract_files), ``session``
(resolve_session: the turn slot and the history read), ``agent`` (the agent
and the provider: the time the encoder waits for the next event, less
``store``), ``store`` (the turn's history write, or a stored response's),
``encode`` (encode or responses_encode, less the wait for events),
``other_stages``. These are
wall times on the event loop, so under concurrency a phase that waits (the
provider, the lock, the database thread) also holds other requests' work.
"""

from __future__ import annotations

import cProfile
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from nanobot.context import RequestContext
from nanobot.pipeline import Pipeline, Stage
from nanobot.services import Services

PHASES_ENV = "NANOBOT_PHASES"
PROFILE_ENV = "NANOBOT_PROFILE"
PROFILE_CLOCK_ENV = "NANOBOT_PROFILE_CLOCK"

_PHASE_OF = {
    "decode": "decode_validate",
    "validate": "decode_validate",
    "responses_validate": "decode_validate",
    "extract_files": "decode_validate",
    "resolve_session": "session",
    "run_agent": "agent",
    "encode": "encode",
    "responses_encode": "encode",
}
PHASES = ("decode_validate", "session", "agent", "store", "encode", "other_stages")


def _target(env: str) -> str | None:
    value = os.environ.get(env)
    return value.replace("{pid}", str(os.getpid())) if value else None


class PhaseTotals:
    """Seconds per phase and the number of requests, over the process's life."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.requests = 0
        self.turns_stored = 0

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "turns_stored": self.turns_stored, "seconds": self.seconds}


class _TimedEvents:
    """The agent's event stream, timing each wait for the next event."""

    def __init__(self, events: AsyncIterator[Any], totals: PhaseTotals) -> None:
        self._events = events
        self._totals = totals
        self.waited = 0.0

    def __aiter__(self) -> _TimedEvents:
        return self

    async def __anext__(self) -> Any:
        t0 = time.perf_counter()
        try:
            return await self._events.__anext__()
        finally:
            spent = time.perf_counter() - t0
            self.waited += spent
            self._totals.seconds["agent"] += spent

    async def aclose(self) -> None:
        close = getattr(self._events, "aclose", None)
        if close is not None:
            await close()


class _TimedStage:
    def __init__(self, stage: Stage, totals: PhaseTotals) -> None:
        self._stage = stage
        self._totals = totals
        self.name = stage.name
        self.requires = getattr(stage, "requires", ())
        self.provides = getattr(stage, "provides", ())
        self._phase = _PHASE_OF.get(stage.name, "other_stages")

    async def __call__(self, ctx: RequestContext) -> None:
        t0 = time.perf_counter()
        try:
            await self._stage(ctx)
        finally:
            spent = time.perf_counter() - t0
            if self._phase == "agent":  # run_agent only starts the turn: its events are timed as drained
                if ctx.events is not None:
                    ctx.events = _TimedEvents(ctx.events, self._totals)
            elif self._phase == "encode" and isinstance(ctx.events, _TimedEvents):
                spent -= ctx.events.waited
            self._totals.seconds[self._phase] += spent
            if self._phase == "decode_validate" and self.name == "decode":
                self._totals.requests += 1


def _as_store(write: Callable[..., Awaitable[None]], totals: PhaseTotals, within: str) -> Any:
    """``write`` timed as ``store``, that time taken off ``within`` (the phase that awaits it)."""

    async def timed(*args: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        try:
            await write(*args, **kwargs)
        finally:
            spent = time.perf_counter() - t0
            totals.seconds["store"] += spent
            totals.seconds[within] -= spent
            totals.turns_stored += 1

    return timed


def _time_store(services: Services, totals: PhaseTotals) -> None:
    """The agent's history write, moved from ``agent`` to ``store``; a stored
    /v1/responses turn (written by responses_encode), moved from ``encode``."""
    store = services.agent.store
    store.append_turn = _as_store(store.append_turn, totals, "agent")  # type: ignore[method-assign]
    responses = services.responses
    responses.save = _as_store(responses.save, totals, "encode")  # type: ignore[method-assign]


class Measuring:
    """What the environment switched on for this process (usually nothing)."""

    def __init__(self) -> None:
        self.phases_file = _target(PHASES_ENV)
        self.profile_file = _target(PROFILE_ENV)
        self.totals: PhaseTotals | None = None
        self.profiler: cProfile.Profile | None = None

    def install(self, services: Services, *pipelines: Pipeline) -> None:
        """Wrap the stages (of the chat and the Responses route alike) and the store in timers, if asked for."""
        if self.phases_file is None:
            return
        totals = self.totals = PhaseTotals()
        for pipeline in pipelines:
            pipeline.stages = tuple(_TimedStage(s, totals) for s in pipeline.stages)
        _time_store(services, totals)

    def start(self) -> None:
        """From here on (after start-up) the profiler, if asked for, records."""
        if self.profile_file is not None:
            # NANOBOT_PROFILE_CLOCK=cpu: the loop thread's CPU clock. A send
            # that wakes the peer often loses the CPU to it, which the wall
            # clock charges to the send; but each reading of the CPU clock is
            # a system call (~0.9 us against 0.08), which weighs on
            # functions called often.
            cpu = os.environ.get(PROFILE_CLOCK_ENV) == "cpu"
            self.profiler = cProfile.Profile(time.thread_time) if cpu else cProfile.Profile()
            self.profiler.enable()

    def finish(self) -> None:
        if self.profiler is not None and self.profile_file is not None:
            self.profiler.disable()
            self.profiler.dump_stats(self.profile_file)
        if self.totals is not None and self.phases_file is not None:
            with open(self.phases_file, "w") as fh:
                json.dump(self.totals.as_dict(), fh)
