"""`python -m bench.profiles FILE.prof ...`: sorted tables of the servers' cProfile dumps.

The dumps come from `python -m bench --compare A B --profile DIR` (each
server ran with `NANOBOT_PROFILE`, so only its event-loop thread from the
end of start-up to the stop is recorded). Beside each dump a `.json` file
says how many turns and tokens it served, so the tables read per turn (or
per token, `--per token`): calls, own time, and shares of the whole
recorded time, which stay comparable across runs where absolute times (the
profiler's own overhead included) do not. Several dumps of one side are
added up.
"""

from __future__ import annotations

import argparse
import json
import pstats
import sys
from pathlib import Path
from typing import Any


def _short(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    for marker in ("site-packages/", "/nanobot/", "/stages/", "/bench/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
            if marker in ("/nanobot/", "/stages/"):
                filename = marker.strip("/") + "/" + filename
            break
    return f"{filename}:{line}({name})" if line else name


def load(paths: list[Path]) -> tuple[pstats.Stats, int, int]:
    stats = pstats.Stats(str(paths[0]))
    for path in paths[1:]:
        stats.add(str(path))
    turns = tokens = 0
    for path in paths:
        sidecar = path.with_suffix(".json")
        if sidecar.exists():
            meta = json.loads(sidecar.read_text())
            turns += meta.get("turns", 0)
            tokens += meta.get("tokens", 0)
    return stats, turns, tokens


def rows(stats: pstats.Stats, divisor: int, key: str, top: int) -> list[dict[str, Any]]:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for _, _, tt, _, _ in raw.values()) or 1.0
    index = 2 if key == "tottime" else 3
    ordered = sorted(raw.items(), key=lambda item: item[1][index], reverse=True)[:top]
    out = []
    for func, (_, calls, tt, ct, _) in ordered:
        out.append(
            {
                "function": _short(func),
                "calls_per": calls / divisor,
                "own_us_per": tt / divisor * 1e6,
                "own_share": tt / total * 100,
                "cum_share": ct / total * 100,
            }
        )
    return out


def total_calls(stats: pstats.Stats) -> int:
    """Every function call recorded (a coroutine's resumptions count as calls)."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    return sum(calls for _, calls, _, _, _ in raw.values())


def markdown(title: str, table: list[dict[str, Any]], per: str, calls: float | None = None) -> str:
    lines = [
        f"**{title}**" + ("" if calls is None else f" ({calls:.0f} function calls per {per} in all)"),
        "",
        f"| function | calls/{per} | own µs/{per} | own % | cumulative % |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in table:
        lines.append(
            f"| `{r['function']}` | {r['calls_per']:.2f} | {r['own_us_per']:.1f} | "
            f"{r['own_share']:.1f} | {r['cum_share']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profiles", description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", type=Path, help=".prof dumps (of one side: they are added up)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--sort", choices=("tottime", "cumtime"), default="tottime")
    p.add_argument("--per", choices=("turn", "token"), default="turn")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    stats, turns, tokens = load(args.files)
    divisor = (tokens if args.per == "token" else turns) or 1
    table = rows(stats, divisor, args.sort, args.top)
    title = args.title or f"{', '.join(f.name for f in args.files)}: by {args.sort}, {turns} turns, {tokens} tokens"
    print(markdown(title, table, args.per, total_calls(stats) / divisor))
    return 0


if __name__ == "__main__":
    sys.exit(main())
