"""Folders opened without following a link, one component at a time.

The state folder and each folder below it must be a real directory owned by
the server's user. Each component is opened relative to its parent's
descriptor with ``O_NOFOLLOW``, and what is then written or removed is named
relative to the last descriptor, so a folder swapped for a link (or for
someone else's directory) after start-up is refused rather than followed.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeDir(OSError):
    """A folder in the server's own paths is a link, not a directory, or someone else's."""


@dataclass(frozen=True)
class SafeDir:
    """A folder below ``root`` (the state folder), opened without following links."""

    root: Path
    parts: tuple[str, ...] = ()

    @property
    def path(self) -> Path:
        return self.root.joinpath(*self.parts)

    def open(self, create: bool = True) -> int:
        """A descriptor for the folder; each component checked, created 0700 if missing.

        The root's own parents are the operator's and may be links; from
        the root down, nothing is. Raises :class:`UnsafeDir` naming the path,
        FileNotFoundError when missing and ``create`` is false.
        """
        if create:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = _open_checked(str(self.root), None, self.root)
        try:
            for i, part in enumerate(self.parts):
                where = self.root.joinpath(*self.parts[: i + 1])
                if create:
                    try:
                        os.mkdir(part, 0o700, dir_fd=fd)
                    except FileExistsError:
                        pass
                child = _open_checked(part, fd, where)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd


def _open_checked(name: str, dir_fd: int | None, where: Path) -> int:
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        # ELOOP (a link) or ENOTDIR (a file): refuse, never follow.
        raise UnsafeDir(exc.errno, f"{where}: not a real directory (a link or a file), refused") from None
    info = os.fstat(fd)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        os.close(fd)
        raise UnsafeDir(f"{where}: owned by uid {info.st_uid}, not the server's ({os.geteuid()}), refused")
    return fd
