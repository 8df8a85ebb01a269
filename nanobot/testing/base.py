"""Shared state and the JSON handler base of the scripted upstream server."""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
import tornado.web

from nanobot.testing.script import ScriptConfig
from nanobot.testing.wire import error_body

RING_SIZE = 10_000


class FailureInjector:
    """Answers the next `count` POSTs under a path prefix with an error status.

    Rules are consumed in the order they were added; with no rules the check is
    a single truthiness test, so the hot path pays nothing when unused.
    """

    def __init__(self) -> None:
        self._rules: list[list[Any]] = []  # [path_prefix, remaining, status]

    def add(self, path_prefix: str, count: int, status: int) -> None:
        if count > 0:
            self._rules.append([path_prefix, count, status])

    def clear(self) -> None:
        self._rules.clear()

    def take(self, path: str) -> int | None:
        """The status to fail `path` with, or None to answer normally."""
        if not self._rules:
            return None
        for rule in self._rules:
            if path.startswith(rule[0]):
                rule[1] -= 1
                if rule[1] == 0:
                    self._rules.remove(rule)
                return int(rule[2])
        return None


@dataclass
class UpstreamState:
    """Everything the handlers share: rules config, records, id counters."""

    config: ScriptConfig = field(default_factory=ScriptConfig)
    record: bool = True
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RING_SIZE))
    received: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RING_SIZE))
    failures: FailureInjector = field(default_factory=FailureInjector)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


class JsonHandler(tornado.web.RequestHandler):
    """Base handler: access to the state, JSON answers, JSON error pages."""

    state: UpstreamState

    def initialize(self, state: UpstreamState) -> None:
        self.state = state

    def send_json(self, body: bytes, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(body)

    def send_error_json(self, status: int, message: str) -> None:
        self.send_json(error_body(status, message), status)

    def read_json(self) -> Any:
        """The parsed request body, or None when it is not JSON."""
        try:
            return orjson.loads(self.request.body)
        except orjson.JSONDecodeError:
            return None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Tornado's own errors (404, 405, uncaught exceptions) as OpenAI JSON.
        self.set_header("Content-Type", "application/json")
        self.finish(error_body(status_code, self._reason))


class NotFoundHandler(JsonHandler):
    """Any unknown route: a JSON 404 whatever the method."""

    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)
