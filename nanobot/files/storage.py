"""Uploads on disk: their names (one shown to the LLM, one used on disk) and their removal.

The client's filename is untrusted twice over: in the prompt it could forge a
``[/file]`` boundary or a fake line, on disk it could climb out of the media
directory or overwrite another upload. Each use gets its own sanitiser.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Iterable
from pathlib import Path

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


def save_upload(media_dir: Path, filename: str, data: bytes) -> Path:
    """Write ``data`` under ``media_dir`` as ``<uuid4 hex>-<safe basename>``, atomically.

    The bytes go to a temporary file in the same directory, which is then
    renamed into place, so a reader never sees a half-written upload and a
    failure leaves nothing behind. The random prefix makes every name unique,
    and the basename can contain no separator, so the result is always a
    direct child of ``media_dir``. Files are created with mode 0o600.
    """
    media_dir = Path(media_dir)
    media_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = media_dir / f"{uuid.uuid4().hex}-{_safe_basename(filename)}"
    # mkstemp creates the file 0o600 and O_EXCL, whatever the umask.
    fd, tmp_name = tempfile.mkstemp(dir=media_dir, prefix=".upload-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
        os.replace(tmp_name, target)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return target


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


def remove_expired(media_dir: Path, max_age: float, limit: int, now: float | None = None) -> tuple[int, bool]:
    """Delete up to ``limit`` uploads last modified more than ``max_age`` seconds ago.

    Blocking (a directory scan): run it off the event loop. Entries are
    streamed, so memory stays flat however many files there are. Returns
    how many went, and whether the limit cut the pass short.
    """
    cutoff = (time.time() if now is None else now) - max_age
    removed = 0
    try:
        entries = os.scandir(media_dir)
    except FileNotFoundError:
        return 0, False
    with entries:
        for entry in entries:
            try:
                if not entry.is_file(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                    continue
                os.unlink(entry.path)
            except FileNotFoundError:  # another worker's pass took it first
                continue
            removed += 1
            if removed >= limit:
                return removed, True
    return removed, False
