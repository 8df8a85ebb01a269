"""The ``exec`` tool: ``bash -c`` in a bubblewrap sandbox, off by default.

The sandbox (``tools.exec.sandbox: "bwrap"``, see :mod:`nanobot.tools.sandbox`):
the turn's folder read-write (with the database files inside it masked), a
minimal read-only system, a private sized ``/tmp``, no network unless
``tools.exec.network``, its own PID, IPC and UTS namespaces, no capabilities
(the server may run as root), rlimits, and an environment with nothing of
the server's (no provider keys). The command runs in a new session; at the
timeout or when the turn is cancelled the whole process group is killed, and
with it bwrap, whose death takes every process of the sandbox's PID namespace
along. Without a sandbox a subreaper (:mod:`nanobot.tools.reaper`) does that.

Slots are shared fairly: at most :data:`MAX_PROCESSES` commands server-wide
and ``maxPerSession`` of one session, so one session cannot make another wait.

Output (stdout and stderr together) is read into a bounded buffer that keeps
only the tail, so a command that prints gigabytes costs a fixed amount of
memory. A non-zero exit is a normal result carrying its exit code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
from typing import Any

from nanobot.agent.tools import Tool, TurnScope, fail, function_schema
from nanobot.config import Config, ConfigError, ExecToolConfig
from nanobot.tools.base import BuiltinTool, ToolDeps
from nanobot.tools.paths import PROTECTED_NAMES, PathError, Workspace
from nanobot.tools.sandbox import PidsCgroup, limited_command, system_binds

log = logging.getLogger("nanobot.tools")

INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap; "
    "Arch: pacman -S bubblewrap; Alpine: apk add bubblewrap)"
)
MAX_COMMAND_CHARS = 64 * 1024
MAX_PROCESSES = 16  # exec commands running at once, server-wide; more wait their turn
_REAPER = os.path.join(os.path.dirname(__file__), "reaper.py")
# Output is read in large pieces: a command that floods its pipe then costs
# the event loop a few wake-ups per MB instead of one per 64 KB.
_READ_BYTES = 1024 * 1024
# Commands run at a lower CPU priority than the server, so a busy command
# cannot starve the event loop (and /health) of the machine's cores.
NICE = 10
_SANDBOX_ENV = {"LANG": "C.UTF-8", "TERM": "dumb", "TMPDIR": "/tmp"}


def check_exec(config: Config) -> None:
    """Startup check: an enabled bwrap sandbox must exist and work (else exit 2)."""
    cfg = config.tools.exec
    if not cfg.enabled:
        return
    if cfg.sandbox == "none":
        log.warning(
            'tools.exec runs commands WITHOUT a sandbox (tools.exec.sandbox is "none"): '
            "anyone who can reach this API can run commands as this user"
        )
        return
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise ConfigError(f'tools.exec.sandbox: "bwrap" is chosen but bwrap is not installed; {INSTALL_HINT}')
    # The probe builds the same kind of sandbox a command gets (an old bwrap without --size fails here).
    probe = [bwrap, *system_binds(cfg.network), "--proc", "/proc", "--dev", "/dev", "--size", "1048576"]
    probe += ["--tmpfs", "/tmp", "--remount-ro", "/", *_namespace_args(cfg), "--", "true"]
    try:
        done = subprocess.run(probe, capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"tools.exec.sandbox: bwrap could not be started: {exc}") from None
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip()[:300]
        raise ConfigError(f"tools.exec.sandbox: bwrap cannot create a sandbox on this machine: {why}")


def _namespace_args(cfg: ExecToolConfig) -> list[str]:
    args = [
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
    ]
    if not cfg.network:
        args.append("--unshare-net")
    return args


class ExecTool(BuiltinTool):
    name = "exec"
    schema = function_schema(
        name,
        "Run a shell command (bash -c) in a sandbox and return its exit code and output "
        "(the tail when long). Only the workspace (writable) and the system's programs "
        "(read-only) are visible; /tmp is small, private and emptied after each command.",
        {
            "command": {"type": "string", "description": "The shell command."},
            "working_dir": {"type": "string", "description": "Folder to run in, relative to the workspace."},
        },
        ["command"],
    )

    def __init__(self, ws: Workspace, cfg: ExecToolConfig, max_output_chars: int) -> None:
        self.ws = ws
        self.cfg = cfg
        self.bwrap = shutil.which("bwrap") if cfg.sandbox == "bwrap" else None
        self.nice = shutil.which("nice")
        # The command's own timeout answers with its output; the registry's is a backstop.
        self.timeout = cfg.timeout + 10
        self.max_output_chars = max(200, max_output_chars - 200)
        self._slots: asyncio.Semaphore | None = None
        self._sessions: dict[str, _SessionSlots] = {}

    @classmethod
    def enabled(cls, config: Config) -> bool:
        return config.tools.exec.enabled

    @classmethod
    def check(cls, config: Config) -> None:
        check_exec(config)

    @classmethod
    def build(cls, deps: ToolDeps) -> Tool:
        tools = deps.config.tools
        return cls(deps.workspace, tools.exec, tools.max_result_chars)

    async def run(self, args: dict[str, Any], scope: TurnScope) -> str:
        command = args.get("command")
        if not isinstance(command, str) or not command.strip():
            return fail("Error: 'command' must be a non-empty string.")
        if "\x00" in command:
            return fail("Error: 'command' contains a NUL byte.")
        if len(command) > MAX_COMMAND_CHARS:
            return fail(f"Error: 'command' is longer than {MAX_COMMAND_CHARS} characters.")
        if self.cfg.sandbox == "bwrap" and self.bwrap is None:
            # Fail closed: an embedder that skipped the startup check gets an error, never bash unsandboxed.
            self.bwrap = shutil.which("bwrap")
            if self.bwrap is None:
                return fail(
                    f'Error: exec is configured with sandbox "bwrap" but bwrap is not installed; {INSTALL_HINT}.'
                )
        try:
            root, cwd = await asyncio.to_thread(self._folders, args.get("working_dir"), scope.session_key)
        except PathError as exc:
            return fail(f"Error: {exc}")
        if self._slots is None:
            self._slots = asyncio.Semaphore(MAX_PROCESSES)
        mine = self._sessions.setdefault(scope.session_key, _SessionSlots(self.cfg.max_per_session))
        mine.users += 1
        try:
            async with mine.gate, self._slots:  # the session's share first, then a server-wide slot
                try:
                    result = await self._run(self._argv(command, root, cwd), root, cwd)
                finally:
                    self.ws.changed()  # the command may have written anything in the workspace
        finally:
            mine.users -= 1
            if mine.users == 0:
                self._sessions.pop(scope.session_key, None)
        try:
            why = await asyncio.to_thread(self.ws.over_quota, root)
        except PathError as exc:
            why = str(exc)
        return result if why is None else f"{result}\n[Error: {why}]"

    def _folders(self, working_dir: object, key: str) -> tuple[str, str]:
        root = self.ws.root_for(key)
        if os.path.realpath(root) != root:
            raise PathError("the session folder is not a plain folder; exec refuses to run there.")
        if working_dir is None or working_dir == "":
            return root, root
        cwd = self.ws.resolve(working_dir, key, name="working_dir")
        if not os.path.isdir(cwd):
            raise PathError(f"working_dir '{working_dir}' is not an existing folder.")
        return root, cwd

    def _argv(self, command: str, root: str, cwd: str) -> list[str]:
        if self.bwrap is None:
            return [sys.executable, "-I", "-S", _REAPER, *limited_command(self.cfg, command, nproc=False)]
        argv = [self.bwrap, *system_binds(self.cfg.network), "--dev", "/dev", "--proc", "/proc"]
        if self.cfg.tmp_size_mb > 0:
            argv += ["--size", str(self.cfg.tmp_size_mb * 1024 * 1024)]
        argv += ["--tmpfs", "/tmp", "--bind", root, root]
        for name in PROTECTED_NAMES:  # present only in the shared workspace root
            path = os.path.join(root, name)
            if os.path.lexists(path):
                argv += ["--ro-bind", "/dev/null", path]
        argv += ["--remount-ro", "/"]  # the sandbox's own root (the parents of the binds) is read-only too
        argv += _namespace_args(self.cfg)
        argv += ["--clearenv", "--setenv", "PATH", os.environ.get("PATH", "/usr/bin:/bin"), "--setenv", "HOME", root]
        for key, value in _SANDBOX_ENV.items():
            argv += ["--setenv", key, value]
        return argv + ["--chdir", cwd, "--", *limited_command(self.cfg, command)]

    async def _run(self, argv: list[str], root: str, cwd: str) -> str:
        # Unsandboxed commands get the same clean environment (no provider keys).
        env = None if self.bwrap else {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": root, **_SANDBOX_ENV}
        if self.nice:
            argv = [self.nice, "-n", str(NICE), *argv]
        cgroup = await asyncio.to_thread(PidsCgroup.create, self.cfg.max_processes)
        if cgroup is not None:
            argv = [*cgroup.enter_prefix(), *argv]
        try:
            return await self._watch(argv, cwd, env)
        finally:
            if cgroup is not None:  # whatever is left in it (nothing, normally) goes now
                await asyncio.to_thread(cgroup.kill)

    async def _watch(self, argv: list[str], cwd: str, env: dict[str, str] | None) -> str:
        reaper = self.bwrap is None
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
                limit=_READ_BYTES,
            )
        except OSError as exc:
            return fail(f"Error: the command could not be started: {exc.strerror or exc}.")
        tail = _Tail(self.max_output_chars * 4)
        try:
            async with asyncio.timeout(self.cfg.timeout):
                assert proc.stdout is not None
                while chunk := await proc.stdout.read(_READ_BYTES):
                    tail.add(chunk)
                code = await proc.wait()
        except TimeoutError:
            await _end(proc, reaper)
            return fail(
                f"Error: the command took longer than {self.cfg.timeout:g} s and was killed.\n"
                + tail.text(self.max_output_chars)
            )
        finally:
            if proc.returncode is None:  # cancelled: the whole tree goes
                await _end(proc, reaper)
        if code < 0:
            status = f"Killed by signal {-code}"
        else:
            status = f"Exit code: {code}"
        return f"{status}\n{tail.text(self.max_output_chars)}"


class _SessionSlots:
    """One session's share of the exec slots, and how many of its calls hold or wait for one."""

    def __init__(self, size: int) -> None:
        self.gate = asyncio.Semaphore(size)
        self.users = 0


