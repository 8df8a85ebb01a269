"""A throwaway PostgreSQL cluster in a temporary directory (tests and bench).

``initdb`` and ``pg_ctl`` from the installed server, on a free loopback port,
with the unix socket inside the directory. PostgreSQL refuses to run as
root, so as root the cluster runs as the ``postgres`` system user (which
Debian's package creates) through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from nanobot.testing.process import free_port

USER = "nanobot"


def bin_dir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``, or None when not installed."""
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True)
        candidate = Path(out.stdout.strip())
        if out.returncode == 0 and (candidate / "initdb").exists():
            return candidate
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3]))
    if versions:
        return Path(versions[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresCluster:
    """``start()`` it, make databases with :meth:`new_database`, ``stop()`` it."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="nanobot-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self._runas: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._runas = ["runuser", "-u", "postgres", "--"]

    @classmethod
    def start(cls) -> PostgresCluster:
        bindir = bin_dir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        cluster = cls(bindir)
        cluster._run("initdb", "-D", str(cluster.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        cluster.start_server()
        return cluster

    def _run(self, tool: str, *args: str) -> str:
        out = subprocess.run(
            [*self._runas, str(self.bindir / tool), *args], capture_output=True, text=True, timeout=120
        )
        if out.returncode != 0:
            raise RuntimeError(f"{tool} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout

    def start_server(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off -c max_connections=300 -c shared_buffers=64MB"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "server.log"), "-w", "start")

    def stop_server(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._run(
            "psql",
            "-X",
            "-A",
            "-t",
            "-q",
            "-h",
            str(self.dir),
            "-p",
            str(self.port),
            "-U",
            USER,
            "-d",
            database,
            "-c",
            sql,
        )

    def new_database(self) -> str:
        """A fresh empty database; returns its URL."""
        name = "t_" + uuid.uuid4().hex[:12]
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def server_pids(self) -> list[int]:
        """The postmaster and its backends (for CPU accounting)."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        return [pid, *(int(p) for p in out.stdout.split())]

    def stop(self) -> None:
        try:
            self.stop_server("immediate")
        except RuntimeError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
