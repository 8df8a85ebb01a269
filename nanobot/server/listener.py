"""The listening side: accepted connections become :class:`~nanobot.server.connection.ServerConnection`."""

from __future__ import annotations

import asyncio
import socket

from tornado import httputil

from nanobot.server.connection import ServerConnection
from nanobot.server.limits import ServerParams


class ApiServer:
    """Serves ``app`` on listening sockets with :class:`ServerConnection`."""

    def __init__(self, app: httputil.HTTPServerConnectionDelegate, params: ServerParams, backlog: int) -> None:
        self.app = app
        self.params = params
        self.backlog = backlog
        self._servers: list[asyncio.AbstractServer] = []

    def _connection(self) -> ServerConnection:
        return ServerConnection(self.app, self.params)

    async def add_sockets(self, sockets: list[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        for sock in sockets:
            # create_server listens again: with the server's backlog, not asyncio's default of 100.
            self._servers.append(await loop.create_server(self._connection, sock=sock, backlog=self.backlog))

    def stop(self) -> None:
        """Stop accepting; open connections go on (the caller drains them)."""
        for server in self._servers:
            server.close()
        self._servers = []
