"""Files and directories only their owner can read, whatever the umask.

The workspace holds every session's history and every upload; the database
files hold the same. Modes are set explicitly (not left to the umask), and
tightened on start-up for files an older version created world-readable.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("nanobot.storage")

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) if needed, and make it 0700."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _tighten(path, DIR_MODE)


def private_file(path: Path) -> None:
    """Create ``path`` empty if it is missing, and make it 0600, before anything is written to it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW, FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def tighten_if_present(path: Path) -> None:
    """Make an existing file 0600 (one an older version left readable)."""
    try:
        _tighten(path, FILE_MODE)
    except FileNotFoundError:
        pass


def _tighten(path: Path, mode: int) -> None:
    try:
        if stat.S_IMODE(os.stat(path).st_mode) != mode:
            os.chmod(path, mode)
    except PermissionError as exc:  # another user's directory: say so, serve anyway
        log.warning("cannot make %s private (mode %o): %s", path, mode, exc.strerror)
