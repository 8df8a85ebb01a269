"""Shared fixtures: a scripted upstream process and nanobot server processes."""

from __future__ import annotations

import asyncio
import fcntl
import os
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import ServerProcess, upstream_config

from nanobot.testing.postgres import PostgresCluster, bin_dir
from nanobot.testing.process import UpstreamProcess


@pytest.fixture(scope="session")
def upstream() -> Iterator[UpstreamProcess]:
    proc = UpstreamProcess.start()
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def _own_upstream_records(request: pytest.FixtureRequest) -> None:
    """Each test reads only the upstream records it caused (tests may run in any order, or in parallel).

    The chat requests, the sink's deliveries and any failure rule a test left
    unused: the upstream process lives for the whole run, on each worker.
    """
    if "upstream" in request.fixturenames:
        upstream: UpstreamProcess = request.getfixturevalue("upstream")
        upstream.clear()
        upstream.clear_received()
        upstream.clear_failures()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    """Under pytest-xdist, a test marked ``alone`` runs while no other worker runs a test.

    Those tests bound CPU-heavy work in seconds (the bench, the soak, extraction
    time limits); on two cores a neighbour's test would eat their margin. Every
    other test holds the run's lock shared, so they still run side by side. The
    lock spans the whole protocol, so a neighbour's module fixtures (servers
    starting) wait too, and outside pytest-timeout's clock, so waiting is no timeout.
    """
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:  # one process: nothing runs beside the test anyway
        return (yield)
    mode = fcntl.LOCK_EX if item.get_closest_marker("alone") else fcntl.LOCK_SH
    with open(Path(tempfile.gettempdir()) / f"nanobot-tests-{run}.lock", "a") as lock:
        fcntl.flock(lock, mode)
        try:
            return (yield)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def echo_server() -> Iterator[ServerProcess]:
    """A server with the shipped defaults: the offline echo provider, no key."""
    with ServerProcess({}) as server:
        yield server


@pytest.fixture(scope="session")
def agent_server(upstream: UpstreamProcess) -> Iterator[ServerProcess]:
    """A server whose provider is the scripted upstream."""
    with ServerProcess(upstream_config(upstream.url)) as server:
        yield server


@pytest.fixture
def make_server() -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(config: dict[str, Any] | None = None, **kwargs: Any) -> ServerProcess:
        server = ServerProcess(config or {}, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    """One event loop for a module's in-process tests (clients and sessions outlive one call)."""
    with asyncio.Runner() as r:
        yield r


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A PostgreSQL cluster of its own (initdb + pg_ctl in a temp dir), for the whole run."""

    if bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
    cluster = PostgresCluster.start()
    yield cluster
    cluster.stop()
