"""Run the scripted upstream as a child process and drive its admin routes.

Used by sync tests and the benchmark harness, so the HTTP calls here use only
the standard library. `wait_for_ready_line` is shared with launchers of other
servers that announce readiness on stdout the same way.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nanobot.testing.tls import TlsFiles

_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])
# Admin calls go straight to 127.0.0.1, never through an HTTP(S)_PROXY.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_STDERR_TAIL_CHARS = 4000


class ProcessStartError(RuntimeError):
    """A child process exited or stayed silent before announcing readiness."""


def free_port() -> int:
    """A loopback port nothing listens on (bound and let go: connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def children(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (Linux: read from /proc)."""
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    stat = fh.read()
            except OSError:
                continue
            if int(stat[stat.rfind(b")") + 2 :].split()[1]) == pid:
                found.add(int(name))
    return found


def wait_for_ready_line(proc: subprocess.Popen[Any], timeout: float, prefix: str = "READY") -> str:
    """Block until `proc` prints a stdout line starting with `prefix`; return it.

    A daemon thread reads stdout, and keeps draining it afterwards so a chatty
    child never stalls on a full pipe. Raises `ProcessStartError` (with the
    lines seen so far) if the process exits first or `timeout` passes.
    """
    if proc.stdout is None:
        raise ValueError("the process must be started with stdout=subprocess.PIPE")
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump_stdout, args=(proc.stdout, prefix, lines), daemon=True).start()
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        if line is None:
            code = _wait_briefly(proc)
            raise ProcessStartError(f"process exited (code {code}) before a {prefix!r} line{_tail(seen)}")
        if line.startswith(prefix):
            return line.strip()
        seen.append(line)
    raise ProcessStartError(f"no {prefix!r} line within {timeout:g}s{_tail(seen)}")


def _pump_stdout(stream: IO[Any], prefix: str, lines: queue.Queue[str | None]) -> None:
    delivered = False
    with stream:  # closed here at EOF: nothing else reads it
        for raw in stream:
            line = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
            if not delivered:
                lines.put(line)
                delivered = line.startswith(prefix)
    lines.put(None)


def _wait_briefly(proc: subprocess.Popen[Any]) -> int | None:
    # stdout closes just before the exit status is available.
    try:
        return proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        return None


def _tail(seen: list[str]) -> str:
    return "; stdout:\n" + "".join(seen[-20:]) if seen else ""


class UpstreamProcess:
    """A running `python -m nanobot.testing.upstream` child process."""

    def __init__(self, proc: subprocess.Popen[str], port: int, stderr: IO[bytes], tls: TlsFiles | None = None) -> None:
        self.proc = proc
        self.port = port
        # Over TLS by the name its certificate carries.
        self.url = f"https://localhost:{port}" if tls else f"http://127.0.0.1:{port}"
        self.base_url = self.url + "/v1"
        self._stderr = stderr
        self._opener = _OPENER
        if tls is not None:
            https = urllib.request.HTTPSHandler(context=tls.client_context())
            self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), https)

    @classmethod
    def start(
        cls,
        tokens: int = 0,
        interval_ms: float = 0,
        record: bool = True,
        extra_args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        timeout: float = 15,
        tls: TlsFiles | None = None,
    ) -> UpstreamProcess:
        """Spawn the server on a free port and wait until it is listening.

        `env` adds variables to the current environment. Raises
        `ProcessStartError` with the child's stderr if it does not come up.
        """
        args = [sys.executable, "-m", "nanobot.testing.upstream", "--host", "127.0.0.1", "--port", "0"]
        args += ["--tokens", str(tokens), "--interval-ms", str(interval_ms)]
        if not record:
            args.append("--no-record")
        if tls is not None:
            args += ["--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
        args += list(extra_args)
        # A file, not a pipe: nobody reads stderr while the server runs.
        stderr = tempfile.TemporaryFile()
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, env=_child_env(env), text=True)
        try:
            line = wait_for_ready_line(proc, timeout)
            port = int(line.split()[1])
        except (ProcessStartError, IndexError, ValueError) as exc:
            terminate(proc)
            message = f"scripted upstream failed to start: {exc}{_read_tail(stderr)}"
            stderr.close()
            raise ProcessStartError(message) from None
        return cls(proc, port, stderr, tls)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def requests(self) -> list[dict[str, Any]]:
        """Recorded chat requests, oldest first: `{"body", "headers"[, "failed"]}`."""
        records: list[dict[str, Any]] = self._call("GET", "/_requests")
        return records

    def clear(self) -> None:
        self._call("DELETE", "/_requests")

    def received(self) -> list[dict[str, Any]]:
        """Sink deliveries, oldest first: `{"path", "body", "headers"[, "failed"]}`."""
        records: list[dict[str, Any]] = self._call("GET", "/_received")
        return records

    def clear_received(self) -> None:
        self._call("DELETE", "/_received")

    def fail(self, path_prefix: str, count: int, status: int = 500) -> None:
        """Make the next `count` POSTs under `path_prefix` answer `status`."""
        self._call("POST", "/_fail", {"path_prefix": path_prefix, "count": count, "status": status})

    def clear_failures(self) -> None:
        """Drop failure rules not yet used up."""
        self._call("DELETE", "/_fail")

    def stop(self, timeout: float = 5) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL; return the exit code."""
        code = terminate(self.proc, timeout)
        if not self._stderr.closed:
            self._stderr.close()
        return code

    def stderr_text(self) -> str:
        """What the server wrote to stderr so far (for failure messages)."""
        if self._stderr.closed:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def __enter__(self) -> UpstreamProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with self._opener.open(request, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise RuntimeError(f"{method} {path} -> {exc.code}: {detail}") from None


def _child_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    """The current environment plus `extra`, with this project importable."""
    env = dict(os.environ)
    env.update(extra or {})
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if _PROJECT_ROOT not in paths:
        env["PYTHONPATH"] = os.pathsep.join([_PROJECT_ROOT, *paths])
    return env


def terminate(proc: subprocess.Popen[Any], timeout: float = 5) -> int | None:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return proc.returncode


def _read_tail(stderr: IO[bytes]) -> str:
    stderr.seek(0)
    text = stderr.read().decode("utf-8", "replace").strip()
    return f"\nstderr:\n{text[-_STDERR_TAIL_CHARS:]}" if text else ""
