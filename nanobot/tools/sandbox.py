"""What an ``exec`` command sees and what bounds it: bwrap binds, rlimits, a pids cgroup.

The sandbox is built from nothing (bwrap's root is an empty tmpfs), not from
a read-only copy of the host: the turn's folder read-write, a minimal system
read-only (``/usr``, ``/bin``, ``/sbin``, ``/lib*`` and a list of ``/etc``
files), a fresh ``/proc``, a minimal ``/dev`` and a private, sized ``/tmp``.
Host homes, ``/root``, ``/run`` (and its sockets), the host's ``/tmp``, the
config file and the server's state are simply not there.

Limits: address space, file size and CPU time are rlimits set by ``ulimit``
just before the command (hard limits: the command cannot raise them). The
process count is an rlimit too, but Linux never applies ``RLIMIT_NPROC`` to
host uid 0, so when the server may create a pids cgroup (root, cgroup v1 or a
delegated v2 tree) each command runs in one of its own with ``pids.max``.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from dataclasses import dataclass

from nanobot.config import ExecToolConfig

log = logging.getLogger("nanobot.tools")

# Top-level system folders; on merged-/usr systems some are symlinks, recreated as such.
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# /etc files commands need (dynamic loader, users, certificates, time zone);
# nothing with secrets (shadow, ssl/private) and nothing of the host's services.
_ETC = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "ca-certificates.conf",
    "nsswitch.conf",
    "passwd",
    "group",
    "localtime",
    "timezone",
    "bash.bashrc",
    "profile",
    "inputrc",
    "mime.types",
    "magic",
    "os-release",
    "protocols",
    "services",
)
_ETC_NETWORK = ("resolv.conf", "hosts", "host.conf", "gai.conf")


def system_binds(network: bool) -> list[str]:
    """bwrap arguments for the read-only system part of the sandbox."""
    args: list[str] = []
    for path in _SYSTEM:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for name in _ETC + (_ETC_NETWORK if network else ()):
        # ro-bind-try follows a symlinked source (localtime, resolv.conf) and binds its content.
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return args


def ulimit_prefix(cfg: ExecToolConfig, nproc: bool = True) -> str:
    """A shell prefix setting the command's hard and soft rlimits (0 in a key: no limit).

    ``RLIMIT_NPROC`` counts every process of the real uid in the user
    namespace: inside bwrap's own namespace that is the command's; without a
    sandbox it would be the server user's, so it is left out there.
    """
    parts = []
    if cfg.max_memory_mb > 0:
        parts.append(f"-v {cfg.max_memory_mb * 1024}")  # KiB
    if cfg.max_file_mb > 0:
        parts.append(f"-f {cfg.max_file_mb * 1024}")  # 1024-byte blocks in bash
    if cfg.cpu_seconds > 0:
        parts.append(f"-t {cfg.cpu_seconds}")
    if cfg.max_processes > 0 and nproc:
        parts.append(f"-u {cfg.max_processes}")
    return f"ulimit {' '.join(parts)} || exit 125; " if parts else ""


def limited_command(cfg: ExecToolConfig, command: str, nproc: bool = True) -> list[str]:
    """``bash -c`` running ``command`` under the configured rlimits."""
    return ["bash", "-c", ulimit_prefix(cfg, nproc) + 'exec bash -c "$1"', "nanobot-exec", command]


@dataclass
class PidsCgroup:
    """A pids cgroup of one command: ``pids.max`` bounds it, ``kill`` ends every process in it."""

    path: str

    @classmethod
    def create(cls, max_processes: int) -> PidsCgroup | None:
        parent = _pids_parent()
        if parent is None or max_processes <= 0:
            return None
        path = os.path.join(parent, f"nanobot-exec-{os.getpid()}-{os.urandom(4).hex()}")
        try:
            os.mkdir(path)
            with open(os.path.join(path, "pids.max"), "w") as f:
                f.write(str(max_processes))
        except OSError as exc:
            log.debug("exec: no pids cgroup (%s); the process limit is an rlimit only", exc)
            _rmdir(path)
            return None
        return cls(path)

    def enter_prefix(self) -> list[str]:
        """argv that moves itself into the cgroup, then execs the rest (no race with the command's forks)."""
        return ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', self.path]

    def kill(self) -> None:
        """SIGKILL every process left in the cgroup, then remove it."""
        try:
            with open(os.path.join(self.path, "cgroup.kill"), "w") as f:  # cgroup v2
                f.write("1")
        except OSError:
            for _ in range(100):  # v1: kill what is there until nothing forks any more
                pids = _read_pids(self.path)
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, 9)
                    except OSError:
                        pass
        _rmdir(self.path)


def _pids_parent() -> str | None:
    """A writable pids cgroup folder of this process, or None."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if "pids" in controllers.split(","):  # cgroup v1
            base = os.path.join("/sys/fs/cgroup/pids", rel.lstrip("/"))
            if os.access(base, os.W_OK):
                return base
    for line in lines:
        if line.startswith("0::"):  # cgroup v2: only a tree delegated with pids enabled
            base = os.path.join("/sys/fs/cgroup", line[3:].lstrip("/"))
            try:
                with open(os.path.join(base, "cgroup.subtree_control")) as f:
                    enabled = f.read().split()
            except OSError:
                return None
            if "pids" in enabled and os.access(base, os.W_OK):
                return base
    return None


def _read_pids(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _rmdir(path: str) -> None:
    for _ in range(50):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:  # processes still leaving
            time.sleep(0.01)
    log.warning("exec: could not remove the cgroup %s", shlex.quote(path))
