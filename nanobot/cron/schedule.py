"""When a job is due: ``every_seconds``, a cron expression in a time zone, or one time.

Cron expressions are croniter's (the library nanobot uses); time zones come
from :mod:`zoneinfo`. Everything here is pure: ``now`` is always given, so
the tool, the scheduler and the tests compute the same times. croniter (with
dateutil) is imported where a cron expression is first read, so a server
with no cron job never loads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

EVERY, CRON, AT = "every", "cron", "at"
# Gaps of a cron expression checked against the minimum interval: enough to
# catch "0,1 * * * *" (two fires a minute apart, then an hour).
_GAPS_CHECKED = 24


@dataclass(frozen=True, slots=True)
class Schedule:
    kind: str  # EVERY, CRON or AT
    every_seconds: float | None = None
    cron_expr: str | None = None
    tz: str | None = None
    at: float | None = None  # epoch seconds

    def first(self, now: float) -> float:
        """The first due time of a job added at ``now``."""
        if self.kind == AT:
            assert self.at is not None
            return self.at
        nxt = self.after(now, now)
        assert nxt is not None  # only AT ends
        return nxt

    def after(self, due: float, now: float) -> float | None:
        """The due time that follows a fire at ``due`` (None: the job is done).

        Always later than ``now``: fires missed while nothing ran are skipped,
        so a server back after a long stop fires a job once, not once per miss.
        ``every`` keeps its phase (due + k * interval).
        """
        if self.kind == EVERY:
            assert self.every_seconds is not None
            step = self.every_seconds
            return due + step * (math.floor(max(0.0, now - due) / step) + 1)
        if self.kind == CRON:
            assert self.cron_expr is not None
            from croniter import croniter  # on first use: see the module docstring

            start = datetime.fromtimestamp(max(due, now), ZoneInfo(self.tz or "UTC"))
            nxt: datetime = croniter(self.cron_expr, start).get_next(datetime)
            return nxt.timestamp()
        return None

    def describe(self) -> str:
        if self.kind == EVERY:
            return f"every {self.every_seconds:g} s"
        if self.kind == CRON:
            return f"cron '{self.cron_expr}' ({self.tz or 'UTC'})"
        assert self.at is not None
        return f"once at {iso(self.at, self.tz)}"


def iso(when: float, tz: str | None = None) -> str:
    """``when`` as an ISO time in ``tz`` (UTC by default), to the second."""
    return datetime.fromtimestamp(when, ZoneInfo(tz or "UTC")).isoformat(timespec="seconds")


def parse(args: dict[str, Any], now: float, min_interval: float) -> Schedule | str:
    """The schedule the tool's arguments ask for, or an ``Error: ...`` saying why not."""
    given = [k for k in ("every_seconds", "cron_expr", "at") if args.get(k) not in (None, "")]
    if len(given) != 1:
        return "Error: give exactly one of 'every_seconds', 'cron_expr' or 'at'."
    tz = args.get("tz")
    if tz in (None, ""):
        tz = None
    elif not isinstance(tz, str):
        return "Error: 'tz' must be an IANA time zone name such as 'Europe/Berlin'."
    else:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            return f"Error: unknown time zone '{tz}' (use an IANA name such as 'Europe/Berlin' or 'UTC')."
    kind = given[0]
    if kind == "every_seconds":
        if tz is not None:
            return "Error: 'tz' goes with 'cron_expr' or 'at', not with 'every_seconds'."
        return _every(args["every_seconds"], min_interval)
    if kind == "cron_expr":
        return _cron(args["cron_expr"], tz, now, min_interval)
    return _at(args["at"], tz, now)


def _every(value: Any, min_interval: float) -> Schedule | str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "Error: 'every_seconds' must be a number of seconds."
    if value < min_interval:
        return (
            f"Error: 'every_seconds' must be at least {min_interval:g} "
            "(the minimum interval, tools.cron.minIntervalSeconds)."
        )
    return Schedule(EVERY, every_seconds=float(value))


def _cron(expr: Any, tz: str | None, now: float, min_interval: float) -> Schedule | str:
    from croniter import CroniterBadCronError, croniter  # on first use: see the module docstring

    if not isinstance(expr, str) or not croniter.is_valid(expr.strip()):
        return (
            f"Error: {expr!r} is not a valid cron expression "
            "(five fields: minute hour day-of-month month day-of-week, e.g. '0 9 * * 1-5')."
        )
    expr = expr.strip()
    try:
        it = croniter(expr, datetime.fromtimestamp(now, ZoneInfo(tz or "UTC")))
        times = [it.get_next(datetime).timestamp() for _ in range(_GAPS_CHECKED + 1)]
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        return f"Error: cron expression {expr!r} cannot be scheduled: {exc}."
    gap = min(b - a for a, b in zip(times, times[1:], strict=False))
    if gap < min_interval:
        return (
            f"Error: cron expression {expr!r} fires {gap:g} s apart; the minimum interval is "
            f"{min_interval:g} s (tools.cron.minIntervalSeconds)."
        )
    return Schedule(CRON, cron_expr=expr, tz=tz)


def _at(value: Any, tz: str | None, now: float) -> Schedule | str:
    if not isinstance(value, str):
        return "Error: 'at' must be an ISO time such as '2026-12-24T18:00:00+01:00'."
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return f"Error: 'at' {value!r} is not an ISO time such as '2026-12-24T18:00:00+01:00'."
    if when.tzinfo is None:  # a local time of the given zone, else UTC
        when = when.replace(tzinfo=ZoneInfo(tz) if tz else UTC)
    at = when.timestamp()
    if at <= now:
        return f"Error: 'at' {value!r} is in the past (now is {iso(now, tz)})."
    return Schedule(AT, tz=tz, at=at)
