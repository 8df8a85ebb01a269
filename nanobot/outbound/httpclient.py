"""An HTTP client whose in-flight requests can be torn down at shutdown.

Cancelling the coroutine that awaits ``fetch`` does not stop Tornado's simple
client: each request runs in a task of its own that keeps its socket until
the peer answers or the request times out. The outbox must leave no task
behind when it closes, so this client remembers each request's task and
stream (Tornado opens every request's connection through ``tcp_client``,
from inside that request's task) and ends them in :meth:`abort`.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from tornado.iostream import IOStream
from tornado.netutil import Resolver
from tornado.simple_httpclient import SimpleAsyncHTTPClient
from tornado.tcpclient import TCPClient


class _TrackingTCPClient(TCPClient):
    """A TCP client that records who connects, so it can end them later."""

    def __init__(self, resolver: Resolver | None = None) -> None:
        super().__init__(resolver=resolver)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.streams: weakref.WeakSet[IOStream] = weakref.WeakSet()
        self.aborted = False

    async def connect(self, *args: Any, **kwargs: Any) -> IOStream:
        if self.aborted:
            # A request that was scheduled just before abort() must not
            # open a connection the closed client no longer watches.
            raise ConnectionAbortedError("HTTP client closed")
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        stream = await super().connect(*args, **kwargs)
        self.streams.add(stream)
        return stream


class AbortableHTTPClient(SimpleAsyncHTTPClient):
    """``SimpleAsyncHTTPClient`` plus :meth:`abort` for a clean shutdown.

    Create it with ``force_instance=True`` so it is never the loop's shared
    client, and inside the running loop it will serve.
    """

    def initialize(self, **kwargs: Any) -> None:  # type: ignore[override]
        super().initialize(**kwargs)
        self.tcp_client = _TrackingTCPClient(resolver=self.resolver)

    async def abort(self, timeout: float = 1.0) -> None:
        """End every request still running and wait (bounded) for their tasks."""
        tcp = self.tcp_client
        assert isinstance(tcp, _TrackingTCPClient)
        tcp.aborted = True
        me = asyncio.current_task()
        tasks = [t for t in tcp.tasks if not t.done() and t is not me]
        for task in tasks:
            task.cancel()
        for stream in list(tcp.streams):
            stream.close()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
