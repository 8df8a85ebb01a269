"""Run one scenario against each target and measure it.

Targets: `direct` (the scripted upstream itself: the limit), `server` (nanobot
pointed at that upstream), `peer` (`--peer URL` / `--peer-cmd`), and for the
no-op scenario `server+noopN`. Each scenario gets a fresh upstream with its own
`--tokens/--interval-ms`, and a fresh server (own workspace) pointed at it.
Around each measured run the harness reads the target's process-tree CPU and
samples its RSS; the load generators report their own CPU.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import uuid
from dataclasses import dataclass
from typing import Any

from bench import client_tools, report
from bench.pdfgen import cached_pdf
from bench.procs import PeerProcess, post_json, run_loadgens
from bench.procstat import RssSampler, own_cpu, runqueue_wait, tree_cpu
from bench.scenarios import Scenario
from nanobot.config import DEFAULT_STAGES
from nanobot.testing.process import UpstreamProcess, free_port
from nanobot.testing.server_process import ServerProcess, merge, upstream_config

_BENCH_CONFIG: dict[str, Any] = {
    "api": {"maxConcurrentRequests": 10000, "timeout": 600},
}


@dataclass
class Target:
    name: str
    url: str
    pid: int | None
    model: str | None = "scripted"
    api_key: str | None = None
    upstream_pid: int | None = None
    urls: list[str] | None = None  # several nodes: the load is spread over these
    pids: list[int] | None = None  # several nodes: CPU is summed over these
    db_pid: int | None = None  # PostgreSQL's postmaster: its CPU is reported apart


class ScenarioRunner:
    """Everything needed to run scenarios with the command-line settings."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.log = print if not args.silent else (lambda *a, **k: None)
        self._postgres: Any = None

    def close(self) -> None:
        if self._postgres is not None:
            self._postgres.stop()
            self._postgres = None

    def _pg_name(self) -> str:
        return "pg" if self.args.nodes <= 1 else f"pg-{self.args.nodes}nodes"

    # -- processes ---------------------------------------------------------
    def _upstream(self, sc: Scenario) -> UpstreamProcess:
        extra = ["--backlog", "4096"]
        if self.args.upstream_port:
            extra += ["--port", str(self.args.upstream_port)]
        return UpstreamProcess.start(tokens=sc.tokens, interval_ms=sc.interval_ms, record=False, extra_args=extra)

    def _server(
        self,
        up: UpstreamProcess,
        stages: list[str] | None = None,
        database: str | None = None,
        env: dict[str, str] | None = None,
        config: dict[str, Any] | None = None,
    ) -> ServerProcess:
        """A server pointed at ``up``; ``--server-config`` and then ``config`` merged over the bench's."""
        base = merge(upstream_config(up.url), _BENCH_CONFIG)
        for extra in (self.args.server_config, config):
            if extra is not None:
                base = merge(base, extra)
        config = base
        if database is not None:
            config = merge(config, {"database": {"url": database}})
        config = merge(config, {"providers": {"scripted": {"timeout": 600}}})
        if stages is not None:
            config = merge(config, {"pipeline": {"stages": stages}})
        if self.args.server_workers > 1:
            config = merge(config, {"api": {"workers": self.args.server_workers}})
        return ServerProcess(config, env=env)

    @staticmethod
    def _stop_server(srv: ServerProcess) -> None:
        srv.stop()
        shutil.rmtree(srv.tmp, ignore_errors=True)

    def _peer(self, up: UpstreamProcess) -> tuple[Target, PeerProcess | None]:
        args = self.args
        peer: PeerProcess | None = None
        url = args.peer
        if args.peer_cmd:
            port = args.peer_port or free_port()
            url = url or f"http://127.0.0.1:{port}"
            command = args.peer_cmd
            # Plain replacement, not str.format: the command may hold JSON braces.
            for key, value in (
                ("{port}", port),
                ("{upstream_base}", up.base_url),
                ("{upstream_port}", up.port),
                ("{upstream}", up.url),
            ):
                command = command.replace(key, str(value))
            peer = PeerProcess(command, url.rstrip("/"), timeout=args.peer_timeout)
        pid = peer.pid if peer else args.peer_pid
        return Target("peer", url.rstrip("/"), pid, args.peer_model, args.peer_api_key), peer

    # -- measuring ---------------------------------------------------------
    def _warm_up(self, target: Target, sc: Scenario) -> None:
        """A few instant turns (`#empty`) so imports and pools are not measured."""
        url = target.url + "/v1/chat/completions"
        for stream in (False, True, False):
            body: dict[str, Any] = {"messages": [{"role": "user", "content": "warm-up #empty"}], "stream": stream}
            if target.model:
                body["model"] = target.model
            try:
                post_json(url, body, target.api_key)
            except Exception as exc:  # a peer may refuse; the run will show it
                self.log(f"  warm-up of {target.name} failed: {exc}")
                return
        if sc.kind == "upload":
            self._measure(sc, target, clients=1, file=str(cached_pdf(200_000, 2)), warm=True)

    def _specs(
        self, sc: Scenario, target: Target, clients: int, file: str | None, tools: list[Any] | None = None
    ) -> list[dict[str, Any]]:
        procs = self.args.loadgen_procs or (2 if clients >= 1000 else 1)
        urls = target.urls or [target.url]
        procs = max(1, min(max(procs, len(urls)), clients))
        prefix = f"bench-{uuid.uuid4().hex[:8]}-"
        kind = "upload" if sc.kind == "upload" else "chat"
        # The Responses route is the server's (and a peer's); the scripted upstream speaks chat only.
        api = getattr(self.args, "api", "chat") if sc.kind == "chat" and target.name != "direct" else "chat"
        path = "/v1/responses" if api == "responses" else "/v1/chat/completions"
        specs = []
        offset = 0
        for index in range(procs):
            share = clients // procs + (1 if index < clients % procs else 0)
            requests = sc.requests
            if requests is not None:
                requests = requests // procs + (1 if index < requests % procs else 0)
            specs.append(
                {
                    "url": urls[index % len(urls)],
                    "kind": kind,
                    "stream": sc.stream,
                    "model": target.model,
                    "clients": share,
                    "duration": sc.duration,
                    "requests": requests,
                    "timeout": self.args.timeout,
                    "session_prefix": prefix,
                    "client_offset": offset,
                    "api_key": target.api_key,
                    "file": file,
                    "tools": tools,
                    "api": api,
                    "path": path,
                }
            )
            offset += share
        return specs

    def _measure(
        self,
        sc: Scenario,
        target: Target,
        clients: int | None = None,
        file: str | None = None,
        warm: bool = False,
        tools: list[Any] | None = None,
    ) -> dict[str, Any]:
        clients = clients or sc.clients
        if sc.kind == "upload" and file is None:
            file = str(cached_pdf(sc.upload_bytes))
        specs = self._specs(sc, target, clients, file, tools)
        probe = None
        if sc.kind == "upload" and not warm:
            probe = {
                "url": target.url,
                "kind": "probe",
                "path": "/health",
                "hz": sc.probe_hz,
                "duration": 3600.0,
                "timeout": self.args.timeout,
                "api_key": target.api_key,
            }
        timeout = (sc.duration if sc.duration < 3600 else 0) + self.args.timeout + 60
        # A peer started through a shell, or a server with workers: the whole tree.
        tree = target.name == "peer" or (target.name != "direct" and self.args.server_workers > 1)
        sampler = RssSampler(target.pid, tree=tree).start() if target.pid else None
        pids = target.pids or ([target.pid] if target.pid else [])
        cpu0 = sum(tree_cpu(p) for p in pids) if target.pid else None
        db0 = tree_cpu(target.db_pid) if target.db_pid else None
        main0 = own_cpu(target.pid)
        # With workers, target.pid is the supervisor, whose thread only waits.
        wait0 = None if tree else runqueue_wait(target.pid)
        up0 = tree_cpu(target.upstream_pid) if target.upstream_pid else None
        try:
            loadgens, probe_result = run_loadgens(specs, probe, timeout)
        finally:
            rss = sampler.stop() if sampler else None
        cpu = sum(tree_cpu(p) for p in pids) - cpu0 if cpu0 is not None and target.pid else None
        up_cpu = tree_cpu(target.upstream_pid) - up0 if up0 is not None and target.upstream_pid else None
        raw: dict[str, Any] = {
            "loadgens": loadgens,
            "probe": probe_result,
            "cpu": cpu,
            "upstream_cpu": up_cpu,
            "cpu_main": own_cpu(target.pid) - main0 if cpu0 is not None else None,
        }
        if db0 is not None:
            raw["db_cpu"] = tree_cpu(target.db_pid) - db0
        wait1 = runqueue_wait(target.pid) if wait0 is not None else None
        if wait0 is not None and wait1 is not None:
            raw["loop_runqueue_wait"] = wait1 - wait0
        if rss is not None:
            raw["rss"] = {
                "before_kb": rss.before_kb,
                "peak_kb": rss.peak_kb,
                "after_kb": rss.after_kb,
                "tree_peak_kb": rss.tree_peak_kb,
            }
        return raw

    def _run_target(self, sc: Scenario, target: Target, rounds: int = 1) -> dict[str, Any]:
        self._warm_up(target, sc)
        raws = [self._measure(sc, target) for _ in range(rounds)]
        figures = report.summarize(raws, sc.clients)
        self.log(
            f"  {sc.name} [{target.name}]: {figures['completed']} ok, {figures['errors']} errors, "
            f"cpu {figures['cpu_s']} s, loadgen util {figures['loadgen_max_util']}"
        )
        return figures

    # -- scenarios ---------------------------------------------------------
    def run(self, sc: Scenario) -> dict[str, Any]:
        """All targets of one scenario; returns its JSON-ready report."""
        self.log(f"scenario {sc.name}: {sc.description}")
        wanted = [t for t in sc.targets if t in self.args.targets]
        if "peer" in wanted and not (self.args.peer or self.args.peer_cmd):
            wanted.remove("peer")
        if self.args.database == "postgres" and "server" in wanted:
            wanted.insert(wanted.index("server") + 1, self._pg_name())
        results: dict[str, dict[str, Any]] = {}
        extra: dict[str, Any] = {}
        load = [round(x, 2) for x in os.getloadavg()]  # how noisy the machine was
        up = self._upstream(sc)
        try:
            if sc.kind == "noop":
                results, extra = self._run_noop(sc, up)
            if sc.kind == "tools":
                results, extra = client_tools.run(self, sc, up)
            for name in wanted if sc.kind not in ("noop", "tools") else ():
                results[name] = self._run_named(sc, name, up)
        finally:
            up.stop()
        return {
            "name": sc.name,
            "description": sc.description,
            "config": sc.spec(),
            "results": results,
            "ratios": report.ratios(results),
            "extra": extra,
            "loadavg_at_start": load,
        }

    def _run_named(self, sc: Scenario, name: str, up: UpstreamProcess) -> dict[str, Any]:
        if name == "direct":
            return self._run_target(sc, Target("direct", up.url, up.pid))
        if name == "server":
            srv = self._server(up)
            try:
                return self._run_target(sc, Target("server", srv.url, srv.pid, upstream_pid=up.pid))
            finally:
                self._stop_server(srv)
        if name == self._pg_name():
            return self._run_postgres(sc, up)
        target, peer = self._peer(up)
        target.upstream_pid = up.pid
        try:
            return self._run_target(sc, target)
        finally:
            if peer is not None:
                peer.stop()

    def _run_postgres(self, sc: Scenario, up: UpstreamProcess) -> dict[str, Any]:
        """``--nodes`` servers on one fresh database of a throwaway cluster."""
        # only with --database postgres
        from nanobot.testing.postgres import PostgresCluster

        if self._postgres is None:
            self._postgres = PostgresCluster.start()
        url = self._postgres.new_database()
        nodes: list[ServerProcess] = []
        try:
            for _ in range(max(1, self.args.nodes)):
                nodes.append(self._server(up, database=url))
            target = Target(
                self._pg_name(),
                nodes[0].url,
                nodes[0].pid,
                upstream_pid=up.pid,
                urls=[n.url for n in nodes],
                pids=[n.pid for n in nodes],
                db_pid=self._postgres.server_pids()[0],
            )
            for node in nodes[1:]:
                self._warm_up(Target(target.name, node.url, node.pid), sc)
            return self._run_target(sc, target)
        finally:
            for node in nodes:
                self._stop_server(node)

    def _run_noop(self, sc: Scenario, up: UpstreamProcess) -> tuple[dict[str, Any], dict[str, Any]]:
        """Default pipeline vs N no-op stages, in paired rounds on fresh servers.

        Two identical server processes differ by a few % in CPU per request
        (memory layout, hash seed, start order), more than ten no-op stages
        cost; so every round starts a fresh pair, and alternates (ABBA) which
        one starts and runs first. The cost is the median paired difference.
        """
        stages = list(DEFAULT_STAGES)
        stages[2:2] = ["bench.stages:NoOp"] * sc.noop_stages  # after decode/validate
        label = f"server+noop{sc.noop_stages}"
        pipelines: list[tuple[str, list[str] | None]] = [("server", None), (label, stages)]
        raws: dict[str, list[dict[str, Any]]] = {"server": [], label: []}
        for index in range(sc.rounds):
            order = pipelines if index % 2 == 0 else pipelines[::-1]
            servers: list[ServerProcess] = []
            try:
                for _, chosen in order:
                    servers.append(self._server(up, chosen))
                targets = [
                    Target(name, srv.url, srv.pid, upstream_pid=up.pid)
                    for (name, _), srv in zip(order, servers, strict=False)
                ]
                for target in targets:
                    self._warm_up(target, sc)
                for target in targets:
                    raws[target.name].append(self._measure(sc, target))
            finally:
                for srv in servers:
                    self._stop_server(srv)
        results = {name: report.summarize(r, sc.clients) for name, r in raws.items()}
        self.log(f"  {sc.name}: {sc.rounds} paired rounds done")
        return results, _noop_cost(raws["server"], raws[label], sc)


def _noop_cost(plain: list[dict[str, Any]], noop: list[dict[str, Any]], sc: Scenario) -> dict[str, Any]:
    """Cost per stage: the median over rounds of (noop - plain) CPU per request, / N.

    Rounds are paired (run back to back) so the drift of a shared machine
    cancels out; the noise figure is the standard error of that median
    estimated from the spread of the paired differences (1.4826 * MAD / sqrt(n)).
    """
    per_round = {
        name: [report.summarize([raw], sc.clients).get("cpu_per_req_us") for raw in raws]
        for name, raws in (("plain", plain), ("noop", noop))
    }
    diffs = [
        b - a for a, b in zip(per_round["plain"], per_round["noop"], strict=False) if a is not None and b is not None
    ]
    extra: dict[str, Any] = {"round_cpu_per_req_us": per_round}
    if diffs:
        middle = statistics.median(diffs)
        extra["noop_cost_per_stage_us"] = round(middle / sc.noop_stages, 2)
        if len(diffs) > 1:
            mad = statistics.median(abs(d - middle) for d in diffs)
            extra["noise_per_stage_us"] = round(1.4826 * mad / math.sqrt(len(diffs)) / sc.noop_stages, 2)
    return extra
