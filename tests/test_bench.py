"""The benchmark harness: a real (tiny) `python -m bench` run, plus its parsers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from servers import ROOT

from bench.httpconn import Conn, RequestFailed
from bench.report import pct

pytestmark = pytest.mark.alone  # its figures bound CPU time: no other test beside it


def test_quick_bench_run_reports_sane_figures(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--scenarios",
            "nonstream-c1,stream-s100",
            "--duration",
            "1",
            "--streams",
            "20",
            "--json",
            str(out),
            "--silent",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "nonstream-c1" in proc.stdout and "server/direct" in proc.stdout
    assert "streamed tokens/s" in proc.stdout and "words/s" in proc.stdout
    data = json.loads(out.read_text())
    assert data["failed"] == []
    by_name = {sc["name"]: sc for sc in data["scenarios"]}
    assert set(by_name) == {"nonstream-c1", "stream-s100"}

    for sc in by_name.values():
        assert set(sc["results"]) == {"direct", "server"}
        for target, m in sc["results"].items():
            assert m["errors"] == 0, (sc["name"], target, m["error_samples"])
            assert m["completed"] > 0 and m["completed"] == m["started"]
            assert m["rps"] > 0 and m["latency_p50_ms"] > 0
            assert m["latency_p99_ms"] >= m["latency_p50_ms"]
            assert m["cpu_s"] > 0 and m["cpu_per_req_us"] > 0
            assert m["rss_peak_mb"] >= m["rss_before_mb"] > 0
            assert 0 < m["loadgen_max_util"] < 1
        assert sc["ratios"]["server/direct"]["rps"] > 0

    stream = by_name["stream-s100"]
    assert stream["config"]["tokens"] == 100
    for m in stream["results"].values():
        assert m["streams_started"] == m["streams_done"] == 20
        assert m["tokens"] == 20 * 100
        assert m["cpu_per_token_us"] > 0
        assert 0 < m["ttft_p50_ms"] <= m["ttft_p99_ms"]
        assert 10 < m["gap_p50_ms"] < 200  # 20 ms apart upstream
        assert m["tokens_per_s"] > 0
        assert m["completion_tokens"] == 20 * 100 and m["streamed_tokens_per_s"] > 0
    server = stream["results"]["server"]
    assert server["upstream_cpu_s"] > 0
    assert server["loop_runqueue_wait_ms"] >= 0  # read from the server's own schedstat
    assert any(c["target"].startswith("stream-s100") for c in data["checks"])


def test_bench_runs_the_chat_scenarios_against_the_responses_route(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--api", "responses", "--scenarios", "nonstream-c1,stream-s100"]
        + ["--duration", "1", "--streams", "10", "--targets", "server", "--json", str(out), "--silent"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    by_name = {sc["name"]: sc["results"]["server"] for sc in json.loads(out.read_text())["scenarios"]}
    plain, stream = by_name["nonstream-c1"], by_name["stream-s100"]
    assert plain["errors"] == 0, plain["error_samples"]
    assert plain["completed"] > 0 and plain["completed"] == plain["started"]
    assert stream["errors"] == 0, stream["error_samples"]
    # Every `response.output_text.delta` counted, every stream ended by `response.completed`.
    assert stream["streams_started"] == stream["streams_done"] == 10
    assert stream["tokens"] == stream["completion_tokens"] == 10 * 100
    assert 0 < stream["ttft_p50_ms"] and 10 < stream["gap_p50_ms"] < 200
    assert stream["cpu_per_token_us"] > 0


def test_compare_runs_a_revision_and_a_checkout_side_by_side(tmp_path: Path) -> None:
    out, profiles = tmp_path / "out.json", tmp_path / "prof"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--compare",
            "HEAD",
            str(ROOT),
            "--scenarios",
            "nonstream-c1,stream-s100",
            "--quick",
            "--duration",
            "1",
            "--streams",
            "10",
            "--rounds",
            "2",
            "--targets",
            "direct",
            "--phases",
            "--profile",
            str(profiles),
            "--json",
            str(out),
            "--silent",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "B/A" in proc.stdout and "server CPU per turn (us)" in proc.stdout
    results = {sc["name"]: sc for sc in json.loads(out.read_text())["compare"]}
    assert set(results) == {"nonstream-c1", "stream-s100"}
    a, b = results["nonstream-c1"]["sides"]
    assert a == "HEAD" and b == str(ROOT)
    for sc in results.values():
        assert sc["errors"] == {a: 0, b: 0}
        assert all(len(rounds) == 2 for rounds in sc["rounds"].values())
        rows = {r["figure"]: r for r in sc["rows"]}
        cpu = rows["cpu_per_token_us" if sc["config"]["stream"] else "cpu_per_req_us"]
        assert cpu[a] > 0 and cpu[b] > 0 and cpu["ratio"] == round(cpu[b] / cpu[a], 3)
        assert len(cpu["round_ratios"]) == 2
        # this checkout's servers ran with their phase timers
        assert sc["phases_us_per_request"][b]["agent"] > 0
    stream_rows = {r["figure"] for r in results["stream-s100"]["rows"]}
    assert {"ttft_p99_over_direct_ms", "rss_mb_per_100_streams"} <= stream_rows
    # this checkout's servers each left a profile (2 scenarios x 2 rounds)
    dumps = sorted(profiles.glob(f"*{b.replace('/', '_')}-r*.prof"))
    assert len(dumps) == 4
    table = subprocess.run(
        [sys.executable, "-m", "bench.profiles", *map(str, dumps[:2]), "--top", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert table.returncode == 0, table.stderr
    assert table.stdout.count("\n| `") == 5 and "calls/turn" in table.stdout


def test_pct_is_nearest_rank() -> None:
    samples = [float(x) for x in range(1, 101)]
    assert pct(samples, 0.5) == 50.0
    assert pct(samples, 0.99) == 99.0
    assert pct([3.0], 0.99) == 3.0
    assert pct([], 0.5) is None


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent = b""
        self.closed = False

    def write(self, data: Any) -> None:
        self.sent += bytes(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


SSE_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"".join(
        b"%x\r\n%s\r\n" % (len(frame), frame)
        for frame in (
            b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n',
            b'data: {"choices":[{"delta":{"content":"a "}}]}\n\ndata: {"choices":[{"delta":{"content":"b"}}]}\n\n',
            b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\r\n\r\n',
            b"data: [DONE]\n\n",
        )
    )
    + b"0\r\n\r\n"
)


@pytest.mark.parametrize("piece", [1, 7, 64, len(SSE_RESPONSE)])
def test_conn_parses_chunked_sse_split_anywhere(piece: int) -> None:
    async def run() -> Any:
        conn = Conn()
        transport = _Transport()
        conn.connection_made(transport)
        task = asyncio.ensure_future(conn.request(b"GET / HTTP/1.1\r\n\r\n", stream=True, timeout=5))
        await asyncio.sleep(0)
        for start in range(0, len(SSE_RESPONSE), piece):
            conn.data_received(SSE_RESPONSE[start : start + piece])
        return await task, conn

    resp, conn = asyncio.run(run())
    assert resp.status == 200 and resp.done and resp.sse_error is None
    assert resp.tokens == 2 and resp.ttft is not None and len(resp.gaps) == 1
    assert not conn.closed  # keep-alive: ready for the next request


def _answer(raw: bytes, close: bool = False) -> Any:
    async def run() -> Any:
        conn = Conn()
        conn.connection_made(_Transport())
        task = asyncio.ensure_future(conn.request(b"GET / HTTP/1.1\r\n\r\n", timeout=5))
        await asyncio.sleep(0)
        conn.data_received(raw)
        if close:
            conn.connection_lost(None)
        return await task, conn

    return asyncio.run(run())


def test_conn_parses_content_length_and_connection_close() -> None:
    body = b'{"choices":[]}'
    raw = b"HTTP/1.1 503 Busy\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    resp, conn = _answer(raw)
    assert resp.status == 503 and bytes(resp.body) == body
    assert conn.closed


def test_tools_bench_reports_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "tools.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.tools", "--quick", "--execs", "2", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "per read_file call" in proc.stdout
    data = json.loads(out.read_text())
    assert data["cpu_us"]["read_file_turn"] > 0 and data["cpu_us"]["plain_turn"] > 0
    if "health_during_exec" in data:  # bubblewrap installed
        during = data["health_during_exec"]
        assert during["execs_ok"] == 2 and during["during"]["n"] > 10
        assert during["during"]["p99_ms"] >= during["during"]["p50_ms"] > 0


def test_web_mcp_bench_reports_its_figures(tmp_path: Path) -> None:
    out = tmp_path / "web_mcp.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.web_mcp",
            "--fetches",
            "2",
            "--rounds",
            "1",
            "--page-bytes",
            "200000",
            "--calls",
            "40",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "per MCP call" in proc.stdout
    data = json.loads(out.read_text())
    during = data["during_fetches"]
    assert during["fetches_ok"] == 2 and during["health"]["n"] > 0
    # CPU is counted in clock ticks (10 ms): a few dozen calls may round the MCP server's share to zero.
    assert data["mcp_cpu_us"]["mcp_turn"] > 0 and data["mcp_cpu_us"]["per_call_mcp_server"] >= 0


def test_html_extractors_bench_scores_the_chosen_library() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.html_extractors", "--repeat", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(row for row in proc.stdout.splitlines() if row.startswith("trafilatura"))
    assert "kept 17/17 phrases, scripts/styles 0/9, chrome 0/15" in line


def test_conn_reads_any_valid_framing() -> None:
    # No space after the colon, and a body that ends when the connection does:
    # both valid HTTP, both missed by substring matching on the head.
    resp, conn = _answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding:chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert resp.status == 200 and bytes(resp.body) == b"abc" and not conn.closed
    resp, conn = _answer(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", close=True)
    assert resp.status == 200 and bytes(resp.body) == b"until the end" and conn.closed


def test_conn_fails_a_malformed_answer() -> None:
    with pytest.raises(RequestFailed, match="malformed"):
        _answer(b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n")


async def _answering(answers: list[bytes]) -> tuple[asyncio.Server, int]:
    """A loopback server that sends the next of `answers` for each request it reads."""
    pending = list(answers)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while pending:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(pending.pop(0))
                await writer.drain()
            await reader.read()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def test_conn_reads_heads_by_http_rules_and_skips_an_interim_answer() -> None:
    answers = [
        b"HTTP/1.1 200 OK\r\ncontent-length:2\r\n\r\nok",
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding:  Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\ndone",  # 1.0 without keep-alive: the server closes
    ]

    async def run() -> tuple[list[Any], list[bool]]:
        server, port = await _answering(answers)
        async with server:
            conn = await Conn.open("127.0.0.1", port)
            got, open_after = [], []
            for _ in answers:
                resp = await conn.request(REQUEST, timeout=5)
                got.append((resp.status, bytes(resp.body)))
                open_after.append(not conn.closed)
            conn.close()
            return got, open_after

    got, open_after = asyncio.run(run())
    assert got == [(200, b"ok"), (201, b"abc"), (200, b"done")]
    assert open_after == [True, True, False]


def test_conn_closes_on_connection_close_however_spelt() -> None:
    async def run() -> bool:
        server, port = await _answering([b"HTTP/1.1 200 OK\r\nConnection:Close\r\nContent-Length: 0\r\n\r\n"])
        async with server:
            conn = await Conn.open("127.0.0.1", port)
            assert (await conn.request(REQUEST, timeout=5)).status == 200
            closed = conn.closed
            conn.close()
            return closed

    assert asyncio.run(run())


def test_client_tools_bench_offers_the_tools_and_reports_the_overhead(tmp_path: Path) -> None:
    from bench.client_tools import TOOLS
    from bench.loadgen import Spec
    from bench.payloads import build_request

    _, body = build_request(Spec(url="http://x", tools=TOOLS), "x", 0)
    assert json.loads(body)["tools"] == TOOLS
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--scenarios", "client-tools", "--duration", "1"]
        + ["--json", str(out), "--silent"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    [sc] = json.loads(out.read_text())["scenarios"]
    assert set(sc["results"]) == {"server", "server+3tools"}
    for m in sc["results"].values():
        assert m["errors"] == 0 and m["completed"] > 0 and m["cpu_per_req_us"] > 0
    assert isinstance(sc["extra"]["client_tools_overhead_pct"], float)
    assert "3 client tools vs none" in proc.stdout


def test_server_config_and_config_b_reach_the_servers_they_name(tmp_path: Path) -> None:
    from bench.__main__ import parse_args
    from bench.runner import ScenarioRunner
    from nanobot.testing.process import UpstreamProcess

    both = '{"api": {"maxBodyBytes": 123456}}'
    b_only = '{"tools": {"cron": {"enabled": false}}}'
    args = parse_args(["--compare", "HEAD", ".", "--server-config", both, "--config-b", b_only, "--silent"])
    runner, up = ScenarioRunner(args), UpstreamProcess.start(record=False)
    try:
        for extra in (None, args.config_b):
            srv = runner._server(up, config=extra)
            try:
                config = json.loads(srv.config_path.read_text())
                assert config["api"]["maxBodyBytes"] == 123456
                assert config.get("tools") == (None if extra is None else {"cron": {"enabled": False}})
                assert config["providers"]["scripted"]["apiBase"] == up.base_url  # the bench's own stays
            finally:
                runner._stop_server(srv)
    finally:
        up.stop()
    bad = subprocess.run(
        [sys.executable, "-m", "bench", "--config-b", "{}"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 2 and "--config-b needs --compare" in bad.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "bench", "--server-config", "[1]"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 2 and "expected a JSON object" in bad.stderr
