"""The benchmark's opt-in measuring (nanobot/server/measure.py): off it installs nothing; on it
times every phase of real turns and profiles the loop, written out when the server stops."""

from __future__ import annotations

import json
import pstats
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from common import CHAT, HI
from servers import ServerProcess, upstream_config

from nanobot.pipeline import Pipeline
from nanobot.server.measure import PHASES, PHASES_ENV, PROFILE_ENV, Measuring
from nanobot.testing.process import UpstreamProcess


def test_off_it_leaves_the_stages_and_the_store_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PHASES_ENV, raising=False)
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    pipeline = Pipeline.from_names(["decode", "validate"])
    stages = pipeline.stages
    measuring = Measuring()
    measuring.install(None, pipeline)  # type: ignore[arg-type]  # off: the services are never looked at
    measuring.start()
    assert pipeline.stages is stages
    assert measuring.profiler is None and measuring.totals is None
    measuring.finish()


def test_phases_and_profile_of_real_turns(
    tmp_path: Path, upstream: UpstreamProcess, make_server: Callable[..., ServerProcess]
) -> None:
    phases, profile = tmp_path / "phases-{pid}.json", tmp_path / "loop.prof"
    srv = make_server(upstream_config(upstream.url), env={PHASES_ENV: str(phases), PROFILE_ENV: str(profile)})
    pid = srv.pid
    plain = requests.post(srv.url + CHAT, json={**HI, "session_id": "m1"}, timeout=30)
    assert plain.status_code == 200, plain.text
    streamed = requests.post(srv.url + CHAT, json={**HI, "session_id": "m2", "stream": True}, timeout=30)
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    refused = requests.post(srv.url + CHAT, data=b"{not json", headers={"Content-Type": "application/json"})
    assert refused.status_code == 400
    response = requests.post(srv.url + "/v1/responses", json={"model": "scripted", "input": "hi"}, timeout=30)
    assert response.status_code == 200, response.text  # the Responses route is timed too
    assert srv.stop() == 0
    written = Path(str(phases).replace("{pid}", str(pid)))
    totals: dict[str, Any] = json.loads(written.read_text())
    assert totals["requests"] == 4 and totals["turns_stored"] == 3
    seconds = totals["seconds"]
    assert set(seconds) == set(PHASES)
    for name in ("decode_validate", "session", "agent", "store", "encode"):
        assert seconds[name] > 0, name
    assert seconds["other_stages"] == 0
    stats: dict[Any, Any] = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    encoders = [calls for (filename, _, name), (_, calls, _, _, _) in stats.items() if filename.endswith("encode.py")]
    assert encoders and max(encoders) >= 2  # both turns went through encode while it recorded
