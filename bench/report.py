"""Turn raw load generator results into figures, ratios, target checks and a table.

Percentiles use the nearest-rank method on all samples of a target (merged
across load generator processes and rounds). Throughput divides by the
`active` time (first request sent to last response received). CPU figures are
the measured process tree's CPU seconds over the run divided by completed
requests (turns) or by streamed content chunks (tokens). Streams show two
rates: content deltas per second (`words/s`: the scripted upstream sends a
word per delta) and completion tokens per second as the usage chunk counts
them (`streamed tokens/s`).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any


def pct(samples: list[float], q: float) -> float | None:
    """Nearest-rank percentile `q` (0..1) of `samples`, None when empty."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def summarize(raws: list[dict[str, Any]], clients: int) -> dict[str, Any]:
    """Figures for one target from one or more measured runs (rounds)."""
    lgs = [lg for raw in raws for lg in raw["loadgens"]]
    total = lambda key: sum(lg[key] for lg in lgs)  # noqa: E731
    latency = [x for lg in lgs for x in lg["latency"]]
    ttft = [x for lg in lgs for x in lg["ttft"]]
    gaps = [x for lg in lgs for x in lg["gaps"]]
    # Processes of one round run in parallel: the round lasts as long as its slowest.
    active = sum(max(lg["active"] for lg in raw["loadgens"]) for raw in raws)
    errors: Counter[str] = Counter()
    samples: dict[str, str] = {}
    for lg in lgs:
        errors.update(lg["error_counts"])
        for key, text in lg["error_samples"].items():
            samples.setdefault(key, text)
    completed, tokens = total("completed"), total("tokens")
    # Completion tokens as the streams' usage chunks count them.
    streamed = sum(lg.get("completion_tokens", 0) for lg in lgs)
    cpu = sum(raw["cpu"] for raw in raws) if all(raw["cpu"] is not None for raw in raws) else None
    up_cpu = [raw["upstream_cpu"] for raw in raws if raw.get("upstream_cpu") is not None]
    db_cpu = [raw["db_cpu"] for raw in raws if raw.get("db_cpu") is not None]
    main = [raw["cpu_main"] for raw in raws if raw.get("cpu_main") is not None]
    waits = [raw["loop_runqueue_wait"] for raw in raws if raw.get("loop_runqueue_wait") is not None]
    out: dict[str, Any] = {
        "started": total("started"),
        "completed": completed,
        "errors": total("errors"),
        "error_counts": dict(errors),
        "error_samples": samples,
        "streams_started": total("started") if lgs and lgs[0]["stream"] else None,
        "streams_done": total("done") if lgs and lgs[0]["stream"] else None,
        "tokens": tokens,
        "reconnects": total("reconnects"),
        "active_s": round(active, 3),
        "rps": round(completed / active, 2) if active else None,
        "latency_p50_ms": _ms(pct(latency, 0.5)),
        "latency_p99_ms": _ms(pct(latency, 0.99)),
        "ttft_p50_ms": _ms(pct(ttft, 0.5)),
        "ttft_p99_ms": _ms(pct(ttft, 0.99)),
        "gap_p50_ms": _ms(pct(gaps, 0.5)),
        "gap_p99_ms": _ms(pct(gaps, 0.99)),
        "tokens_per_s": round(tokens / active, 1) if active and tokens else None,  # content deltas (words)
        "completion_tokens": streamed,
        "streamed_tokens_per_s": round(streamed / active, 1) if active and streamed else None,
        "cpu_s": None if cpu is None else round(cpu, 3),
        "cpu_per_req_us": round(cpu / completed * 1e6, 1) if cpu and completed else None,
        "cpu_per_token_us": round(cpu / tokens * 1e6, 2) if cpu and tokens else None,
        "cpu_main_s": round(sum(main), 3) if main else None,  # the process alone, no workers
        # Runnable but not running: the main (event-loop) thread waiting for a CPU.
        "loop_runqueue_wait_ms": round(sum(waits) * 1000, 1) if waits else None,
        "upstream_cpu_s": round(sum(up_cpu), 3) if up_cpu else None,
        # PostgreSQL's own CPU (postmaster and backends), per completed request.
        "db_cpu_per_req_us": round(sum(db_cpu) / completed * 1e6, 1) if db_cpu and completed else None,
        "loadgen_cpu_s": round(total("cpu"), 3),
        "loadgen_max_util": round(max((lg["cpu"] / lg["wall"] for lg in lgs if lg["wall"]), default=0.0), 3),
        "loadgen_procs": len(raws[0]["loadgens"]) if raws else 0,
    }
    rss = [raw["rss"] for raw in raws if raw.get("rss")]
    if rss:
        out["rss_before_mb"] = round(rss[0]["before_kb"] / 1024, 1)
        out["rss_peak_mb"] = round(max(r["peak_kb"] for r in rss) / 1024, 1)
        out["rss_after_mb"] = round(rss[-1]["after_kb"] / 1024, 1)
        out["tree_rss_peak_mb"] = round(max(r["tree_peak_kb"] for r in rss) / 1024, 1)
        growth = max(r["peak_kb"] - r["before_kb"] for r in rss)
        out["rss_growth_kb_per_client"] = round(growth / clients, 2) if clients else None
    probes = [raw["probe"] for raw in raws if raw.get("probe")]
    if probes:
        health = [x for p in probes for x in p["latency"]]
        out["health_probes"] = len(health)
        out["health_errors"] = sum(p["errors"] for p in probes)
        out["health_p50_ms"] = _ms(pct(health, 0.5))
        out["health_p99_ms"] = _ms(pct(health, 0.99))
        out["health_max_ms"] = _ms(max(health) if health else None)
    return out


