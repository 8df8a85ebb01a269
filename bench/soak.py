"""`python -m bench soak`: a bounded mixed load held for a while, then a leak check.

One scripted upstream and one nanobot server (its own workspace, default API
settings, no API key), all on 127.0.0.1. First a light warm-up (one turn of
each kind: imports, pools, extraction workers) and the idle "cold" RSS; then
(`--warm-up full`, the default) one round at the soak's concurrency, every
client one request at once, so the allocator's high-water mark for that many
concurrent requests is reached before the baseline; after a pause the idle
"start" RSS and `/metrics` are recorded. Then, all at once and for
`--duration` seconds, separate `bench.loadgen` processes run:

* `--streams` streaming clients, each on its own keep-alive connection and its
  own session, starting a new stream as soon as the last one ended;
* `--clients` non-streaming clients, the same way;
* `--uploads` clients posting a small multipart PDF (`--upload-bytes`) back to back;
* a `/health` probe at `--probe-hz`.

The upstream answers every turn with `--tokens` words `--interval-ms` apart
(a non-streaming turn waits the same time in one piece), so the number of
open streams stays close to `--streams` for the whole run. After the load,
the harness waits until `/metrics` shows no request in flight and no open
stream, lets the server sit `--settle` seconds, and reads its RSS again.

Checks (each printed as PASS/FAIL; any FAIL gives exit code 1):

* no errors: every request answered 200 with a complete body, no connection
  error, no timeout, the server process still running;
* every stream ended with `data: [DONE]` (and none had an SSE error frame);
* RSS after <= RSS at start + max(`--rss-slack-mb` MB, `--rss-slack-pct` % of start)
  (defaults 30 MB, 25 %): holding the load for the whole duration must not leave
  more behind than one round at that concurrency already did. CPython rarely
  hands freed memory back to the OS, so the working set of N concurrent requests
  stays resident; what this bound catches is growth with time and request count.
  `--warm-up light` measures from the cold RSS instead (stricter);
* `/metrics` after the load: `nanobot_requests_in_flight 0`, `nanobot_open_streams 0`;
* `nanobot_asyncio_tasks` back within `--tasks-slack` of its idle value;
* the server itself counted no response with status >= 400.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
import uuid
from typing import Any

from bench.pdfgen import cached_pdf
from bench.procs import run_loadgens
from bench.procstat import RssSampler, descendants, own_cpu, rss_kb, tree_cpu
from bench.report import pct
from bench.scrape import MetricsWatcher, Scrape, wait_idle
from nanobot.testing.process import UpstreamProcess
from nanobot.testing.server_process import ServerProcess, merge, upstream_config

_STREAMS_PER_LOADGEN = 500
MB = 1024.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench soak",
        description="Hold a bounded mixed load (streams, non-streaming turns, uploads, /health) on one "
        "server on 127.0.0.1, then check: zero errors, every stream [DONE], RSS back near its start, "
        "nothing left in flight.",
    )
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    p.add_argument("--streams", type=int, default=300, help="concurrent streaming clients (default 300)")
    p.add_argument("--clients", type=int, default=32, help="concurrent non-streaming clients (default 32)")
    p.add_argument("--uploads", type=int, default=4, help="concurrent upload clients (default 4)")
    p.add_argument("--tokens", type=int, default=20, help="words per upstream reply (default 20)")
    p.add_argument("--interval-ms", type=float, default=50.0, help="upstream pause before each word (default 50)")
    p.add_argument("--upload-bytes", type=int, default=200_000, help="size of the uploaded PDF (default 200000)")
    p.add_argument("--upload-pages", type=int, default=4, help="text pages in the uploaded PDF (default 4)")
    p.add_argument("--probe-hz", type=float, default=20.0, help="/health probe rate (default 20)")
    p.add_argument("--timeout", type=float, default=120.0, help="per-request timeout in seconds (default 120)")
    p.add_argument(
        "--warm-up",
        choices=("full", "light"),
        default="full",
        help="full (default): after a light warm-up, one request per client all at once, and RSS "
        "'start' is read after that; light: 'start' is read after the light warm-up only",
    )
    p.add_argument("--settle", type=float, default=2.0, help="idle seconds before reading RSS at start and after")
    p.add_argument("--idle-timeout", type=float, default=30.0, help="max seconds to wait for in-flight 0 after")
    p.add_argument("--rss-slack-mb", type=float, default=30.0, help="RSS bound: absolute slack (default 30 MB)")
    p.add_argument("--rss-slack-pct", type=float, default=25.0, help="RSS bound: relative slack (default 25%%)")
    p.add_argument("--tasks-slack", type=int, default=10, help="asyncio tasks allowed above idle after (default 10)")
    p.add_argument(
        "--server-config",
        metavar="JSON",
        default="{}",
        help='JSON merged into the server\'s config (e.g. \'{"agents": {"defaults": '
        '{"maxHistoryMessages": 8}}}\'); the API key must stay unset for /metrics',
    )
    p.add_argument("--json", metavar="FILE", help="write machine-readable results here")
    p.add_argument("--silent", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.streams < 0 or args.clients < 0 or args.uploads < 0:
        p.error("--duration must be > 0 and the client counts >= 0")
    if args.streams + args.clients + args.uploads == 0:
        p.error("nothing to run: --streams, --clients and --uploads are all 0")
    try:
        args.server_config = json.loads(args.server_config)
    except ValueError as exc:
        p.error(f"--server-config: {exc}")
    if not isinstance(args.server_config, dict):
        p.error("--server-config: expected a JSON object")
    return args


# -- /metrics --------------------------------------------------------------
def _specs(
    args: argparse.Namespace, url: str, pdf: str, duration: float, run_id: str, streams: int, clients: int, uploads: int
) -> list[tuple[str, dict[str, Any]]]:
    """(kind label, loadgen spec) pairs; each kind its own session prefix so no two clients share a session."""
    common = {"url": url, "model": "scripted", "duration": duration, "timeout": args.timeout}
    out: list[tuple[str, dict[str, Any]]] = []
    if streams:
        procs = -(-streams // _STREAMS_PER_LOADGEN)
        offset = 0
        for index in range(procs):
            share = streams // procs + (1 if index < streams % procs else 0)
            out.append(
                (
                    "streams",
                    {
                        **common,
                        "kind": "chat",
                        "stream": True,
                        "clients": share,
                        "session_prefix": f"soak-{run_id}-s-",
                        "client_offset": offset,
                    },
                )
            )
            offset += share
    if clients:
        out.append(
            (
                "nonstream",
                {**common, "kind": "chat", "stream": False, "clients": clients, "session_prefix": f"soak-{run_id}-n-"},
            )
        )
    if uploads:
        out.append(
            (
                "uploads",
                {
                    **common,
                    "kind": "upload",
                    "clients": uploads,
                    "file": pdf,
                    "text": "Summarise the attached document.",
                    "session_prefix": f"soak-{run_id}-u-",
                },
            )
        )
    return out


def _run_load(
    specs: list[tuple[str, dict[str, Any]]], probe: dict[str, Any] | None, duration: float, timeout: float
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any] | None]:
    results, probe_result = run_loadgens([spec for _, spec in specs], probe, duration + timeout + 60)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for (kind, _), result in zip(specs, results, strict=False):
        by_kind.setdefault(kind, []).append(result)
    return by_kind, probe_result


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def summarize_kind(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Merged figures of one kind of client (one or more load generator processes)."""
    total = lambda key: sum(r[key] for r in results)  # noqa: E731
    latency = [x for r in results for x in r["latency"]]
    ttft = [x for r in results for x in r["ttft"]]
    errors: dict[str, int] = {}
    samples: dict[str, str] = {}
    statuses: dict[str, int] = {}
    for r in results:
        for reason, n in r["error_counts"].items():
            errors[reason] = errors.get(reason, 0) + n
        for reason, text in r["error_samples"].items():
            samples.setdefault(reason, text)
        for code, n in r["statuses"].items():
            statuses[code] = statuses.get(code, 0) + n
    active = max((r["active"] for r in results), default=0.0)
    stream = bool(results and results[0]["stream"])
    out: dict[str, Any] = {
        "clients": total("clients"),
        "started": total("started"),
        "completed": total("completed"),
        "errors": total("errors"),
        "unfinished": total("started") - total("completed") - total("errors"),
        "error_counts": errors,
        "error_samples": samples,
        "statuses": statuses,
        "reconnects": total("reconnects"),
        "rps": round(total("completed") / active, 1) if active else None,
        "latency_p50_ms": _ms(pct(latency, 0.5)),
        "latency_p99_ms": _ms(pct(latency, 0.99)),
        "latency_max_ms": _ms(max(latency) if latency else None),
        "loadgen_cpu_s": round(total("cpu"), 2),
        "loadgen_max_util": round(max((r["cpu"] / r["wall"] for r in results if r["wall"]), default=0.0), 3),
    }
    if stream:
        out.update(
            streams_done=total("done"),
            tokens=total("tokens"),
            ttft_p50_ms=_ms(pct(ttft, 0.5)),
            ttft_p99_ms=_ms(pct(ttft, 0.99)),
        )
    return out


