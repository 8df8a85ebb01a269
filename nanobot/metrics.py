"""Prometheus metrics, served at ``GET /metrics``.

Each server process has its own registry (not the library's global one), so
several apps in one process, as in tests, never share counters. Values that
live elsewhere (queue depth, task count) are read when scraped.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from nanobot.outbound.base import Outbox
from nanobot.outbound.channels import KNOWN_CHANNELS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_EXTRACT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "nanobot_http_requests", "HTTP requests by route and status.", ["route", "status"], registry=r
        )
        self.in_flight = Gauge("nanobot_requests_in_flight", "Chat requests being served.", registry=r)
        self.open_streams = Gauge("nanobot_open_streams", "SSE responses currently streaming.", registry=r)
        self.latency = Histogram(
            "nanobot_request_seconds",
            "Time to answer a request, by route.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "nanobot_time_to_first_token_seconds",
            "From request start to the first content delta (streams).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter("nanobot_streamed_deltas", "Content deltas sent over SSE.", registry=r)
        self.completion_tokens = Counter(
            "nanobot_completion_tokens",
            "Completion tokens streamed to clients, as the provider counted them (deltas when it reports none).",
            registry=r,
        )
        self.upstream_errors = Counter("nanobot_upstream_errors", "Failed LLM calls by kind.", ["kind"], registry=r)
        self.extraction = Histogram(
            "nanobot_extraction_seconds",
            "Time to read one uploaded file, by detected kind.",
            ["kind"],
            buckets=_EXTRACT_BUCKETS,
            registry=r,
        )
        self.outbox = Gauge(
            "nanobot_outbox_rows", "Outbound queue rows by channel and state.", ["channel", "state"], registry=r
        )
        self.tasks = Gauge("nanobot_asyncio_tasks", "Tasks alive on the server's event loop.", registry=r)
        self.cron_fired = Counter("nanobot_cron_jobs_fired", "Scheduled jobs this process fired.", registry=r)
        self.cron_failures = Counter(
            "nanobot_cron_job_failures", "Fired jobs whose turn failed or timed out.", registry=r
        )
        self.subagents = Gauge("nanobot_subagents_running", "Subagents running in this process.", registry=r)
        # labels() builds a key and takes a lock on every call: the children
        # of the few (route, status) pairs are looked up once, then kept.
        self._answered: dict[tuple[str, int], tuple[Any, Any]] = {}

    def answered(self, route: str, status: int, seconds: float) -> None:
        """One request answered: counted by route and status, its time by route."""
        children = self._answered.get((route, status))
        if children is None:
            children = self.requests.labels(route, str(status)), self.latency.labels(route)
            self._answered[(route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    async def render(self, outbox: Outbox) -> bytes:
        """The exposition text, with scrape-time values refreshed first (``outbox``: the queue's depth)."""
        counts = await outbox.counts()
        # One series per configured channel and one "other": the message
        # tool's channel is whatever the model wrote, and each new label
        # value would be a series kept for the life of the process.
        rows: dict[tuple[str, str], int] = {}
        for (channel, state), n in counts.items():
            label = (channel if channel in KNOWN_CHANNELS else "other", state)
            rows[label] = rows.get(label, 0) + n
        self.outbox.clear()
        for (channel, state), n in rows.items():
            self.outbox.labels(channel, state).set(n)
        self.tasks.set(len(asyncio.all_tasks()))
        return generate_latest(self.registry)
