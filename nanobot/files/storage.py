"""Uploads on disk: their names (one shown to the LLM, one used on disk) and their removal.

The client's filename is untrusted twice over: in the prompt it could forge a
``[/file]`` boundary or a fake line, on disk it could climb out of the media
directory or overwrite another upload. Each use gets its own sanitiser.
"""

from __future__ import annotations

import os
import re
import stat
import time
import unicodedata
import uuid
from collections.abc import Iterable
from pathlib import Path

from nanobot.storage.safedir import SafeDir

# O_EXCL: a fresh file, never one already there; O_NOFOLLOW: never a link.
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

MAX_DISPLAY_CHARS = 255
MAX_BASENAME_CHARS = 100
_FALLBACK_BASENAME = "upload"
_NOT_PORTABLE = re.compile(r"[^A-Za-z0-9._-]+")
# Bidirectional overrides and marks can make a name read differently than it is.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def safe_display_name(filename: str | None, default: str) -> str:
    """The name put in ``[file: NAME]``: one line, no brackets, at most 255 chars.

    Brackets, line breaks (CR, LF, U+2028/9, ...), other control characters
    and bidi controls become ``_``; an empty or blank name becomes ``default``.
    """
    if not filename:
        return default
    # Strip first, so surrounding line breaks vanish instead of becoming "_".
    cleaned = "".join(_display_char(c) for c in filename.strip()).strip()
    return cleaned[:MAX_DISPLAY_CHARS] or default


def _display_char(char: str) -> str:
    if char in "[]" or char in _BIDI or unicodedata.category(char) in ("Cc", "Zl", "Zp"):
        return "_"
    return char


def save_upload(media_dir: SafeDir | Path, filename: str, data: bytes) -> Path:
    """Write ``data`` under ``media_dir`` as ``<uuid4 hex>-<safe basename>``, atomically.

    The bytes go to a temporary file in the same directory, which is then
    renamed into place, so a reader never sees a half-written upload and a
    failure leaves nothing behind. The random prefix makes every name unique,
    and the basename can contain no separator, so the result is always a
    direct child of ``media_dir``. Files are created with mode 0o600.

    Everything happens relative to the folder's descriptor, opened without
    following a link (:class:`SafeDir`): a folder swapped for a link to a host
    directory is refused (:class:`UnsafeDir`), never written through.
    """
    folder = _as_safe(media_dir)
    name = f"{uuid.uuid4().hex}-{_safe_basename(filename)}"
    tmp = f".upload-{uuid.uuid4().hex}.part"
    dir_fd = folder.open()
    try:
        fd = os.open(tmp, _NEW_FILE, 0o600, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
            raise
    finally:
        os.close(dir_fd)
    return folder.path / name


def _as_safe(folder: SafeDir | Path) -> SafeDir:
    return folder if isinstance(folder, SafeDir) else SafeDir(Path(folder))


def _safe_basename(filename: str | None) -> str:
    """The last path component, reduced to ``[A-Za-z0-9._-]``, <= 100 chars, no leading dot."""
    name = (filename or "").replace("\x00", "")
    # Both separators: a Windows client's "C:\\x\\y.pdf" is "y.pdf" too.
    name = re.split(r"[/\\]", name)[-1]
    name = _NOT_PORTABLE.sub("_", name).lstrip(".")
    if len(name) > MAX_BASENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            # Keep the extension: it is what tells a human what the file is.
            name = f"{stem[: MAX_BASENAME_CHARS - len(ext) - 1]}.{ext}"
        else:
            name = name[:MAX_BASENAME_CHARS]
    return name.rstrip("_") or _FALLBACK_BASENAME


def remove_uploads(paths: Iterable[Path | str]) -> None:
    """Delete the uploads of a request that failed (a few unlinks: fine on the loop)."""
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def remove_expired(media_dir: SafeDir | Path, max_age: float, limit: int, now: float | None = None) -> tuple[int, bool]:
    """Delete up to ``limit`` uploads last modified more than ``max_age`` seconds ago.

    Blocking (a directory scan): run it off the event loop. Entries are
    streamed, so memory stays flat however many files there are. Returns
    how many went, and whether the limit cut the pass short. The scan and
    every unlink go through the folder's descriptor (no link followed, see
    :func:`save_upload`); only regular files are removed.
    """
    cutoff = (time.time() if now is None else now) - max_age
    removed = 0
    try:
        dir_fd = _as_safe(media_dir).open(create=False)
    except FileNotFoundError:
        return 0, False
    try:
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                try:
                    info = os.stat(entry.name, dir_fd=dir_fd, follow_symlinks=False)
                    if not stat.S_ISREG(info.st_mode) or info.st_mtime >= cutoff:
                        continue
                    os.unlink(entry.name, dir_fd=dir_fd)
                except FileNotFoundError:  # another worker's pass took it first
                    continue
                removed += 1
                if removed >= limit:
                    return removed, True
    finally:
        os.close(dir_fd)
    return removed, False
