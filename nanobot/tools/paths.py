"""Where the file tools may go, and opening files there without races.

A path is resolved (symlinks followed) and then checked: with
``restrictToWorkspace`` it must lie inside the turn's root. The check and the
use must see the same file, so files are then opened by walking the resolved
path from ``/`` one component at a time with ``O_NOFOLLOW``: a symlink that
appeared after the check (another tool call, an ``exec`` command) makes the
walk fail instead of leading out. The server's own state (the database and
its lock) is refused by name and, after opening, by identity (device and
inode), so a hard link to it does not help either.

Everything here does blocking I/O: call it in a thread.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nanobot.agent.tools import past_deadline

PROTECTED_NAMES = ("nanobot.db", "nanobot.db-wal", "nanobot.db-shm", "sessions.lock")
SESSIONS_DIR = "sessions"
MEMORY_DIR = "memory"
# The operator's context files (relative to a context folder): read into the
# system prompt, so a tool write there would steer every later turn.
CONTEXT_NAMES = ("AGENTS.md", "USER.md")
SKILLS_DIR = "skills"
MAX_PATH_CHARS = 4096
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class PathError(Exception):
    """A refusal or failure that becomes the tool's ``Error: ...`` result."""


def safe_name(session_key: str) -> str:
    """A folder name for a session key: readable, and distinct for distinct keys."""
    digest = hashlib.sha256(session_key.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{_UNSAFE.sub('_', session_key)[:64]}-{digest}"


class Workspace:
    """The folders file tools and ``exec`` work in, and the files they never touch."""

    def __init__(
        self,
        root: Path,
        scope: str = "shared",
        restrict: bool = True,
        quota_bytes: int = 0,
        *,
        context_writable: bool = False,
    ) -> None:
        self.base = os.path.realpath(root)
        self.scope = scope
        self.restrict = restrict
        self.quota_bytes = quota_bytes  # what one turn's folder may hold; 0: no quota
        self.context_writable = context_writable
        self._sessions = os.path.join(self.base, SESSIONS_DIR)
        self._protected = tuple(os.path.join(self.base, n) for n in PROTECTED_NAMES)
        # Bumped by every tool that may have changed files, so that caches of
        # what the files say (the workspace context) look again.
        self.generation = 0
        self._base_fd: int | None = None  # the workspace folder, opened once: walks start there
        self._lock = threading.Lock()

    def changed(self) -> None:
        self.generation += 1

    def session_path(self, session_key: str) -> str:
        """The session's own folder (its memory in every scope; its root with scope "session")."""
        return os.path.join(self._sessions, safe_name(session_key or "default"))

    def root_path(self, session_key: str) -> str:
        """The turn's root folder (which may not exist yet)."""
        if self.scope != "session":
            return self.base
        return self.session_path(session_key)

    def root_for(self, session_key: str) -> str:
        """The turn's root folder, created on first use."""
        root = self.root_path(session_key)
        if root is not self.base:
            os.makedirs(root, mode=0o700, exist_ok=True)
        return root

    def quota_root(self, real: str) -> str:
        """The turn folder whose quota a write to ``real`` counts against."""
        sessions = self._sessions + os.sep
        if self.scope == "session" and real.startswith(sessions):
            return sessions + real[len(sessions) :].split(os.sep, 1)[0]
        return self.base

    def over_quota(self, root: str, adding: int = 0) -> str | None:
        """Why ``root`` plus ``adding`` bytes is over the quota, or None."""
        if self.quota_bytes <= 0:
            return None
        # The server's own files (database, uploads) are its state, not the agent's writes.
        used = tree_bytes(root, skip={*self._protected, os.path.join(self.base, "media", "api")})
        if used + adding <= self.quota_bytes:
            return None
        mb = 1024 * 1024
        return (
            f"the workspace quota is exceeded: the folder holds {used / mb:.1f} MB"
            + (f" and this adds {adding / mb:.1f} MB" if adding > 0 else "")
            + f"; at most {self.quota_bytes / mb:g} MB (tools.workspaceQuotaMb). Delete files to make room."
        )

    def resolve(self, raw: object, session_key: str, *, name: str = "path", write: bool = False) -> str:
        """The absolute, symlink-free path ``raw`` names, or PathError saying why not.

        ``memory/...`` is the session's own memory folder in every scope, so
        one session's memory never reaches another's prompt. Other sessions'
        folders are refused; with ``write``, so are the operator's context files.
        """
        if not isinstance(raw, str):
            raise PathError(f"'{name}' must be a string.")
        if not raw:
            raise PathError(f"'{name}' must not be empty.")
        if "\x00" in raw:
            raise PathError(f"'{name}' contains a NUL byte.")
        if len(raw) > MAX_PATH_CHARS:
            raise PathError(f"'{name}' is longer than {MAX_PATH_CHARS} characters.")
        root = self.root_for(session_key)
        own = self.session_path(session_key)
        joined = os.path.normpath(os.path.join(root, raw))
        if self.scope != "session" and _inside(joined, os.path.join(root, MEMORY_DIR)):
            # The agent's memory lives in its session's folder (created on first use).
            os.makedirs(own, mode=0o700, exist_ok=True)
            joined = os.path.join(own, os.path.relpath(joined, root))
        real = os.path.realpath(joined)
        if self.restrict and not _inside(real, root):
            limit = "the session folder" if self.scope == "session" else "workspace"
            raise PathError(f"'{raw}' is outside the workspace ({limit} is the limit).")
        if real in self._protected:
            raise PathError(f"'{raw}' is the server's own database; tools cannot read or write it.")
        if _inside(real, self._sessions) and not _inside(real, own):
            raise PathError(f"'{raw}' is in another session's folder; a session's tools see only its own.")
        if write and not self.context_writable and self._is_context(real, root):
            raise PathError(
                f"'{raw}' is an operator context file (AGENTS.md, USER.md, skills/, the workspace's "
                "memory/MEMORY.md): read-only to tools unless tools.files.contextWritable is true. "
                "Keep your own notes in memory/MEMORY.md."
            )
        return real

    def _is_context(self, real: str, root: str) -> bool:
        """``real`` is a context file of the workspace or of the turn's root folder."""
        if real == os.path.join(self.base, MEMORY_DIR, "MEMORY.md"):
            return True
        for folder in {self.base, root}:
            if real in (os.path.join(folder, n) for n in CONTEXT_NAMES) or _inside(
                real, os.path.join(folder, SKILLS_DIR)
            ):
                return True
        return False

    def check_not_protected(self, fd: int, shown: str) -> None:
        """Refuse an open file that is one of the protected files under another name."""
        st = os.fstat(fd)
        if st.st_nlink < 2:  # its only name was checked already: no other name leads here
            return
        for path in self._protected:
            try:
                other = os.stat(path)
            except OSError:
                continue
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                raise PathError(f"'{shown}' is the server's own database; tools cannot read or write it.")

    @contextmanager
    def open_dir(self, real_dir: str, *, create: bool = False) -> Iterator[int]:
        """A descriptor of ``real_dir``, reached without following any symlink.

        Inside the workspace the walk starts at the workspace folder (opened
        once; it is the trusted start, as it is for ``realpath``), else at ``/``.
        """
        if real_dir == self.base or real_dir.startswith(self.base + os.sep):
            with self._lock:  # walks run in several threads; open it once
                if self._base_fd is None:
                    self._base_fd = os.open(self.base, os.O_RDONLY | os.O_DIRECTORY)
            fd, rest = self._base_fd, real_dir[len(self.base) :]
        else:
            fd, rest = os.open("/", os.O_RDONLY | os.O_DIRECTORY), real_dir
        try:
            for part in [p for p in rest.split(os.sep) if p]:
                if create:
                    try:
                        os.mkdir(part, 0o700, dir_fd=fd)
                    except FileExistsError:
                        pass
                try:
                    nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    raise os_error(exc, real_dir) from None
                if fd != self._base_fd:
                    os.close(fd)
                fd = nxt
            yield fd
        finally:
            if fd != self._base_fd:
                os.close(fd)


def tree_bytes(root: str, skip: set[str] | frozenset[str] = frozenset()) -> int:
    """Bytes of the regular files under ``root`` but ``skip`` (links not followed; each inode once)."""
    total, seen = 0, set()
    stack = [root]
    while stack:
        if past_deadline():
            raise PathError("measuring the workspace for its quota took longer than the tool timeout.")
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    if entry.path in skip:
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
                    elif stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                        seen.add((st.st_dev, st.st_ino))
                        total += max(st.st_size, st.st_blocks * 512)  # sparse files cost what they claim
        except OSError:
            continue
    return total


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder + os.sep)


