"""The CLI beyond one message: files, interactive use, config check, streaming."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
import tomllib

from builders import make_docx
from common import run_nanobot
from servers import ROOT

from nanobot.testing.process import UpstreamProcess


def write_config(tmp_path, upstream_url=None, **extra):
    cfg = {"agents": {"defaults": {"workspace": str(tmp_path / "ws")}}}
    if upstream_url:
        cfg["agents"]["defaults"].update(provider="scripted", model="scripted")
        cfg["providers"] = {"scripted": {"apiKey": "sk-secret-1", "apiBase": upstream_url + "/v1", "maxRetries": 0}}
    cfg.update(extra)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    return path


def test_agent_file(tmp_path, upstream):
    doc = tmp_path / "memo.docx"
    doc.write_bytes(make_docx("CLIMARK"))
    cfg = write_config(tmp_path, upstream.url)
    p = run_nanobot("agent", "-m", "read this", "--file", str(doc), "--config", str(cfg))
    assert p.returncode == 0, p.stderr
    assert "[file: memo.docx]" in p.stdout and "CLIMARK-CELL" in p.stdout
    p = run_nanobot("agent", "--file", str(doc), "--config", str(cfg))
    assert p.stdout.startswith("You said: Please analyze the uploaded file(s).")
    bad = tmp_path / "x.bin"
    bad.write_bytes(b"\x7fELF" + bytes(100))
    p = run_nanobot("agent", "-m", "x", "--file", str(bad), "--config", str(cfg))
    assert p.returncode == 1 and "unsupported type" in p.stderr
    p = run_nanobot("agent", "-m", "x", "--file", str(tmp_path / "missing.txt"), "--config", str(cfg))
    assert p.returncode == 1 and "cannot read" in p.stderr


def test_agent_interactive(tmp_path, upstream):
    cfg = write_config(tmp_path, upstream.url)
    p = run_nanobot(
        "agent", "--config", str(cfg), "--session", "int", stdin="first line\n\nsecond line\n/exit\nnever\n"
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["You said: first line", "You said: second line"]
    upstream.clear()
    run_nanobot("agent", "-m", "third", "--config", str(cfg), "--session", "int")
    users = [m["content"] for m in upstream.requests()[-1]["body"]["messages"] if m["role"] == "user"]
    assert users == ["first line", "second line", "third"]


def test_agent_streams_to_terminal(tmp_path):
    with UpstreamProcess.start(tokens=6, interval_ms=200) as slow:
        cfg = write_config(tmp_path, slow.url)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "nanobot", "agent", "-m", "go", "--config", str(cfg)],
            stdout=subprocess.PIPE,
            env=env,
        )
        arrivals = []
        while True:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            arrivals.append((time.monotonic(), chunk))
        proc.wait(timeout=30)
        out = b"".join(c for _, c in arrivals)
        assert out == b"tok " * 6 + b"\n"
        assert len(arrivals) >= 4  # printed piece by piece, not all at the end
        assert arrivals[-1][0] - arrivals[0][0] > 0.5


def test_config_check(tmp_path, upstream):
    cfg = write_config(tmp_path, upstream.url, channels={"telegram": {"enabled": True, "token": "123:tg-secret"}})
    p = run_nanobot("config", "check", "--config", str(cfg))
    assert p.returncode == 0, p.stderr
    resolved = json.loads(p.stdout)
    assert resolved["agents"]["defaults"]["provider"] == "scripted"
    assert resolved["api"]["port"] == 8900 and resolved["pipeline"]["stages"][0] == "decode"
    assert "sk-secret-1" not in p.stdout and "tg-secret" not in p.stdout
    assert resolved["providers"]["scripted"]["apiKey"] == "***"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"api": {"port": "x"}}))
    p = run_nanobot("config", "check", "--config", str(bad))
    assert p.returncode == 2 and "api.port: expected integer" in p.stderr


def test_agent_shows_tool_progress_on_stderr(tmp_path, upstream):
    cfg = write_config(tmp_path, upstream.url)
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "note.txt").write_text("from the workspace")
    p = run_nanobot(
        "agent", "-m", '#tool:read_file {"path":"note.txt"} #tool:read_file {"path":"nope"}', "--config", str(cfg)
    )
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    assert lines.count("[tool] read_file ...") == 2
    assert sorted(line for line in lines if not line.endswith("...")) == [
        "[tool] read_file done",
        "[tool] read_file failed",
    ]
    assert "[tool]" not in p.stdout and p.stdout.startswith("tool result: ")


def test_config_check_lists_the_enabled_tools(tmp_path):
    p = run_nanobot("config", "check", "--config", str(write_config(tmp_path)))
    assert (
        "# tools: read_file, write_file, edit_file, list_dir, web_fetch, message, cron, spawn" in p.stderr.splitlines()
    )
    off = write_config(
        tmp_path,
        tools={
            "file": {"enabled": False},
            "exec": {"enabled": True, "sandbox": "none"},
            "cron": {"enabled": False},
            "spawn": {"enabled": False},
        },
    )
    p = run_nanobot("config", "check", "--config", str(off))
    assert p.returncode == 0, p.stderr
    assert "# tools: exec, web_fetch, message" in p.stderr.splitlines()


def test_version_is_the_package_version():
    p = run_nanobot("--version")
    assert p.returncode == 0, p.stderr
    installed = importlib.metadata.version("nanobot-ai")
    assert p.stdout == f"nanobot {installed}\n"
    with open(ROOT / "pyproject.toml", "rb") as f:
        assert installed == tomllib.load(f)["project"]["version"]


def readme_commands() -> list[str]:
    """The commands of the README's table, in its order: `nanobot serve [...]` -> "serve"."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    found: list[str] = []
    for cell in re.findall(r"^\| `nanobot ([^`]*)`", table, re.MULTILINE):
        words = []
        for word in cell.split():
            if word.startswith(("-", "[")) or word.isupper():  # an option or a placeholder (JOB_ID)
                break
            words.append(word)
        if " ".join(words) not in found:
            found.append(" ".join(words))
    return found


def test_help_lists_every_command_in_the_readmes_order():
    expected = readme_commands()
    assert expected == ["serve", "agent", "config check", "outbox", "cron list", "cron remove", "db copy"]
    p = run_nanobot("--help", env={"COLUMNS": "40"})  # narrow: still one line per command
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split("\ncommands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split("  ")[1].strip() for line in lines] == expected
    for line, command in zip(lines, expected, strict=True):
        assert len(line.split(command, 1)[1].strip()) > 10, line  # a description on the same line
        sub = run_nanobot(*command.split(), "--help")
        assert sub.returncode == 0 and sub.stdout.startswith(f"usage: nanobot {command} "), sub.stdout
        if command in ("serve", "agent"):
            assert ("--workspace" if command == "serve" else "--file") in sub.stdout
