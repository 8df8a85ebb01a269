"""A short `python -m bench soak`: mixed load held on one server, then zero errors and no leak.

The full run (`python -m bench soak`: 300 streams + 32 non-streaming clients +
4 uploaders for a minute) is for people; CI runs the same harness shortened
(~30 s wall on a 2-core machine) and checks what it wrote to its JSON file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from servers import ROOT

from bench.scrape import parse_metrics
from bench.soak import rss_bound_mb

pytestmark = pytest.mark.alone  # its figures bound CPU time: no other test beside it


@pytest.mark.timeout(150)
def test_short_soak_holds_with_no_errors_and_no_leak(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "soak",
            "--duration",
            "15",
            "--streams",
            "100",
            "--clients",
            "16",
            "--uploads",
            "2",
            "--json",
            str(out),
            "--silent",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = proc.stdout[-6000:] + proc.stderr[-3000:]
    assert out.exists(), report
    data = json.loads(out.read_text())
    assert proc.returncode == 0, report
    assert data["pass"] is True and data["failure"] is None, report
    assert all(check["ok"] for check in data["checks"]), report
    assert {c["name"] for c in data["checks"]} >= {
        "zero errors",
        "all streams ended with [DONE]",
        "RSS back near start",
        "nothing in flight after",
    }

    load = data["load"]
    assert set(load) == {"streams", "nonstream", "uploads", "health"}
    for kind, figures in load.items():
        assert figures["errors"] == 0 and figures["unfinished"] == 0, (kind, figures["error_samples"])
        assert figures["completed"] == figures["started"] > 0, kind
        assert set(figures["statuses"]) == {"200"}, (kind, figures["statuses"])
    streams = load["streams"]
    assert streams["streams_done"] == streams["started"] >= 100
    assert streams["tokens"] == streams["started"] * 20  # 20 words per reply

    server = data["server"]
    assert server["alive"] is True
    assert 0 < server["rss_start_mb"] <= server["rss_peak_mb"]
    assert server["rss_after_mb"] <= rss_bound_mb(server["rss_start_mb"], 30.0, 25.0) == data["rss_bound_mb"]
    assert server["cpu_s"] > 0

    end = data["metrics"]["end"]
    assert end["in_flight"] == 0 and end["open_streams"] == 0
    assert end["tasks"] <= data["metrics"]["start"]["tasks"] + 10
    assert data["metrics"]["during"]["peaks"]["open_streams"] > 0
    chat = end["http_requests"]["/v1/chat/completions"]
    assert set(chat) == {"200"}


def test_parse_metrics_and_rss_bound() -> None:
    text = (
        "# HELP nanobot_open_streams SSE responses currently streaming.\n"
        "# TYPE nanobot_open_streams gauge\n"
        "nanobot_open_streams 0.0\n"
        'nanobot_http_requests_total{route="/health",status="200"} 12.0\n'
    )
    metrics = parse_metrics(text)
    assert metrics["nanobot_open_streams"] == 0.0
    assert metrics['nanobot_http_requests_total{route="/health",status="200"}'] == 12.0
    assert rss_bound_mb(80.0, 30.0, 25.0) == 110.0  # the absolute slack wins on a small server
    assert rss_bound_mb(200.0, 30.0, 25.0) == 250.0  # the relative one on a big one
