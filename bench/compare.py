"""`python -m bench --compare A B`: two revisions or installs side by side, in one run.

A and B are each a git revision of this repository (exported with `git
archive` into a temporary directory) or a directory (a checkout, or an
install's package directory) put first on the server's PYTHONPATH. The
harness, the upstream and the load generators are the ones of this checkout.

Per scenario one scripted upstream serves every round. A round starts a
fresh server of each side, warms both up, then measures them one after the
other, alternating which goes first (ABBA), so the drift of a shared machine
falls on both. A side's figure is the median over the rounds; the ratio is
B/A of the medians, beside the range of the per-round ratios. With
`--phases` each server also keeps its per-phase timers
(`nanobot/server/measure.py`), with `--profile DIR` a cProfile dump per
server (`python -m bench.profiles DIR` prints the tables).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report
from bench.procs import ROOT
from bench.runner import ScenarioRunner, Target
from bench.scenarios import Scenario
from nanobot.testing.process import UpstreamProcess

# Figures compared, with how they read: lower is better for all but req/s.
FIGURES = (
    ("cpu_per_req_us", "server CPU per turn (us)"),
    ("cpu_per_token_us", "server CPU per streamed token (us)"),
    ("rps", "req/s"),
    ("ttft_p99_over_direct_ms", "TTFT p99 over direct (ms)"),
    ("ttft_p99_ms", "TTFT p99 (ms)"),
    ("gap_p99_ms", "gap p99 (ms)"),
    ("rss_peak_mb", "peak RSS (MB)"),
    ("rss_mb_per_100_streams", "RSS growth per 100 streams (MB)"),
)


@dataclass
class Side:
    label: str
    path: Path
    temporary: bool
    config: dict[str, Any] | None = None  # merged into this side's server config (--config-b)

    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": str(self.path)}

    def remove(self) -> None:
        if self.temporary:
            shutil.rmtree(self.path, ignore_errors=True)


def resolve_side(spec: str) -> Side:
    """A directory as it is, or a git revision exported to a temporary directory."""
    if os.path.isdir(spec):
        return Side(spec, Path(spec).resolve(), temporary=False)
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except subprocess.CalledProcessError:
        raise SystemExit(f"--compare: {spec!r} is neither a directory nor a git revision") from None
    target = Path(tempfile.mkdtemp(prefix=f"bench-{sha[:8]}-"))
    # An export, not a worktree: nothing is registered in the repository.
    archive = subprocess.run(["git", "archive", sha], cwd=ROOT, capture_output=True, check=True).stdout
    with tempfile.TemporaryFile() as fh:
        fh.write(archive)
        fh.seek(0)
        with tarfile.open(fileobj=fh) as tar:
            tar.extractall(target, filter="data")
    label = spec if len(spec) <= 12 else sha[:8]
    return Side(label, target, temporary=True)


def _figures(raw: dict[str, Any], sc: Scenario, direct: dict[str, Any] | None) -> dict[str, Any]:
    m = report.summarize([raw], sc.clients)
    out = {key: m.get(key) for key, _ in FIGURES}
    if direct and m.get("ttft_p99_ms") is not None and direct.get("ttft_p99_ms") is not None:
        out["ttft_p99_over_direct_ms"] = round(m["ttft_p99_ms"] - direct["ttft_p99_ms"], 1)
    if sc.stream and m.get("rss_growth_kb_per_client") is not None:
        out["rss_mb_per_100_streams"] = round(m["rss_growth_kb_per_client"] * 100 / 1024, 2)
    out["errors"] = m["errors"]
    out["completed"] = m["completed"]
    out["tokens"] = m["tokens"]
    return out


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


class Comparison:
    def __init__(self, args: argparse.Namespace, runner: ScenarioRunner, a: Side, b: Side) -> None:
        self.args = args
        self.runner = runner
        self.sides = (a, b)
        self.rounds = args.rounds or (1 if args.quick else 3)
        self.profile_dir = Path(args.profile).resolve() if args.profile else None
        if self.profile_dir is not None:
            self.profile_dir.mkdir(parents=True, exist_ok=True)

    def _env(self, side: Side, tag: str, scratch: Path) -> tuple[dict[str, str], Path | None, Path | None]:
        env = side.env()
        phases = profile = None
        if self.args.phases:
            phases = scratch / f"{tag}.phases.json"
            env["NANOBOT_PHASES"] = str(phases)
        if self.profile_dir is not None:
            profile = self.profile_dir / f"{tag}.prof"
            env["NANOBOT_PROFILE"] = str(profile)
        return env, phases, profile

    def run(self, sc: Scenario) -> dict[str, Any]:
        runner = self.runner
        runner.log(f"scenario {sc.name}: {sc.description} ({self.rounds} rounds)")
        per_round: dict[str, list[dict[str, Any]]] = {s.label: [] for s in self.sides}
        up = runner._upstream(sc)
        scratch = Path(tempfile.mkdtemp(prefix="bench-compare-"))
        try:
            for index in range(self.rounds):
                direct = None
                if "direct" in self.args.targets:
                    target = Target("direct", up.url, up.pid)
                    runner._warm_up(target, sc)
                    direct = report.summarize([runner._measure(sc, target)], sc.clients)
                order = self.sides if index % 2 == 0 else self.sides[::-1]
                for figures in self._round(sc, up, order, index, scratch, direct):
                    per_round[figures.pop("side")].append(figures)
        finally:
            up.stop()
            shutil.rmtree(scratch, ignore_errors=True)
        return self._summary(sc, per_round)

    def _round(
        self,
        sc: Scenario,
        up: UpstreamProcess,
        order: tuple[Side, ...],
        index: int,
        scratch: Path,
        direct: dict[str, Any] | None,
    ) -> list[dict[str, Any]]:
        runner = self.runner
        started = []
        try:
            for side in order:
                tag = f"{sc.name}-{side.label.replace('/', '_')}-r{index + 1}"
                env, phases, profile = self._env(side, tag, scratch)
                started.append((side, runner._server(up, env=env, config=side.config), tag, phases, profile))
            for side, srv, _, _, _ in started:
                runner._warm_up(Target(side.label, srv.url, srv.pid), sc)
            raws = [runner._measure(sc, Target(side.label, srv.url, srv.pid)) for side, srv, _, _, _ in started]
        finally:
            for _, srv, _, _, _ in started:
                runner._stop_server(srv)
        out = []
        for (side, _, _, phases, profile), raw in zip(started, raws, strict=True):
            figures = _figures(raw, sc, direct)
            figures["side"] = side.label
            if phases is not None and phases.exists():
                figures["phases"] = json.loads(phases.read_text())
            if profile is not None and profile.exists():
                # What the tables divide by: the measured turns and tokens, plus the warm-up's three.
                sidecar = {"scenario": sc.name, "side": side.label, "turns": figures["completed"] + 3}
                sidecar["tokens"] = figures["tokens"]
                profile.with_suffix(".json").write_text(json.dumps(sidecar))
            runner.log(
                f"  round {index + 1} {side.label}: {figures['completed']} ok, {figures['errors']} errors, "
                f"{figures.get('cpu_per_req_us')} us/turn, {figures.get('cpu_per_token_us')} us/token"
            )
            out.append(figures)
        return out

    def _summary(self, sc: Scenario, per_round: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        a, b = (s.label for s in self.sides)
        rows = []
        for key, label in FIGURES:
            values = {side: [r[key] for r in rounds if r.get(key) is not None] for side, rounds in per_round.items()}
            if not values[a] or not values[b]:
                continue
            ma, mb = _median(values[a]), _median(values[b])
            pairs = [rb / ra for ra, rb in zip(values[a], values[b], strict=False) if ra]
            rows.append(
                {
                    "figure": key,
                    "label": label,
                    a: ma,
                    b: mb,
                    "ratio": round(mb / ma, 3) if ma and mb is not None else None,
                    "round_ratios": [round(x, 3) for x in pairs],
                    "spread": {side: [min(v), max(v)] for side, v in values.items()},
                }
            )
        phases = {side: _phase_means(rounds) for side, rounds in per_round.items()}
        return {
            "name": sc.name,
            "description": sc.description,
            "config": sc.spec(),
            "sides": [a, b],
            "rows": rows,
            "phases_us_per_request": {k: v for k, v in phases.items() if v},
            "errors": {side: sum(r["errors"] for r in rounds) for side, rounds in per_round.items()},
            "rounds": per_round,
        }


def _phase_means(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """Microseconds per request of each phase, summed over the rounds."""
    totals: dict[str, float] = {}
    requests = 0
    for r in rounds:
        phases = r.get("phases")
        if not phases:
            continue
        requests += phases["requests"]
        for name, seconds in phases["seconds"].items():
            totals[name] = totals.get(name, 0.0) + seconds
    return {name: round(s / requests * 1e6, 1) for name, s in totals.items()} if requests else {}


def table(results: list[dict[str, Any]]) -> str:
    """Per scenario: each figure for A and B (median, range over rounds), B/A, and the phases."""
    lines: list[str] = []
    for sc in results:
        a, b = sc["sides"]
        rows = [["scenario", "figure", a, b, "B/A", "per round"]]
        for r in sc["rows"]:
            sa, sb = r["spread"][a], r["spread"][b]
            rows.append(
                [
                    sc["name"],
                    r["label"],
                    f"{report._fmt(r[a], 2)} ({report._fmt(sa[0], 1)}-{report._fmt(sa[1], 1)})",
                    f"{report._fmt(r[b], 2)} ({report._fmt(sb[0], 1)}-{report._fmt(sb[1], 1)})",
                    "-" if r["ratio"] is None else f"x{r['ratio']:.3f}",
                    " ".join(f"{x:.2f}" for x in r["round_ratios"]),
                ]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for index, row in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            if index == 0:
                lines.append("-" * len(lines[-1]))
        for side, phases in sc["phases_us_per_request"].items():
            text = ", ".join(f"{name} {value:.1f}" for name, value in phases.items())
            lines.append(f"{sc['name']}  phases of {side}, us per request (wall): {text}")
        if any(sc["errors"].values()):
            lines.append(f"{sc['name']}: errors {sc['errors']}")
        lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace, scenarios: list[Scenario], runner: ScenarioRunner) -> list[dict[str, Any]]:
    a_spec, b_spec = args.compare
    a, b = resolve_side(a_spec), resolve_side(b_spec)
    if args.config_b is not None:
        b.config = args.config_b
        b.label += "+config"
    if a.label == b.label:
        a.label, b.label = f"A:{a.label}", f"B:{b.label}"
    try:
        comparison = Comparison(args, runner, a, b)
        return [comparison.run(sc) for sc in scenarios if sc.kind == "chat"]
    finally:
        a.remove()
        b.remove()
