"""Workspace context in the system prompt: AGENTS.md, USER.md, memory, skills."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import requests
from servers import ServerProcess, upstream_config

from nanobot.agent.context import MAX_FILE_CHARS, WorkspaceContext, description
from nanobot.tools.paths import Workspace, safe_name


def prompt(ctx: WorkspaceContext, key: str = "api:x") -> dict:
    return asyncio.run(ctx.message(key))


def test_files_and_skills_are_in_the_prompt(tmp_path: Path) -> None:
    ctx = WorkspaceContext("BASE", Workspace(tmp_path), recheck=0)
    empty = prompt(ctx)
    assert empty["content"].startswith("BASE\n\nYou work in a workspace folder")
    assert prompt(ctx) is empty  # unchanged: the cached message, nothing read
    (tmp_path / "AGENTS.md").write_text("Always answer in French.")
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "MEMORY.md").write_text("The user's cat is called Tom.")
    skill = tmp_path / "skills" / "weather"
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text('---\nname: weather\ndescription: "Look up the weather"\n---\nsteps')
    (tmp_path / "skills" / "bare").mkdir()
    (tmp_path / "skills" / "bare" / "SKILL.md").write_text("# Makes tea\n\nboil water")
    first = prompt(ctx)
    text = first["content"]
    assert "## AGENTS.md\n\nAlways answer in French." in text
    assert "## memory/MEMORY.md\n\nThe user's cat is called Tom." in text
    assert "- weather: Look up the weather" in text and "- bare: Makes tea" in text
    assert "steps" not in text  # skills are listed, not inlined
    assert prompt(ctx) is first
    # An edit (same size, new mtime) is seen on the next turn.
    os.utime(tmp_path / "memory" / "MEMORY.md", ns=(1, 1))
    (tmp_path / "memory" / "MEMORY.md").write_text("The user's cat is called Tim.")
    assert "called Tim." in prompt(ctx)["content"]
    (skill / "SKILL.md").write_text("---\ndescription: Weather, v2\n---\n")
    assert "- weather: Weather, v2" in prompt(ctx)["content"]


def test_caps_and_hostile_files(tmp_path: Path) -> None:
    ctx = WorkspaceContext("BASE", Workspace(tmp_path), recheck=0)
    (tmp_path / "USER.md").write_text("u" * (MAX_FILE_CHARS * 3))
    (tmp_path.parent / "secret.txt").write_text("TOP-SECRET")
    (tmp_path / "AGENTS.md").symlink_to(tmp_path.parent / "secret.txt")
    (tmp_path / "memory").mkdir()
    os.mkfifo(tmp_path / "memory" / "MEMORY.md")  # would block a plain open()
    text = prompt(ctx)["content"]
    assert "TOP-SECRET" not in text
    assert text.count("u") < MAX_FILE_CHARS + 100 and "[... cut" in text


def test_session_scope_reads_the_session_folder(tmp_path: Path) -> None:
    ctx = WorkspaceContext("BASE", Workspace(tmp_path, scope="session"), recheck=0)
    folder = tmp_path / "sessions" / safe_name("api:a")
    folder.mkdir(parents=True)
    (folder / "USER.md").write_text("I am A.")
    assert "I am A." in prompt(ctx, "api:a")["content"]
    assert "I am A." not in prompt(ctx, "api:b")["content"]


def test_unchanged_workspace_is_not_looked_at_again(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    ctx = WorkspaceContext("BASE", ws, recheck=3600)
    first = prompt(ctx)
    (tmp_path / "USER.md").write_text("edited from outside")
    assert prompt(ctx) is first  # within `recheck`: not even a stat
    ws.changed()  # what every writing tool call does
    assert "edited from outside" in prompt(ctx)["content"]


def test_description_parsing() -> None:
    assert description("---\nname: x\ndescription: Does X\n---\nbody") == "Does X"
    assert description("---\nname: x\n---\nbody") == ""
    assert description("\n\n# Title here\ntext") == "Title here"
    assert len(description("---\ndescription: " + "d" * 1000 + "\n---")) == 300


def test_memory_written_in_one_turn_is_in_the_next(upstream) -> None:
    with ServerProcess(upstream_config(upstream.url)) as server:
        sid = uuid.uuid4().hex
        url = server.url + "/v1/chat/completions"
        note = '#tool:write_file {"path":"memory/MEMORY.md","content":"Remember: blue is the favourite."}'
        assert (
            requests.post(
                url, json={"messages": [{"role": "user", "content": note}], "session_id": sid}, timeout=30
            ).status_code
            == 200
        )
        upstream.clear()
        requests.post(url, json={"messages": [{"role": "user", "content": "hello"}], "session_id": sid}, timeout=30)
        system = upstream.requests()[-1]["body"]["messages"][0]
        assert system["role"] == "system" and "Remember: blue is the favourite." in system["content"]
