"""The system prompt of a turn: the configured prompt plus the workspace's context.

``AGENTS.md`` and ``USER.md`` of the turn's root folder, the workspace's own
``memory/MEMORY.md`` (the operator's) and the session's ``memory/MEMORY.md``
(in the session's folder, the agent's) are appended (each capped), and every
``skills/<name>/SKILL.md`` is listed by name with the ``description`` of its
front matter; the agent reads a skill with ``read_file`` when it needs it.
One session's memory is never in another's prompt.

The prompt is cached per folder and rebuilt (in a thread) only when the
files' ``stat`` values changed. They are looked at again after any tool call
that may have written files (``Workspace.generation``), so a memory edited in
one turn is in the next, and otherwise at most every ``recheck`` seconds (an
edit from outside): a turn in an unchanged workspace costs a dict lookup.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from nanobot.tools.paths import CONTEXT_NAMES, MEMORY_DIR, PathError, Workspace, open_file

MEMORY_FILE = os.path.join(MEMORY_DIR, "MEMORY.md")
MAX_FILE_CHARS = 8000
MAX_SKILLS = 64
MAX_DESCRIPTION_CHARS = 300
CACHED_ROOTS = 256

FILE_TOOLS_NOTE = (
    "You work in a workspace folder: the file tools (read_file, write_file, edit_file, "
    "list_dir) take paths relative to it. Keep long-term memory in memory/MEMORY.md: "
    "edit it to remember what should outlast this conversation (it is this session's own). "
    "AGENTS.md, USER.md and skills/ are the operator's and read-only."
)
SKILLS_NOTE = "Skills you can use (read skills/<name>/SKILL.md with read_file before using one):"

Signature = tuple[Any, ...]


@dataclass(slots=True)
class _Entry:
    listing: tuple[int, int, int] | None  # the skills folder's stat
    names: list[str]  # its skills, listed again only when the folder changed
    signature: Signature
    message: dict[str, Any]
    checked: float  # time.monotonic() of the last look
    generation: int  # the workspace's generation then


class WorkspaceContext:
    """Builds and caches the system message for each workspace folder."""

    def __init__(self, base_prompt: str, ws: Workspace, *, file_tools: bool = True, recheck: float = 1.0) -> None:
        self.ws = ws
        self.recheck = recheck
        self.base = base_prompt + ("\n\n" + FILE_TOOLS_NOTE if file_tools else "")
        self._plain = {"role": "system", "content": self.base}
        self._cache: OrderedDict[str, _Entry] = OrderedDict()

    def _files(self, session_key: str) -> list[tuple[str, str]]:
        """``(heading, absolute path)`` of each context file of this session's prompt."""
        root = self.ws.root_path(session_key)
        return [
            *((name, os.path.join(root, name)) for name in CONTEXT_NAMES),
            (f"{MEMORY_FILE} (the operator's, read-only)", os.path.join(self.ws.base, MEMORY_FILE)),
            (MEMORY_FILE, os.path.join(self.ws.session_path(session_key), MEMORY_FILE)),
        ]

    async def message(self, session_key: str) -> dict[str, Any]:
        # One entry per session (distinct keys have distinct folders): the
        # fresh case is a dict lookup, before any path is worked out.
        key = session_key
        entry = self._cache.get(key)
        now = time.monotonic()
        generation = self.ws.generation  # read before looking, so a write meanwhile means another look
        if entry is not None and entry.generation == generation and now - entry.checked < self.recheck:
            return entry.message
        root = self.ws.root_path(session_key)
        files = self._files(session_key)
        skills_dir = os.path.join(root, "skills")
        listing = _stat(skills_dir)
        if entry is not None and entry.listing == listing:
            names = entry.names
        else:
            names = _skill_names(skills_dir) if listing is not None else []
        signature = (
            *(_stat(path) for _, path in files),
            *(_stat(os.path.join(skills_dir, name, "SKILL.md")) for name in names),
        )
        if entry is not None and entry.signature == signature and entry.names is names:
            entry.checked, entry.generation = now, generation
            self._cache.move_to_end(key)
            return entry.message
        if not any(signature):  # nothing there: the plain prompt, nothing to read
            message = self._plain
        else:
            content = await asyncio.to_thread(self._build, session_key, files, names)
            message = {"role": "system", "content": content}
        self._cache[key] = _Entry(listing, names, signature, message, now, generation)
        if len(self._cache) > CACHED_ROOTS:
            self._cache.popitem(last=False)
        return message

    def _build(self, session_key: str, files: list[tuple[str, str]], names: list[str]) -> str:
        parts = [self.base]
        for heading, path in files:
            text = self._read(path, MAX_FILE_CHARS)
            if text and text.strip():
                parts.append(f"## {heading}\n\n{text.strip()}")
        skills = []
        root = self.ws.root_path(session_key)
        for name in names:
            text = self._read(os.path.join(root, "skills", name, "SKILL.md"), 4000)
            if text is not None:
                skills.append(f"- {name}: {description(text) or '(no description)'}")
        if skills:
            parts.append(SKILLS_NOTE + "\n" + "\n".join(skills))
        return "\n\n".join(parts)

    def _read(self, path: str, max_chars: int) -> str | None:
        """At most ``max_chars`` of a UTF-8 file (with a note when cut), or None.

        Through the same walk as read_file: a link anywhere on the way (out of
        the folder, to the database), or a FIFO, is not read.
        """
        if os.path.realpath(path) != path:  # a symlink on the way: not followed
            return None
        try:
            fd = open_file(self.ws, path, path)
        except PathError:
            return None
        with os.fdopen(fd, "rb") as f:
            data = f.read(max_chars * 4 + 1)
        text = data.decode("utf-8", "replace")
        if len(text) > max_chars or len(data) > max_chars * 4:
            text = text[:max_chars] + "\n[... cut: the rest is not shown here; read the file with read_file]"
        return text


def _stat(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _skill_names(skills_dir: str) -> list[str]:
    try:
        with os.scandir(skills_dir) as it:
            names = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []
    return names[:MAX_SKILLS]


def description(skill_md: str) -> str:
    """The ``description`` of a SKILL.md front matter (or its first text line)."""
    lines = skill_md.splitlines()
    if lines and lines[0].strip() == "---":
        for line in lines[1:]:
            if line.strip() == "---":
                break
            key, _, value = line.partition(":")
            if key.strip() == "description":
                return value.strip().strip("\"'")[:MAX_DESCRIPTION_CHARS]
        return ""
    for line in lines:
        if line.strip():
            return line.strip().lstrip("# ")[:MAX_DESCRIPTION_CHARS]
    return ""