RATIO_KEYS = (
    "rps",
    "latency_p50_ms",
    "latency_p99_ms",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "gap_p50_ms",
    "gap_p99_ms",
    "tokens_per_s",
    "streamed_tokens_per_s",
)


def ratios(results: dict[str, dict[str, Any]], base: str = "direct") -> dict[str, dict[str, float | None]]:
    """`<target>/direct` for each comparable figure, for every non-direct target."""
    if base not in results:
        return {}
    ref = results[base]
    out: dict[str, dict[str, float | None]] = {}
    for name, figures in results.items():
        if name == base:
            continue
        out[f"{name}/{base}"] = {
            key: round(figures[key] / ref[key], 3) if figures.get(key) and ref.get(key) else None for key in RATIO_KEYS
        }
    return out


def checks(scenarios: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, evaluated on whatever scenarios ran (server figures)."""
    out: list[dict[str, Any]] = []

    def add(what: str, value: float | None, limit: str, ok: bool | None) -> None:
        out.append({"target": what, "value": value, "limit": limit, "pass": ok})

    for sc in scenarios:
        res, name = sc["results"], sc["name"]
        srv, direct = res.get("server") or {}, res.get("direct") or {}
        if name.startswith("nonstream") and srv.get("cpu_per_req_us") is not None:
            v = srv["cpu_per_req_us"]
            add(f"{name}: server CPU per turn (us)", v, "<= 1000", v <= 1000)
        if name.startswith("stream") and srv.get("cpu_per_token_us") is not None:
            v = srv["cpu_per_token_us"]
            add(f"{name}: server CPU per streamed token (us)", v, "<= 40", v <= 40)
        if name == "stream-s100" and srv.get("tokens_per_s") and direct.get("tokens_per_s"):
            v = round(srv["tokens_per_s"] / direct["tokens_per_s"] * 100, 1)
            add(f"{name}: words/s vs direct (%)", v, ">= 95", v >= 95)
        if name == "stream-s500" and srv.get("ttft_p99_ms") is not None and direct.get("ttft_p99_ms") is not None:
            v = round(srv["ttft_p99_ms"] - direct["ttft_p99_ms"], 1)
            add(f"{name}: TTFT p99 minus direct (ms)", v, "<= 50", v <= 50)
        if name == "stream-s500" and srv.get("gap_p99_ms") is not None and direct.get("gap_p99_ms") is not None:
            v = round(srv["gap_p99_ms"] - direct["gap_p99_ms"], 1)
            add(f"{name}: gap p99 minus direct (ms)", v, "<= 10", v <= 10)
        if name == "stream-s2000" and srv:
            done, started = srv.get("streams_done"), srv.get("streams_started")
            add(f"{name}: streams with [DONE]", done, f"== {started}", done == started and srv["errors"] == 0)
            v = srv.get("rss_growth_kb_per_client")
            if v is not None:
                add(f"{name}: RSS growth per open stream (KB)", v, "<= 50", v <= 50)
        if name == "uploads" and srv.get("health_p99_ms") is not None:
            v = srv["health_p99_ms"]
            add(f"{name}: /health p99 during uploads (ms)", v, "<= 10", v <= 10)
        if name == "noop-stage" and sc.get("extra", {}).get("noop_cost_per_stage_us") is not None:
            v, noise = sc["extra"]["noop_cost_per_stage_us"], sc["extra"].get("noise_per_stage_us")
            if noise is None:  # one round: no noise estimate, so no verdict
                add(f"{name}: CPU per no-op stage per request (us, 1 round: noise unknown)", v, "<= 5", None)
            else:  # decided only when +-2 standard errors stay on one side of the limit
                verdict = True if v + 2 * noise <= 5 else False if v - 2 * noise > 5 else None
                add(f"{name}: CPU per no-op stage per request (us, +-{noise})", v, "<= 5", verdict)
        if name == "client-tools" and sc.get("extra", {}).get("client_tools_overhead_pct") is not None:
            v, noise = sc["extra"]["client_tools_overhead_pct"], sc["extra"].get("noise_pct")
            if noise is None:
                add(f"{name}: server CPU per turn, 3 client tools vs none (%, 1 round: noise unknown)", v, "<= 5", None)
            else:
                verdict = True if v + 2 * noise <= 5 else False if v - 2 * noise > 5 else None
                add(f"{name}: server CPU per turn, 3 client tools vs none (%, +-{noise})", v, "<= 5", verdict)
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 10000 else f"{value:.0f}"
    return str(value)


COLUMNS = (
    ("scenario", None),
    ("target", None),
    ("ok", None),
    ("err", None),
    ("done", None),
    ("req/s", "rps"),
    ("lat50", "latency_p50_ms"),
    ("lat99", "latency_p99_ms"),
    ("ttft50", "ttft_p50_ms"),
    ("ttft99", "ttft_p99_ms"),
    ("gap50", "gap_p50_ms"),
    ("gap99", "gap_p99_ms"),
    ("words/s", "tokens_per_s"),
    ("streamed tokens/s", "streamed_tokens_per_s"),
    ("cpu s", "cpu_s"),
    ("us/req", "cpu_per_req_us"),
    ("us/tok", "cpu_per_token_us"),
    ("rss MB b/p/a", None),
    ("lg cpu%", None),
)


def _row(scenario: str, target: str, m: dict[str, Any]) -> list[str]:
    cells = [scenario, target, _fmt(m.get("completed")), _fmt(m.get("errors"))]
    done = m.get("streams_done")
    cells.append("-" if done is None else f"{done}/{m.get('streams_started')}")
    for _, key in COLUMNS[5:17]:
        value = m.get(key)
        cells.append(_fmt(value, 2 if key in ("cpu_per_token_us", "cpu_s") else 1))
    if "rss_before_mb" in m:
        cells.append(f"{m['rss_before_mb']:.0f}/{m['rss_peak_mb']:.0f}/{m['rss_after_mb']:.0f}")
    else:
        cells.append("-")
    cells.append(f"{m.get('loadgen_max_util', 0) * 100:.0f}")
    return cells


def _ratio_row(scenario: str, label: str, r: dict[str, float | None]) -> list[str]:
    cells = [scenario, label, "", "", ""]
    for _, key in COLUMNS[5:14]:
        value = r.get(key) if key else None
        cells.append("" if value is None else f"x{value:.2f}")
    return cells + [""] * 5


def table(scenarios: list[dict[str, Any]]) -> str:
    """One aligned text table: a row per target, then its ratio to direct."""
    rows = [[name for name, _ in COLUMNS]]
    for sc in scenarios:
        for target, m in sc["results"].items():
            rows.append(_row(sc["name"], target, m))
        for label, r in sc.get("ratios", {}).items():
            rows.append(_ratio_row(sc["name"], label, r))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False))]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("-" * len(lines[0]))
    return "\n".join(lines)


def notes(scenarios: list[dict[str, Any]], target_checks: list[dict[str, Any]]) -> str:
    """Scenario extras, error samples and the target checks, as text."""
    lines: list[str] = []
    for sc in scenarios:
        for target, m in sc["results"].items():
            if "health_p99_ms" in m:
                lines.append(
                    f"{sc['name']} [{target}]: /health p50 {_fmt(m['health_p50_ms'])} ms, "
                    f"p99 {_fmt(m['health_p99_ms'])} ms, max {_fmt(m['health_max_ms'])} ms "
                    f"over {m['health_probes']} probes ({m['health_errors']} errors); "
                    f"the main thread waited {_fmt(m.get('loop_runqueue_wait_ms'))} ms in all for a CPU"
                )
            if m.get("db_cpu_per_req_us") is not None:
                lines.append(f"{sc['name']} [{target}]: PostgreSQL CPU {m['db_cpu_per_req_us']} us per request")
            if m.get("rss_growth_kb_per_client") is not None and sc["name"].startswith("stream"):
                lines.append(f"{sc['name']} [{target}]: RSS growth {m['rss_growth_kb_per_client']} KB per stream")
            for reason, count in m.get("error_counts", {}).items():
                sample = m["error_samples"].get(reason, "")
                lines.append(f"{sc['name']} [{target}]: {count} x {reason}: {sample[:200]}")
        for key, value in sc.get("extra", {}).items():
            lines.append(f"{sc['name']}: {key} = {value}")
    if target_checks:
        lines.append("")
        lines.append("targets:")
        for c in target_checks:
            verdict = {True: "PASS", False: "FAIL", None: "n/a"}[c["pass"]]
            lines.append(f"  {verdict:4}  {c['target']}: {_fmt(c['value'], 2)} ({c['limit']})")
    return "\n".join(lines)