def os_error(exc: OSError, shown: str) -> PathError:
    """A PathError a model can act on, for an OSError on ``shown``."""
    code = exc.errno
    if code == errno.ENOENT:
        return PathError(f"'{shown}' does not exist.")
    if code in (errno.ELOOP, errno.ENOTDIR):
        return PathError(f"'{shown}': a part of the path is not a folder (or changed into a link while opening).")
    if code == errno.EISDIR:
        return PathError(f"'{shown}' is a folder, not a file.")
    if code in (errno.EACCES, errno.EPERM):
        return PathError(f"permission denied for '{shown}'.")
    if code == errno.ENOSPC:
        return PathError("no space left on the device.")
    if code == errno.ENAMETOOLONG:
        return PathError(f"'{shown}': a name in the path is too long.")
    return PathError(f"'{shown}': {exc.strerror or exc}.")


def open_file(ws: Workspace, real: str, shown: str) -> int:
    """A read-only descriptor of the regular file at ``real`` (symlink-free walk)."""
    with ws.open_dir(os.path.dirname(real)) as dfd:
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer.
            fd = os.open(os.path.basename(real), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
        except OSError as exc:
            raise os_error(exc, shown) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise PathError(f"'{shown}' is a folder, not a file (use list_dir).")
        if not stat.S_ISREG(mode):
            raise PathError(f"'{shown}' is not a regular file.")
        ws.check_not_protected(fd, shown)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_atomic(ws: Workspace, real: str, shown: str, data: bytes) -> None:
    """Replace (or create) ``real`` with ``data``: a temp file in the same folder, then rename.

    Readers see the old or the new content, never a half-written file; a
    symlink at the target is replaced, not followed.
    """
    folder, name = os.path.split(real)
    with ws.open_dir(folder, create=True) as dfd:
        mode = 0o644
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise os_error(exc, shown) from None
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                raise PathError(f"'{shown}' is a folder, not a file.")
            if stat.S_ISREG(st.st_mode):
                mode = stat.S_IMODE(st.st_mode)
        replaced = st.st_size if st is not None and stat.S_ISREG(st.st_mode) else 0
        why = ws.over_quota(ws.quota_root(real), len(data) - replaced) if len(data) > replaced else None
        if why is not None:
            raise PathError(why)
        tmp = f".{name[:200]}.{os.urandom(6).hex()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
        except OSError as exc:
            raise os_error(exc, shown) from None
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            ws.changed()
        except OSError as exc:
            _unlink_quietly(tmp, dfd)
            raise os_error(exc, shown) from None
        except BaseException:
            _unlink_quietly(tmp, dfd)
            raise


def _unlink_quietly(name: str, dfd: int) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError:
        pass
