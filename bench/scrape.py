"""Reading the server's /metrics during and after a soak run."""

from __future__ import annotations

import re
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from bench.procstat import rss_kb

MB = 1024.0
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy
_LABELS = re.compile(r'(\w+)="([^"]*)"')


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """(status, body) of one GET; status 0 with the reason when it failed to connect."""
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {'name{labels}': value} (comments skipped)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


def http_statuses(metrics: dict[str, float]) -> dict[str, dict[str, int]]:
    """`nanobot_http_requests_total` as {route: {status: count}}."""
    out: dict[str, dict[str, int]] = {}
    for key, value in metrics.items():
        if key.startswith("nanobot_http_requests_total{"):
            labels = dict(_LABELS.findall(key))
            route = out.setdefault(labels.get("route", "?"), {})
            route[labels.get("status", "?")] = int(value)
    return out


class Scrape:
    """One `/metrics` read: the gauges the soak checks, and the status counts."""

    GAUGES = {
        "in_flight": "nanobot_requests_in_flight",
        "open_streams": "nanobot_open_streams",
        "tasks": "nanobot_asyncio_tasks",
    }

    def __init__(self, base_url: str) -> None:
        self.status, text = http_get(base_url + "/metrics")
        self.ok = self.status == 200
        self.error = None if self.ok else f"GET /metrics -> {self.status or 'no answer'}: {text[:200]}"
        self.metrics = parse_metrics(text) if self.ok else {}
        self.values = {name: self.metrics.get(key) for name, key in self.GAUGES.items()}

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: None if v is None else int(v) for k, v in self.values.items()}
        if self.ok:
            out["http_requests"] = http_statuses(self.metrics)
        else:
            out["error"] = self.error
        return out


class MetricsWatcher:
    """Scrapes `/metrics` about once a second during the load, keeping the peaks."""

    def __init__(self, base_url: str, pid: int, interval: float = 1.0) -> None:
        self.base_url = base_url
        self.pid = pid
        self.interval = interval
        self.t0 = time.monotonic()
        self.rss: list[tuple[float, float]] = []  # (seconds into the load, main process RSS MB)
        self.peaks: dict[str, int] = {}
        self.scrapes = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-watcher", daemon=True)

    def start(self) -> MetricsWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.rss.append((round(time.monotonic() - self.t0, 1), round(rss_kb(self.pid) / MB, 1)))
            scrape = Scrape(self.base_url)
            if not scrape.ok:
                if len(self.failures) < 5:
                    self.failures.append(scrape.error or "?")
                continue
            self.scrapes += 1
            for name, value in scrape.values.items():
                if value is not None:
                    self.peaks[name] = max(self.peaks.get(name, 0), int(value))

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        return {
            "scrapes": self.scrapes,
            "peaks": self.peaks,
            "failures": self.failures,
            "rss_mb": self.rss,
            "rss_second_half_growth_mb": self.second_half_growth(),
        }

    def second_half_growth(self) -> float | None:
        """RSS at the end of the load minus RSS half way: a leak keeps growing, a high-water mark does not."""
        if len(self.rss) < 4:
            return None
        end = self.rss[-1][0]
        middle = min(self.rss, key=lambda point: abs(point[0] - end / 2))
        return round(self.rss[-1][1] - middle[1], 1)


def wait_idle(base_url: str, timeout: float) -> tuple[Scrape, float]:
    """Poll `/metrics` until nothing is in flight or streaming; (last scrape, seconds waited)."""
    start = time.monotonic()
    while True:
        scrape = Scrape(base_url)
        idle = scrape.ok and scrape.values["in_flight"] == 0 and scrape.values["open_streams"] == 0
        if idle or time.monotonic() - start >= timeout or not scrape.ok and scrape.status != 0:
            return scrape, time.monotonic() - start
        time.sleep(0.2)


# -- load ------------------------------------------------------------------
