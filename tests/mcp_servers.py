"""MCP servers the tests start over streamable HTTP: the SDK-written test server, and
the published ``@modelcontextprotocol/server-everything`` (npm, installed into
tests/node by ``.ci/run``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from common import free_port

from nanobot.testing.process import terminate

TEST_SERVER = str(Path(__file__).with_name("mcp_test_server.py"))
EVERYTHING = Path(__file__).parent / "node/node_modules/@modelcontextprotocol/server-everything/dist/index.js"


def everything_installed() -> bool:
    return EVERYTHING.is_file() and shutil.which("node") is not None


class HttpMcpServer:
    """An MCP server as a child process on a loopback port, ready when the port answers.

    By default ``tests/mcp_test_server.py --http PORT``; ``published=True`` runs
    server-everything's streamable HTTP transport (it takes its port from ``PORT``).
    """

    def __init__(self, port: int | None = None, *, published: bool = False) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        if published:
            command = ["node", str(EVERYTHING), "streamableHttp"]
        else:
            command = [sys.executable, TEST_SERVER, "--http", str(self.port)]
        self.proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PORT": str(self.port)}
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("the streamable HTTP MCP test server did not start")

    def stop(self) -> None:
        terminate(self.proc, 5)
