"""Child processes of the harness: load generators and the `--peer-cmd` peer.

The server and the scripted upstream come from `nanobot.testing`; this module
adds what only the benchmark needs: load generator processes driven over
stdin/stdout (spec, `CONNECTED`, `GO`, `STOP`, one JSON result line), and a
peer started from a shell command in its own process group.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


class LoadgenProc:
    """One `python -m bench.loadgen -` process running one spec in sync mode."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=child_env(),
            text=True,
            cwd=str(ROOT),
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.send(json.dumps({**spec, "sync": True}))

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def _next(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=max(0.01, timeout))
        except queue.Empty:
            raise TimeoutError(f"load generator silent for {timeout:.0f}s") from None
        if line is None:
            raise RuntimeError(f"load generator exited (code {self.proc.wait()}): {self.stderr_tail()}")
        return line

    def wait_connected(self, timeout: float) -> int:
        line = self._next(timeout)
        if not line.startswith("CONNECTED"):
            raise RuntimeError(f"unexpected load generator line {line!r}")
        return int(line.split()[1])

    def result(self, timeout: float) -> dict[str, Any]:
        line = self._next(timeout)
        self.proc.wait(timeout=10)
        self._stderr.close()
        return json.loads(line)

    def stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")[-2000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if not self._stderr.closed:
            self._stderr.close()


def run_loadgens(
    specs: list[dict[str, Any]], probe: dict[str, Any] | None, timeout: float
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Run the specs in parallel processes, started together; the probe runs until they end."""
    procs = [LoadgenProc(spec) for spec in specs]
    probe_proc = LoadgenProc(probe) if probe else None
    everyone = procs + ([probe_proc] if probe_proc else [])
    try:
        deadline = time.monotonic() + 120
        for proc in everyone:
            proc.wait_connected(deadline - time.monotonic())
        for proc in reversed(everyone):  # the probe first
            proc.send("GO")
        deadline = time.monotonic() + timeout
        results = [proc.result(deadline - time.monotonic()) for proc in procs]
        probe_result = None
        if probe_proc is not None:
            probe_proc.send("STOP")
            probe_result = probe_proc.result(30)
        return results, probe_result
    finally:
        for proc in everyone:
            proc.kill()


def http_answers(url: str, timeout: float = 2.0) -> bool:
    """True when `url` gives any HTTP response (an error status counts)."""
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            response.read()
        return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


def post_json(url: str, payload: dict[str, Any], api_key: str | None = None, timeout: float = 30) -> bytes:
    """One blocking POST (warm-up requests); raises on an HTTP error."""
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    with _OPENER.open(request, timeout=timeout) as response:
        return response.read()


class PeerProcess:
    """A peer server started from a shell command (`--peer-cmd`), in its own process group."""

    def __init__(self, command: str, url: str, timeout: float = 60.0) -> None:
        self.command = command
        self.url = url
        self.log = tempfile.NamedTemporaryFile(prefix="bench-peer-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            command,
            shell=True,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=child_env(),
        )
        deadline = time.monotonic() + timeout
        while not http_answers(url + "/v1/models", timeout=1.0):
            if self.proc.poll() is not None:
                raise RuntimeError(f"peer command exited (code {self.proc.returncode}): {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"peer did not answer at {url} within {timeout:.0f}s: {self.log_tail()}")
            time.sleep(0.2)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self) -> str:
        try:
            return Path(self.log.name).read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group this harness created, then SIGKILL it."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)