class _Tail:
    """The last ``keep`` bytes of a stream, and how many came before them."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.buf = bytearray()
        self.total = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if len(chunk) >= self.keep:  # a piece that replaces all that came before
            self.buf = bytearray(chunk[-self.keep :])
            return
        self.buf += chunk
        if len(self.buf) > 2 * self.keep:  # trim now and then, not on every chunk
            del self.buf[: len(self.buf) - self.keep]

    def text(self, max_chars: int) -> str:
        text = bytes(self.buf[-self.keep :]).decode("utf-8", "replace")
        if len(text) > max_chars:
            text = text[-max_chars:]
        cut = self.total - len(text.encode("utf-8", "replace"))
        if not text:
            return "(no output)"
        if cut > 0:
            return f"[... the first {cut} bytes of output were cut; the end follows]\n{text}"
        return text


async def _end(proc: asyncio.subprocess.Process, reaper: bool) -> None:
    """SIGKILL the command's process group (the command and everything it started), then reap it.

    Without a sandbox the reaper is asked first (SIGTERM): it kills every
    descendant, also those that left the process group with ``setsid``.
    """
    if reaper:
        try:
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(5):
                await proc.wait()
        except (ProcessLookupError, TimeoutError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        async with asyncio.timeout(5):
            await proc.wait()
    except TimeoutError:  # cannot happen after SIGKILL short of a stuck kernel; never hang on it
        log.warning("exec: process %d did not end after SIGKILL", proc.pid)