# -- the run ---------------------------------------------------------------
def _rss_mb(pid: int) -> tuple[float, float]:
    """(main process, whole tree) RSS in MB."""
    main = rss_kb(pid)
    return round(main / MB, 1), round((main + sum(rss_kb(k) for k in descendants(pid))) / MB, 1)


def run(args: argparse.Namespace, out: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole soak; fills `out` as it goes, so a caller keeps what was measured if it breaks."""
    log = (lambda *a, **k: None) if args.silent else (lambda *a, **k: print(*a, **k, flush=True))
    pdf = str(cached_pdf(args.upload_bytes, args.upload_pages))
    run_id = uuid.uuid4().hex[:8]
    out = {} if out is None else out
    out.update({"server": {}, "metrics": {}, "load": {}, "warm_up": {}})
    up = UpstreamProcess.start(
        tokens=args.tokens, interval_ms=args.interval_ms, record=False, extra_args=["--backlog", "4096"]
    )
    srv: ServerProcess | None = None
    try:
        srv = ServerProcess(merge(upstream_config(up.url), args.server_config))
        server = out["server"]
        server["pid"] = srv.pid
        log(
            f"soak {run_id}: server {srv.url} (pid {srv.pid}), upstream {up.url} "
            f"({args.tokens} words @ {args.interval_ms:g} ms)"
        )

        # Warm-up: one turn of each kind, so imports, pools and the extraction workers are loaded.
        warm, _ = _run_load(
            _specs(
                args, srv.url, pdf, 0.0, run_id + "w", min(args.streams, 2), min(args.clients, 2), min(args.uploads, 1)
            ),
            None,
            0.0,
            args.timeout,
        )
        out["warm_up"]["light"] = {kind: summarize_kind(results) for kind, results in warm.items()}
        start_scrape = _idle_scrape(srv.url, args)
        server["rss_cold_mb"], server["tree_rss_cold_mb"] = _rss_mb(srv.pid)
        out["metrics"]["cold"] = start_scrape.summary()
        log(
            f"  idle after a light warm-up: RSS {server['rss_cold_mb']} MB (tree {server['tree_rss_cold_mb']} MB), "
            f"metrics {_gauges(start_scrape)}"
        )
        if args.warm_up == "full":
            # One request per client, all at once: the working set of this concurrency, before the held load.
            warm, _ = _run_load(
                _specs(args, srv.url, pdf, 0.0, run_id, args.streams, args.clients, args.uploads),
                None,
                0.0,
                args.timeout,
            )
            out["warm_up"]["full"] = {kind: summarize_kind(results) for kind, results in warm.items()}
            start_scrape = _idle_scrape(srv.url, args)
            log(f"  idle after one round at full concurrency: RSS {rss_kb(srv.pid) / MB:.1f} MB")
        server["rss_start_mb"], server["tree_rss_start_mb"] = _rss_mb(srv.pid)
        out["metrics"]["start"] = start_scrape.summary()

        specs = _specs(args, srv.url, pdf, args.duration, run_id, args.streams, args.clients, args.uploads)
        probe = (
            {
                "url": srv.url,
                "kind": "probe",
                "path": "/health",
                "hz": args.probe_hz,
                "duration": 3600.0,
                "timeout": args.timeout,
            }
            if args.probe_hz > 0
            else None
        )
        log(
            f"  load: {args.streams} streams, {args.clients} non-streaming, {args.uploads} uploads "
            f"({os.path.getsize(pdf)} B PDF), /health @ {args.probe_hz:g} Hz, for {args.duration:g} s"
        )
        sampler = RssSampler(srv.pid).start()
        watcher = MetricsWatcher(srv.url, srv.pid).start()
        cpu0, main0, up0 = tree_cpu(srv.pid), own_cpu(srv.pid), tree_cpu(up.pid)
        t0 = time.monotonic()
        try:
            by_kind, probe_result = _run_load(specs, probe, args.duration, args.timeout)
        finally:
            out["metrics"]["during"] = watcher.stop()
            rss = sampler.stop(settle=0.0)
        load_s = time.monotonic() - t0
        server["cpu_s"] = round(tree_cpu(srv.pid) - cpu0, 2)
        server["cpu_main_s"] = round(own_cpu(srv.pid) - main0, 2)
        server["cpu_util"] = round(server["cpu_s"] / load_s, 3) if load_s else None
        server["upstream_cpu_s"] = round(tree_cpu(up.pid) - up0, 2)
        server["rss_peak_mb"] = round(rss.peak_kb / MB, 1)
        server["tree_rss_peak_mb"] = round(rss.tree_peak_kb / MB, 1)
        out["load_s"] = round(load_s, 1)
        out["load"] = {kind: summarize_kind(results) for kind, results in by_kind.items()}
        if probe_result is not None:
            out["load"]["health"] = summarize_kind([probe_result])
        log(f"  load over after {load_s:.1f} s; waiting for the server to go idle")

        end_scrape, waited = wait_idle(srv.url, args.idle_timeout)
        server["idle_wait_s"] = round(waited, 2)
        time.sleep(args.settle)
        server["rss_after_mb"], server["tree_rss_after_mb"] = _rss_mb(srv.pid)
        end_scrape = Scrape(srv.url)
        out["metrics"]["end"] = end_scrape.summary()
        server["alive"] = srv.proc.poll() is None
        server["exit_code"] = srv.proc.returncode
    finally:
        if srv is not None:
            out["server"]["stderr_tail"] = srv.stderr_text()[-4000:]
            srv.stop()
            shutil.rmtree(srv.tmp, ignore_errors=True)
        out["upstream_stderr_tail"] = up.stderr_text()[-2000:]
        up.stop()
    return out


def _idle_scrape(base_url: str, args: argparse.Namespace) -> Scrape:
    """Wait until the server is idle, let it sit `--settle` seconds, then read `/metrics`."""
    wait_idle(base_url, args.idle_timeout)
    time.sleep(args.settle)
    return Scrape(base_url)


def _gauges(scrape: Scrape) -> str:
    if not scrape.ok:
        return scrape.error or "unavailable"
    return ", ".join(f"{k}={'-' if v is None else int(v)}" for k, v in scrape.values.items())


# -- verdicts --------------------------------------------------------------
def rss_bound_mb(start_mb: float, slack_mb: float, slack_pct: float) -> float:
    return round(start_mb + max(slack_mb, start_mb * slack_pct / 100.0), 1)


def evaluate(out: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The PASS/FAIL checks, each {"name", "ok", "value", "limit"}."""
    checks: list[dict[str, Any]] = []

    def add(name: str, ok: bool, value: Any, limit: str) -> None:
        checks.append({"name": name, "ok": bool(ok), "value": value, "limit": limit})

    load, server, metrics = out.get("load", {}), out.get("server", {}), out.get("metrics", {})
    warm_errors = sum(
        k["errors"] + k["unfinished"] for phase in out.get("warm_up", {}).values() for k in phase.values()
    )
    errors = sum(k["errors"] + k["unfinished"] for k in load.values()) + warm_errors
    requests = sum(k["started"] for k in load.values())
    alive = server.get("alive", False)
    add(
        "zero errors",
        errors == 0 and requests > 0 and alive,
        {"errors": errors, "requests": requests, "server_alive": alive},
        "errors == 0, server alive",
    )
    streams = load.get("streams")
    if streams is not None:
        done, started = streams.get("streams_done", 0), streams["started"]
        add("all streams ended with [DONE]", done == started and done > 0, f"{done}/{started}", "done == started")
    start, after = server.get("rss_start_mb"), server.get("rss_after_mb")
    if start and after is not None:
        bound = rss_bound_mb(start, args.rss_slack_mb, args.rss_slack_pct)
        add(
            "RSS back near start",
            after <= bound,
            {
                "cold_mb": server.get("rss_cold_mb"),
                "start_mb": start,
                "peak_mb": server.get("rss_peak_mb"),
                "after_mb": after,
                "ratio": round(after / start, 3),
            },
            f"after <= {bound} MB (start + max({args.rss_slack_mb:g} MB, {args.rss_slack_pct:g}%))",
        )
    else:
        add("RSS back near start", False, {"start_mb": start, "after_mb": after}, "RSS readable")
    end = metrics.get("end", {})
    in_flight, open_streams = end.get("in_flight"), end.get("open_streams")
    add(
        "nothing in flight after",
        in_flight == 0 and open_streams == 0,
        {"in_flight": in_flight, "open_streams": open_streams, **({"error": end["error"]} if "error" in end else {})},
        "nanobot_requests_in_flight 0, nanobot_open_streams 0",
    )
    idle_tasks, end_tasks = metrics.get("start", {}).get("tasks"), end.get("tasks")
    add(
        "asyncio tasks back to idle",
        idle_tasks is not None and end_tasks is not None and end_tasks <= idle_tasks + args.tasks_slack,
        {"idle": idle_tasks, "after": end_tasks},
        f"after <= idle + {args.tasks_slack}",
    )
    bad = {
        route: {s: n for s, n in codes.items() if s.isdigit() and int(s) >= 400}
        for route, codes in end.get("http_requests", {}).items()
    }
    bad = {route: codes for route, codes in bad.items() if codes}
    add(
        "server counted no error status",
        "http_requests" in end and not bad,
        bad or 0,
        "no nanobot_http_requests_total with status >= 400",
    )
    return checks


# -- output ----------------------------------------------------------------
def _fmt(value: Any) -> str:
    return "-" if value is None else str(value)


def render(out: dict[str, Any], checks: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"soak: {args.duration:g} s, {args.streams} streams + {args.clients} non-streaming + "
        f"{args.uploads} uploads + /health @ {args.probe_hz:g} Hz; upstream {args.tokens} words @ "
        f"{args.interval_ms:g} ms; load lasted {_fmt(out.get('load_s'))} s"
    ]
    header = (
        f"  {'kind':<10} {'clients':>7} {'started':>8} {'ok':>8} {'errors':>6} {'[DONE]':>8} "
        f"{'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'ttft99':>7} {'recon':>5} {'lg cpu%':>7}"
    )
    lines.append(header)
    for kind, k in out.get("load", {}).items():
        lines.append(
            f"  {kind:<10} {k['clients']:>7} {k['started']:>8} {k['completed']:>8} {k['errors'] + k['unfinished']:>6} "
            f"{_fmt(k.get('streams_done')):>8} {_fmt(k['rps']):>7} {_fmt(k['latency_p50_ms']):>8} "
            f"{_fmt(k['latency_p99_ms']):>8} {_fmt(k['latency_max_ms']):>8} {_fmt(k.get('ttft_p99_ms')):>7} "
            f"{k['reconnects']:>5} {k['loadgen_max_util'] * 100:>7.0f}"
        )
    warm = {
        f"warm-up {phase} {kind}": k for phase, kinds in out.get("warm_up", {}).items() for kind, k in kinds.items()
    }
    for kind, k in {**warm, **out.get("load", {})}.items():
        for reason, count in k["error_counts"].items():
            lines.append(f"  ERROR {kind}: {count} x {reason}: {k['error_samples'].get(reason, '')[:300]!r}")
        if k["unfinished"]:
            lines.append(f"  ERROR {kind}: {k['unfinished']} request(s) started but never answered")
    s = out.get("server", {})
    lines.append(
        f"server: cpu {_fmt(s.get('cpu_s'))} s ({_fmt(s.get('cpu_util'))} cores; main process "
        f"{_fmt(s.get('cpu_main_s'))} s), upstream cpu {_fmt(s.get('upstream_cpu_s'))} s"
    )
    ratio = round(s["rss_after_mb"] / s["rss_start_mb"], 3) if s.get("rss_start_mb") and s.get("rss_after_mb") else None
    cold = s.get("rss_cold_mb")
    lines.append(
        f"server RSS MB: cold {_fmt(cold)} (after a light warm-up; after/cold "
        f"{_fmt(round(s['rss_after_mb'] / cold, 3) if cold and s.get('rss_after_mb') else None)}), "
        f"start {_fmt(s.get('rss_start_mb'))}, peak {_fmt(s.get('rss_peak_mb'))}, after "
        f"{_fmt(s.get('rss_after_mb'))} (after/start {_fmt(ratio)}; with extraction workers: start "
        f"{_fmt(s.get('tree_rss_start_mb'))}, peak {_fmt(s.get('tree_rss_peak_mb'))}, after "
        f"{_fmt(s.get('tree_rss_after_mb'))}); idle {_fmt(s.get('idle_wait_s'))} s after the load"
    )
    m = out.get("metrics", {})
    during = m.get("during", {})
    if during.get("rss_mb"):
        points = during["rss_mb"]
        step = max(1, len(points) // 8)
        shown = points[::step] + ([points[-1]] if (len(points) - 1) % step else [])
        lines.append(
            "server RSS during the load (s: MB): "
            + ", ".join(f"{t:g}: {v}" for t, v in shown)
            + f"; growth over the second half {_fmt(during.get('rss_second_half_growth_mb'))} MB"
        )
    for label, snap in (("idle", m.get("start", {})), ("peak", during.get("peaks", {})), ("after", m.get("end", {}))):
        if "error" in snap:
            lines.append(f"/metrics {label}: {snap['error']}")
        else:
            lines.append(
                f"/metrics {label}: nanobot_requests_in_flight {_fmt(snap.get('in_flight'))}, "
                f"nanobot_open_streams {_fmt(snap.get('open_streams'))}, "
                f"nanobot_asyncio_tasks {_fmt(snap.get('tasks'))}"
            )
    for failure in during.get("failures", []):
        lines.append(f"/metrics during the load failed: {failure}")
    if m.get("end", {}).get("http_requests"):
        counts = "; ".join(f"{route} {codes}" for route, codes in sorted(m["end"]["http_requests"].items()))
        lines.append(f"server-side statuses: {counts}")
    lines.append("")
    for c in checks:
        lines.append(f"{'PASS' if c['ok'] else 'FAIL'}  {c['name']}: {json.dumps(c['value'])} ({c['limit']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    failure: str | None = None
    out: dict[str, Any] = {}
    try:
        run(args, out)
    except KeyboardInterrupt:
        failure = "interrupted"
    except Exception as exc:  # report what broke instead of a bare traceback
        failure = f"{type(exc).__name__}: {exc}"
    checks = evaluate(out, args) if failure is None else []
    if failure is not None:
        checks.append({"name": "soak ran to the end", "ok": False, "value": failure, "limit": "no exception"})
    passed = all(c["ok"] for c in checks)
    print(render(out, checks, args))
    if not passed and out.get("server", {}).get("stderr_tail"):
        print("\nserver stderr (tail):\n" + out["server"]["stderr_tail"][-2000:])
    print(f"\n{'PASS' if passed else 'FAIL'} (total {time.monotonic() - started:.1f} s)")
    if args.json:
        payload = {
            "meta": {
                "argv": sys.argv[1:],
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "loadavg": os.getloadavg(),
                "elapsed_s": round(time.monotonic() - started, 1),
            },
            "config": {k: v for k, v in vars(args).items() if k not in ("json", "silent")},
            "rss_bound_mb": rss_bound_mb(out["server"]["rss_start_mb"], args.rss_slack_mb, args.rss_slack_pct)
            if out.get("server", {}).get("rss_start_mb")
            else None,
            **out,
            "checks": checks,
            "pass": passed,
            "failure": failure,
        }
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=1)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
