"""Constants and small helpers the test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import requests

from nanobot.agent.tools import TurnScope
from nanobot.testing.process import free_port
from nanobot.testing.server_process import ROOT

__all__ = [
    "CHAT",
    "CHAT_MODEL",
    "HI",
    "MIB",
    "SCOPE",
    "ask",
    "data_url",
    "free_port",
    "run_nanobot",
    "sdk",
    "unframed",
]

CHAT = "/v1/chat/completions"
CHAT_MODEL = "echo"  # the shipped default model (agents.defaults.model)
MIB = 1024 * 1024
HI = {"messages": [{"role": "user", "content": "hi"}]}  # the smallest valid chat request
SCOPE = TurnScope("api", "test")  # a tool call's scope outside any server


_FRAME = re.compile(r"<<untrusted-data id=[0-9a-f]{8} from=\S+>>\n|\n<<end untrusted-data id=[0-9a-f]{8}>>")


def unframed(text: str) -> str:
    """``text`` without the untrusted-data delimiter lines around tool results."""
    return _FRAME.sub("", text)


def data_url(data: bytes, mime: str = "application/octet-stream") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def ask(server: Any, text: str, sid: str | None = None, *, timeout: float = 60, **extra: Any) -> requests.Response:
    """One user turn posted to ``server`` (a session of its own when ``sid`` is given)."""
    body: dict[str, Any] = {"messages": [{"role": "user", "content": text}], **extra}
    if sid is not None:
        body["session_id"] = sid
    return requests.post(server.url + CHAT, json=body, timeout=timeout)


def sdk(server: Any, api_key: str = "unused", **options: Any) -> openai.OpenAI:
    """The official client on ``server`` (a nanobot or a scripted upstream), retries off so failures show."""
    return openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0, **options)


def run_nanobot(
    *args: str, env: dict[str, str] | None = None, cwd: Any = None, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``nanobot ARGS`` as a child process of this checkout: its exit code and its output."""
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "nanobot", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )


def state_db(workspace: Path) -> Path:
    """The database of a server whose state folder is the default ``<workspace>.state``."""
    return workspace.with_name(workspace.name + ".state") / "nanobot.db"
