"""The Tornado application and the serving process around it."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any, Protocol

from tornado import web
from tornado.netutil import bind_sockets
from tornado.routing import URLSpec

from nanobot.config import Config, ConfigError
from nanobot.pipeline import Pipeline
from nanobot.server.chat import ChatCompletionsHandler
from nanobot.server.handlers import (
    HealthHandler,
    MetricsHandler,
    ModelsHandler,
    NotFoundHandler,
    OpenApiHandler,
)
from nanobot.server.limits import MAX_HEADER_BYTES, ServerParams
from nanobot.server.listener import ApiServer
from nanobot.server.measure import Measuring
from nanobot.server.page import ChatPageHandler, PageAssetHandler
from nanobot.server.responses import InputItemsHandler, ResponsesHandler, StoredResponseHandler
from nanobot.server.state import API, API_BODY, PUBLIC, UNROUTED, ApiApplication, AppState, RoutePolicy
from nanobot.server.static_files import STATIC_DIR
from nanobot.services import Services

log = logging.getLogger("nanobot.server")

# The original drops SYNs at 500 simultaneous clients with the default 128.
LISTEN_BACKLOG = 4096
# NANOBOT_HTTP=tornado: Tornado's own HTTPServer instead of the server
# connection, the reference tests/test_server_diff.py compares it with.
HTTP_ENV = "NANOBOT_HTTP"


def route(pattern: str, handler: type[web.RequestHandler], policy: RoutePolicy, **kwargs: Any) -> URLSpec:
    """One entry of the route table: every route declares the policy its guards read."""
    return URLSpec(pattern, handler, {"policy": policy, **kwargs})


def routes() -> list[URLSpec]:
    return [
        route(r"/health", HealthHandler, PUBLIC),
        route(r"/v1/models", ModelsHandler, API),
        route(r"/v1/chat/completions", ChatCompletionsHandler, API_BODY),
        route(r"/v1/responses", ResponsesHandler, API_BODY),
        route(r"/v1/responses/([^/]+)", StoredResponseHandler, API),
        route(r"/v1/responses/([^/]+)/input_items", InputItemsHandler, API),
        route(r"/openapi.json", OpenApiHandler, API),
        route(r"/metrics", MetricsHandler, API),
        route(r"/", ChatPageHandler, PUBLIC),
        route(r"/static/(.+)", PageAssetHandler, PUBLIC, path=str(STATIC_DIR)),
    ]


def make_app(
    services: Services,
    pipeline: Pipeline | None = None,
    verbose: bool = False,
    responses_pipeline: Pipeline | None = None,
) -> ApiApplication:
    stages = services.config.pipeline.stages
    pipeline = pipeline or Pipeline.from_names(stages)
    responses_pipeline = responses_pipeline or Pipeline.for_responses(stages)
    settings: dict[str, Any] = {
        "default_handler_class": NotFoundHandler,
        "default_handler_args": {"policy": UNROUTED},
        "compress_response": False,
    }
    if not verbose:
        settings["log_function"] = lambda handler: None
    return ApiApplication(AppState.build(services, pipeline, responses_pipeline), routes(), **settings)


def check_bind(config: Config) -> None:
    """Refuse the settings that open a key-less server to others."""
    if config.api.api_key:
        return
    if config.api.host in ("0.0.0.0", "::", ""):
        raise ConfigError(
            f"refusing to listen on {config.api.host or 'all interfaces'} without a key: set api.apiKey "
            "(or bind to 127.0.0.1)"
        )
    if "*" in config.api.cors_origins:
        raise ConfigError(
            'api.corsOrigins: "*" lets any web page drive a server without a key: set api.apiKey '
            "(or list the origins that may)"
        )


def listen(config: Config, port: int | None = None, reuse_port: bool = False) -> list[socket.socket]:
    """The listening sockets for ``api.host:api.port`` (ConfigError if taken)."""
    check_bind(config)
    port = config.api.port if port is None else port
    try:
        return bind_sockets(port, config.api.host, backlog=LISTEN_BACKLOG, reuse_port=reuse_port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {config.api.host}:{port}: {exc.strerror}") from None


# Linux spreads connections over SO_REUSEPORT sockets; BSDs give them all to one.
_REUSE_PORT_SPREADS = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def listen_per_worker(config: Config, count: int) -> list[list[socket.socket]]:
    """Listening sockets for each of ``count`` workers, all on one port.

    One socket shared by the workers hands a burst of new connections to
    whichever worker wakes first, which accepts them all, and keep-alive
    keeps them there: under load one worker did nearly all the work. With a
    socket of its own per worker (SO_REUSEPORT) the kernel spreads the
    connections over the workers. The port is bound once without the option
    first, so a port in use, even by another server sharing it this way, is
    still refused.
    """
    plain = listen(config)
    if not _REUSE_PORT_SPREADS:
        return [plain] * count
    port = plain[0].getsockname()[1]
    for sock in plain:
        sock.close()
    return [listen(config, port, reuse_port=True) for _ in range(count)]


def announce(config: Config, sockets: list[socket.socket]) -> None:
    port = sockets[0].getsockname()[1]
    host = config.api.host if ":" not in config.api.host else f"[{config.api.host}]"
    workers = f", {config.api.workers} workers" if config.api.workers > 1 else ""
    print(
        f"nanobot API listening on http://{host}:{port} "
        f"(provider: {config.agents.defaults.provider}, model: {config.agents.defaults.model}{workers})",
        flush=True,
    )


# Tracked objects allocated, less those freed, before the youngest generation
# is collected (CPython's default is 700; the older generations keep theirs).
YOUNG_COLLECTION_THRESHOLD = 10_000


def tune_collector() -> None:
    """Collect the youngest generation less often than CPython's default.

    A turn allocates a few hundred tracked objects (the request, its
    handler, the pipeline's coroutines, the SDK's models), nearly all freed
    by reference counting when it ends; at the default threshold the
    collector still walked them several times per turn, and the older
    generations (every stream's objects) every few dozen turns. Measured
    with 500 streams and with 32 clients (``gc.callbacks``, CPU time in the
    collector): 3.5-7.5 % of the server's CPU at the default, 1.3-4 % here,
    the longest pause 47 ms -> 37 ms. What reference counting cannot free
    (cycles) waits for at most this many allocations, as before it waited
    for 700.
    """
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, oldest)


class _Server(Protocol):
    def stop(self) -> None: ...


async def start_server(app: ApiApplication, config: Config, sockets: list[socket.socket]) -> _Server:
    """Serve ``app`` on ``sockets`` with the limits of ``config.api``."""
    # Body limits are enforced by the handlers (to answer 413 in JSON); the
    # connection's own cap only guards against bodies far past them.
    max_body = config.api.max_body_bytes + 1024 * 1024
    if os.environ.get(HTTP_ENV) == "tornado":
        # per-use import: the reference server only
        from nanobot.server.tornado_server import ApiHTTPServer

        reference = ApiHTTPServer(
            app,
            max_body_size=max_body,
            max_header_size=MAX_HEADER_BYTES,
            idle_connection_timeout=config.api.header_timeout,
            body_timeout=config.api.body_timeout,
            xheaders=False,
        )
        reference.add_sockets(sockets)
        return reference
    params = ServerParams(
        max_header_bytes=MAX_HEADER_BYTES,  # past it: 431 (see connection.py)
        max_body_bytes=max_body,
        # The wait for a request's headers, and so also how long an idle
        # keep-alive connection is kept.
        header_timeout=config.api.header_timeout,
        body_timeout=config.api.body_timeout,
    )
    server = ApiServer(app, params, LISTEN_BACKLOG)
    await server.add_sockets(sockets)
    return server


async def serve(
    config: Config,
    verbose: bool = False,
    sockets: list[socket.socket] | None = None,
    ready: Callable[[], None] | None = None,
    lock_fd: int | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain in-flight requests for up to ``grace`` seconds.

    A worker process gets the ``sockets`` its parent bound and the session
    lock file it opened (``lock_fd``), and reports with ``ready()`` instead
    of announcing itself (see ``workers.py``).
    """
    pipeline = Pipeline.from_names(config.pipeline.stages)  # config errors before binding
    responses_pipeline = Pipeline.for_responses(config.pipeline.stages)
    if sockets is None:
        sockets = listen(config)
    # Worker threads (uploads, the database) take the GIL for up to the
    # switch interval at a time; 1 ms instead of 5 keeps the loop's latency
    # low while they run, at no cost when they are idle.
    sys.setswitchinterval(0.001)
    services = Services.build(config, lock_fd)
    measuring = Measuring()  # the benchmark's timers and profiler: off unless the environment asks
    measuring.install(services, pipeline, responses_pipeline)
    app = make_app(services, pipeline, verbose, responses_pipeline)
    server = await start_server(app, config, sockets)
    await services.start()
    await services.start_background()
    # What start-up built (modules, the SDK's models, config) lives as long
    # as the process: frozen, the collector stops walking it on every
    # full collection, so those stay short under load.
    gc.collect()
    gc.freeze()
    tune_collector()
    if ready is None:
        announce(config, sockets)
    else:
        ready()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    measuring.start()
    await stop.wait()
    measuring.finish()
    grace = config.api.shutdown_grace
    log.info("shutting down: draining for up to %.0f s", grace)
    server.stop()
    gate = app.state.gate
    gate.closing = True
    deadline = loop.time() + grace
    while gate.in_flight and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if gate.in_flight:
        log.warning("%d request(s) still running after the grace period; ending them", gate.in_flight)
        for handler in list(gate.active):
            handler.end_for_shutdown()
        await asyncio.sleep(0.2)  # let them write their error and finish
    await services.close()
    print("nanobot API stopped", file=sys.stderr, flush=True)
