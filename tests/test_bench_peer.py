"""The launcher of the original nanobot-ai as the bench's peer, against a stand-in venv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from servers import ROOT

# Records what the launcher handed over: its pid, argv, environment and config.
FAKE_SERVER = """#!/bin/sh
out="$(dirname "$0")/../run"
mkdir -p "$out"
echo $$ > "$out/pid"
printf '%s\\n' "$@" > "$out/argv"
env > "$out/env"
cp "$3" "$out/config.json"
"""


def fake_venv(root: Path, aiohttp: bool = True) -> Path:
    server = root / "bin" / "nanobot"
    server.parent.mkdir(parents=True)
    server.write_text(FAKE_SERVER)
    server.chmod(0o755)
    if aiohttp:
        (root / "lib" / "python3.11" / "site-packages" / "aiohttp").mkdir(parents=True)
    return root


def launch(tmp_path: Path, venv: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "bench.peer_nanobot_ai", "--venv", str(venv), "--port", "18123"]
    cmd += ["--upstream-base", "http://127.0.0.1:9/v1", "--model", "scripted"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path), "https_proxy": "http://proxy:3128"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, stderr=subprocess.PIPE)


def test_launcher_execs_the_venv_server_with_a_config_for_the_upstream(tmp_path: Path) -> None:
    venv = fake_venv(tmp_path / "venv")
    proc = launch(tmp_path, venv)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    run = venv / "run"
    assert int((run / "pid").read_text()) == proc.pid  # exec'd: the harness measures the server
    argv = (run / "argv").read_text().split()
    assert argv[:2] == ["serve", "--config"] and argv[3:] == ["--port", "18123", "--host", "127.0.0.1"]
    config = json.loads((run / "config.json").read_text())
    assert config["providers"]["custom"]["apiBase"] == "http://127.0.0.1:9/v1"
    assert config["agents"]["defaults"]["provider"] == "custom"
    assert config["agents"]["defaults"]["model"] == "scripted"
    assert config["api"]["port"] == 18123
    env = dict(line.split("=", 1) for line in (run / "env").read_text().splitlines() if "=" in line)
    assert "PYTHONPATH" not in env and "https_proxy" not in env  # this checkout's `nanobot` would shadow it
    assert Path(env["HOME"]).is_relative_to(tmp_path)
    assert Path(config["agents"]["defaults"]["workspace"]).is_dir()
    # The next launch removes this one's directory, its server being gone.
    (run / "pid").unlink()
    first = Path(argv[2]).parents[2]
    again = launch(tmp_path, venv)
    again.communicate(timeout=60)
    assert not first.exists() and int((run / "pid").read_text()) == again.pid


@pytest.mark.parametrize("aiohttp", [False, True])
def test_launcher_refuses_a_venv_without_the_api_server(tmp_path: Path, aiohttp: bool) -> None:
    venv = tmp_path / "venv"
    if aiohttp:  # the extra is there, the package is not
        (venv / "lib" / "python3.11" / "site-packages" / "aiohttp").mkdir(parents=True)
    proc = launch(tmp_path, venv)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "nanobot-ai[api]==0.3.5" in err and str(venv) in err
    assert not list(tmp_path.glob("bench-peer-nanobot-ai-*"))


def test_launcher_refuses_a_venv_without_aiohttp(tmp_path: Path) -> None:
    proc = launch(tmp_path, fake_venv(tmp_path / "venv", aiohttp=False))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "aiohttp is missing" in err
