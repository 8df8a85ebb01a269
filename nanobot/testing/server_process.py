"""Start a real ``nanobot serve`` process on a free port (tests and bench).

Each server gets its own workspace (a real SQLite file) and a config file
written from a dict, so a caller states exactly the settings it depends on.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from nanobot.testing.process import ProcessStartError, terminate, wait_for_ready_line

ROOT = Path(__file__).resolve().parents[2]
TESTS_DIR = ROOT / "tests"
READY = "nanobot API listening on"


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def upstream_config(upstream_url: str, **defaults: Any) -> dict[str, Any]:
    """Config pointing the agent at a scripted upstream (``provider: scripted``)."""
    return {
        "agents": {"defaults": {"provider": "scripted", "model": "scripted", **defaults}},
        "providers": {
            "scripted": {"apiKey": "test-key", "apiBase": upstream_url + "/v1", "maxRetries": 0, "timeout": 30}
        },
    }


class ServerProcess:
    def __init__(
        self,
        config: dict[str, Any],
        workspace: Path | None = None,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        python: tuple[str, ...] = (),
    ) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="nanobot-test-"))
        self.workspace = workspace or self.tmp / "workspace"
        self.config = merge({"agents": {"defaults": {"workspace": str(self.workspace)}}, "api": {"port": 0}}, config)
        # The server's own files (database, uploads, locks): outside the workspace.
        state = self.config["agents"]["defaults"].get("stateDir")
        self.state_dir = Path(state) if state else self.workspace.with_name(self.workspace.name + ".state")
        self.database = self.state_dir / "nanobot.db"
        self.config_path = self.tmp / "config.json"
        self.config_path.write_text(json.dumps(self.config))
        child_env = dict(os.environ)
        child_env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(ROOT), child_env.get("PYTHONPATH", "")])
        child_env.update(env or {})
        self._stderr = open(self.tmp / "stderr.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, *python, "-m", "nanobot", "serve", "--config", str(self.config_path), *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=child_env,
            cwd=str(self.tmp),
        )
        try:
            line = wait_for_ready_line(self.proc, timeout=30, prefix=READY)
        except ProcessStartError as exc:
            self.kill()
            raise ProcessStartError(f"{exc}\nstderr:\n{self.stderr_text()}") from None
        found = re.search(r"(http://\S+)", line)
        if found is None:
            raise ProcessStartError(f"no URL in the ready line {line!r}")
        self.url = found.group(1)
        self.port = int(self.url.rsplit(":", 1)[1])
        self.base_url = self.url + "/v1"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_text(self) -> str:
        try:
            return (self.tmp / "stderr.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 15) -> int | None:
        code = terminate(self.proc, timeout)
        self._stderr.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._stderr.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
